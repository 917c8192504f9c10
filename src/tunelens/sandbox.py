"""Run untrusted Python programs (model-generated solutions) with limits, and judge them by their tests.

Each program runs in its own process and session, in an empty temporary directory removed afterwards, with
stdin closed, output captured to files (a tail is kept), a minimal environment, and resource limits set by a
small trusted wrapper before any untrusted line runs. When the evaluator runs as root, the wrapper also drops to
an unprivileged user id reserved for its worker slot, which makes the process limit bite, keeps the program
away from root's files and processes, and lets every process the program left behind be found and killed by
its user id. A program passes only if the wrapper reports, through a private pipe, a per-run random token that
it sends after the last test ran; an early `sys.exit(0)` or `os._exit(0)` therefore fails.

Each program also gets a network namespace of its own, so it reaches no network, not even the evaluator's
loopback: through `bwrap` (bubblewrap) where it works, which adds read-only system directories and a private
/tmp, else through util-linux `unshare`. Without the uid drop, the wrapper also gives the program a pid
namespace of its own, so it cannot signal the evaluator (which runs as the same user); its last process ends
with it. Where neither works the sandbox warns once that programs can use the network.

What this does not do (see docs/sandbox.md): without filesystem namespaces a program can read every file its
user can read; the verdict token lives in the program's own interpreter, so code that deliberately inspects
the interpreter's frames can find it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Isolation = Literal["auto", "none", "bwrap", "unshare"]
SANDBOX_UID_BASE = 61000  # one unprivileged uid per worker slot when the evaluator is root
BWRAP_ARGS = ("--ro-bind", "/", "/", "--tmpfs", "/tmp", "--dev", "/dev", "--proc", "/proc", "--unshare-net",
              "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent")
UNSHARE_ARGS = {True: ("--net",),  # with the uid drop: the program cannot signal the evaluator anyway
                False: ("--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child")}


@dataclass(frozen=True)
class Limits:
    """Per-program limits; each one is enforced by the kernel (rlimits) or by the evaluator (wall clock)."""

    timeout_s: float = 10.0  # wall clock, then the whole process group (and any escapee) is killed
    cpu_s: int | None = None  # CPU seconds (RLIMIT_CPU): SIGXCPU; None = one second above the wall timeout
    memory_bytes: int = 1 << 30  # address space (RLIMIT_AS): MemoryError
    file_size_bytes: int = 16 << 20  # largest file it may write, captured output included (RLIMIT_FSIZE)
    n_processes: int = 32  # processes and threads it may add (RLIMIT_NPROC; enforced for non-root users)
    n_open_files: int = 64  # file descriptors (RLIMIT_NOFILE)
    output_tail_bytes: int = 4096  # how much of the end of stdout/stderr is kept in the result

    @property
    def cpu_limit_s(self) -> int:
        """The CPU limit in force. Above the wall timeout by default, so one busy thread always ends as a timeout
        (CPU time never runs ahead of wall time on one thread); only many busy threads can reach it first."""
        return self.cpu_s if self.cpu_s is not None else math.ceil(self.timeout_s) + 1


@dataclass(frozen=True)
class Program:
    """`code` runs first (solution, imports, set-up); `tests` runs after it in the same namespace."""

    code: str
    tests: str


@dataclass(frozen=True)
class Result:
    passed: bool
    timed_out: bool
    exit_code: int | None  # negative: killed by that signal
    error: str | None  # None, "syntax", "assertion", "timeout", "memory", "cpu_time", "file_size",
    # "no_verdict" (exited before the tests finished), "killed:SIGNAME", "exit:N", or an exception name
    stderr_tail: str
    seconds: float
    stdout_tail: str = field(default="", repr=False)


# ---------------------------------------------------------------------------------- the trusted wrapper
# Runs in the child before any untrusted code: limits, privilege drop, then code, then tests, then the token.
WRAPPER = r"""
import os, resource, sys
def _sandbox_main(limits, uid):
    cpu, mem, fsize, nproc, nofile = limits
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    if uid >= 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    mine = sum(1 for p in os.listdir("/proc") if p.isdigit() and _owner(p) == os.getuid())
    resource.setrlimit(resource.RLIMIT_NPROC, (mine + nproc, mine + nproc))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    token = os.read(%(nonce_fd)d, 64)
    os.close(%(nonce_fd)d)
    verdict = %(verdict_fd)d
    os.set_inheritable(verdict, False)
    # Everything the wrapper calls after the program ran is bound now: the program shares the builtins and
    # modules, and replacing exec, compile or sys.settrace there must not let the tests be skipped.
    run, write, settrace, setprofile = exec, os.write, sys.settrace, sys.setprofile
    with open("program.py") as handle:
        code = compile(handle.read(), "program.py", "exec")
    with open("tests.py") as handle:
        tests = compile(handle.read(), "tests.py", "exec")
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    run(code, namespace)
    settrace(None)
    setprofile(None)
    run(tests, namespace)
    write(verdict, token)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
def _owner(pid):
    try:
        return os.stat("/proc/" + pid).st_uid
    except OSError:
        return -1
def _init(child):
    # Pid 1 of a new pid namespace ignores signals sent from inside it, so the program runs as its child.
    # The kernel kills whatever is left in the namespace when this exits; death by signal N exits 128 + N.
    os.close(%(nonce_fd)d)
    os.close(%(verdict_fd)d)
    status = os.waitpid(child, 0)[1]
    os._exit(128 + os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status))
child = os.fork() if os.getpid() == 1 else 0
if child:
    _init(child)
_sandbox_main(%(limits)r, %(uid)d)
"""


def minimal_env(workdir: str) -> dict[str, str]:
    """Only what Python needs: no tokens, keys or paths of the caller."""
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8",
            "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1"}


def classify(timed_out: bool, verdict_ok: bool, returncode: int | None, stderr_tail: str) -> str | None:
    """Error kind of a finished program (pure: from what the evaluator observed)."""
    if verdict_ok:
        return None
    if timed_out:
        return "timeout"
    exception = last_exception_name(stderr_tail)
    if exception in ("SyntaxError", "IndentationError", "TabError"):
        return "syntax"
    if exception == "AssertionError":
        return "assertion"
    if exception == "MemoryError":
        return "memory"
    if "File too large" in stderr_tail:  # Python ignores SIGXFSZ, so the size limit surfaces as EFBIG
        return "file_size"
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        return {"SIGXCPU": "cpu_time", "SIGXFSZ": "file_size"}.get(name, f"killed:{name}")
    if exception:
        return exception
    return "no_verdict" if returncode == 0 else f"exit:{returncode}"


def last_exception_name(stderr_tail: str) -> str | None:
    """Exception class of the last traceback in stderr ("ValueError: ..." -> "ValueError")."""
    lines = stderr_tail.strip().splitlines()
    if not any(line.startswith("Traceback (most recent call last)") for line in lines) and not any(
            "Error" in line for line in lines[-1:]):
        return None
    for line in reversed(lines):
        head = line.split(":", 1)[0].strip()
        if head and not line.startswith(" ") and head.replace(".", "").replace("_", "").isalnum():
            return head.rsplit(".", 1)[-1]
    return None


def tail(path: Path, n_bytes: int) -> str:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - n_bytes))
        return handle.read().decode("utf-8", errors="replace")


# ---------------------------------------------------------------------------------------- process care


def _become_subreaper() -> None:
    """Orphans of sandboxed programs get reparented to this process (not init), so they can be found."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _processes() -> list[tuple[int, int, int, int]]:
    """(pid, ppid, session id, uid) of every visible process."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            uid = os.stat(f"/proc/{entry}").st_uid
        except OSError:
            continue
        found.append((int(entry), int(fields[1]), int(fields[3]), uid))
    return found


def _kill_and_reap(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):  # not our child: its own parent (or init) reaps it
            os.waitpid(pid, 0)


def leftover_processes(session_id: int, uid: int | None, running_children: set[int]) -> set[int]:
    """Processes a finished program left behind: its session, its sandbox uid, or orphans reparented to us."""
    me = os.getpid()
    leftovers = set()
    for pid, ppid, sid, owner in _processes():
        if pid == me or pid in running_children:
            continue
        # Without a sandbox uid, a detached escapee is recognised as an orphan reparented to us (subreaper).
        if sid == session_id or (owner == uid if uid is not None else ppid == me):
            leftovers.add(pid)
    return leftovers


# ------------------------------------------------------------------------------------------------ runner


class Sandbox:
    """Runs programs with `limits`, at most `workers` at a time; results come back in input order."""

    def __init__(self, limits: Limits = Limits(), workers: int | None = None, isolation: Isolation = "auto"):
        self.limits = limits
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._slots = list(range(self.workers))
        self._slot_lock = threading.Lock()
        self._running: set[int] = set()  # pids of programs being waited for (guarded by _spawn_lock)
        self._spawn_lock = threading.Lock()
        self.interpreter = sys.executable
        self.drop_privileges = False
        if os.geteuid() == 0:  # run programs as an unprivileged uid, with an interpreter that uid can read
            accessible = readable_interpreter()
            if accessible is not None:
                self.interpreter, self.drop_privileges = accessible, True
        self.isolation, self._namespace_command = resolve_isolation(isolation, self.drop_privileges)
        # bwrap and `unshare --pid --fork` put an init between the evaluator and the program (see `_init`)
        self.use_pid_namespace = self.isolation == "bwrap" or (
            self.isolation == "unshare" and not self.drop_privileges)
        _become_subreaper()

    def run(self, program: Program) -> Result:
        with self._slot_lock:
            slot = self._slots.pop()
        try:
            return self._run_in_slot(program, slot)
        finally:
            with self._slot_lock:
                self._slots.append(slot)

    def run_many(self, programs: Sequence[Program], on_result: Callable[[int, Result], None] | None = None
                 ) -> list[Result]:
        results: list[Result | None] = [None] * len(programs)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(self.run, program): i for i, program in enumerate(programs)}
            for future in as_completed(futures):
                index = futures[future]
                results[index] = future.result()
                if on_result:
                    on_result(index, results[index])
        return results  # type: ignore[return-value]

    def _command(self, workdir: str, uid: int, nonce_fd: int, verdict_fd: int) -> list[str]:
        limits = self.limits
        wrapper = WRAPPER % {"nonce_fd": nonce_fd, "verdict_fd": verdict_fd, "uid": uid, "limits": (
            limits.cpu_limit_s, limits.memory_bytes, limits.file_size_bytes, limits.n_processes, limits.n_open_files)}
        python = [self.interpreter, "-I", "-c", wrapper]
        if self.isolation == "bwrap":
            return [*self._namespace_command, "--bind", workdir, workdir, "--chdir", workdir, *python]
        return [*self._namespace_command, *python]

    def _run_in_slot(self, program: Program, slot: int) -> Result:
        uid = SANDBOX_UID_BASE + slot if self.drop_privileges else -1
        workdir = tempfile.mkdtemp(prefix="tunelens-sandbox-")
        nonce = secrets.token_hex(16).encode()
        start = time.perf_counter()
        try:
            Path(workdir, "program.py").write_text(program.code)
            Path(workdir, "tests.py").write_text(program.tests)
            if uid >= 0:
                for path in [workdir, *(str(p) for p in Path(workdir).iterdir())]:
                    os.chown(path, uid, uid)
            stdout_path, stderr_path = Path(workdir, ".stdout"), Path(workdir, ".stderr")
            verdict, timed_out, returncode = self._execute(workdir, uid, nonce, stdout_path, stderr_path)
            stderr_tail = tail(stderr_path, self.limits.output_tail_bytes)
            stdout_tail = tail(stdout_path, self.limits.output_tail_bytes)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        passed = verdict == nonce and not timed_out
        return Result(passed=passed, timed_out=timed_out, exit_code=returncode,
                      error=classify(timed_out, passed, returncode, stderr_tail), stderr_tail=stderr_tail,
                      seconds=time.perf_counter() - start, stdout_tail=stdout_tail)

    def _execute(self, workdir: str, uid: int, nonce: bytes, stdout_path: Path, stderr_path: Path
                 ) -> tuple[bytes, bool, int | None]:
        nonce_read, nonce_write = os.pipe()
        verdict_read, verdict_write = os.pipe()
        os.write(nonce_write, nonce)
        os.close(nonce_write)
        os.set_blocking(verdict_read, False)
        # The output files are created by the evaluator but written by the program: its file-size limit bounds them.
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            if uid >= 0:
                os.chown(stdout_path, uid, uid)
                os.chown(stderr_path, uid, uid)
            with self._spawn_lock:  # a sweep never runs between a spawn and its registration as running
                process = subprocess.Popen(
                    self._command(workdir, uid, nonce_read, verdict_write), cwd=workdir, env=minimal_env(workdir),
                    stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True, close_fds=True,
                    pass_fds=(nonce_read, verdict_write),
                )
                self._running.add(process.pid)
        os.close(nonce_read)
        os.close(verdict_write)
        timed_out = False
        try:
            process.wait(timeout=self.limits.timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)  # the program's group: children it forked and did not detach
        process.wait()
        with self._spawn_lock:
            self._running.discard(process.pid)
            _kill_and_reap(leftover_processes(process.pid, uid if uid >= 0 else None, self._running))
        verdict = b""
        try:
            verdict = os.read(verdict_read, 64)
        except BlockingIOError:
            pass
        finally:
            os.close(verdict_read)
        returncode = process.returncode
        if self.use_pid_namespace and returncode > 128:  # the namespace's init reports signal N as 128 + N
            returncode = 128 - returncode
        return verdict, timed_out, returncode


@functools.cache
def resolve_isolation(isolation: Isolation, drops_uid: bool) -> tuple[str, tuple[str, ...]]:
    """(mode, command prefix) of the strongest namespace isolation asked for that works here; probed once."""
    if isolation == "none":
        return "none", ()
    for mode in ("bwrap", "unshare") if isolation == "auto" else (isolation,):
        path = shutil.which(mode)
        prefix = (path, *(BWRAP_ARGS if mode == "bwrap" else UNSHARE_ARGS[drops_uid])) if path else ()
        probe = subprocess.run([*prefix, "true"], check=False, capture_output=True, timeout=10) if prefix else None
        if probe is not None and probe.returncode == 0:
            return mode, prefix
    if isolation != "auto":
        from tunelens.config import UsageError

        package = "apt-get install bubblewrap" if isolation == "bwrap" else "util-linux"
        raise UsageError(f"isolation '{isolation}' needs `{isolation}` able to create namespaces here "
                         f"({package}; without root, user namespaces must be allowed)")
    warnings.warn("tunelens.sandbox: neither bwrap nor unshare can create a network namespace here, so "
                  "programs under test can use the network (see docs/sandbox.md)", RuntimeWarning,
                  stacklevel=3)
    return "none", ()


def world_readable(path: str) -> bool:
    """Whether a user with no relation to the file's owner can reach it (every parent directory searchable)."""
    import stat

    current = Path(path).resolve()
    for part in [current, *current.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        needed = stat.S_IXOTH if part.is_dir() else stat.S_IROTH
        if part != current and not mode & stat.S_IXOTH:
            return False
        if part == current and not mode & needed:
            return False
    return True


def readable_interpreter() -> str | None:
    """An interpreter whose binary and standard library an unprivileged uid can read: ours, else the system's."""
    import sysconfig

    if world_readable(sys.executable) and world_readable(sysconfig.get_paths()["stdlib"]):
        return sys.executable
    system = "/usr/bin/python3"
    return system if Path(system).exists() and world_readable(system) else None
