"""Hostile programs are contained and judged as failing; the evaluator survives and nothing is left running."""

import os
import shutil
import socket
import time

import pytest

from tunelens.config import UsageError
from tunelens.sandbox import Limits, Program, Sandbox, classify, last_exception_name, resolve_isolation

FAST = Limits(timeout_s=3.0, memory_bytes=512 << 20, file_size_bytes=8 << 20)
SOLUTION = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(FAST, workers=2)


def sandbox_processes():
    """Processes still running the sandbox wrapper (every program's process starts as one)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if b"_sandbox_main" in handle.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def judged(sandbox, code, tests=TESTS, max_seconds=6.0):
    start = time.perf_counter()
    result = sandbox.run(Program(code, tests))
    assert time.perf_counter() - start < max_seconds, "containment took too long"
    assert sandbox_processes() == [], "a sandboxed process was left behind"
    return result


def test_correct_solution_passes(sandbox):
    result = judged(sandbox, SOLUTION)
    assert result.passed and result.error is None and result.exit_code == 0


def test_wrong_solution_fails_on_assertion(sandbox):
    result = judged(sandbox, "def add(a, b):\n    return 3\n")
    assert not result.passed and result.error == "assertion"


def test_infinite_loop_times_out(sandbox):
    result = judged(sandbox, SOLUTION + "while True:\n    pass\n")
    assert not result.passed and result.timed_out and result.error == "timeout"


def test_cpu_limit_sits_above_the_wall_timeout_unless_set():
    assert Limits(timeout_s=3.0).cpu_limit_s == 4 and Limits(timeout_s=2.5).cpu_limit_s == 4
    assert Limits(timeout_s=3.0, cpu_s=1).cpu_limit_s == 1


def test_explicit_cpu_limit_stops_a_busy_loop_first():
    sandbox = Sandbox(Limits(timeout_s=5.0, cpu_s=1), workers=1)
    result = judged(sandbox, SOLUTION + "while True:\n    pass\n")
    assert not result.passed and not result.timed_out and result.error == "cpu_time"


def test_fork_flood_is_contained(sandbox):
    code = SOLUTION + (
        "import os, time\n"
        "for _ in range(300):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "        os._exit(0)\n")
    result = judged(sandbox, code)
    assert not result.passed


def test_detached_daemon_child_is_killed(sandbox):
    code = SOLUTION + (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(0.2)\n")
    result = judged(sandbox, code)
    assert result.passed  # the program itself is fine; its escaped grandchild must still be gone (checked above)


def test_huge_allocation_is_a_memory_error(sandbox):
    result = judged(sandbox, SOLUTION + "block = bytearray(4 * 1024**3)\n")
    assert not result.passed and result.error == "memory"


def test_huge_file_write_is_stopped(sandbox, tmp_path):
    code = SOLUTION + "with open('big.bin', 'wb') as f:\n    for _ in range(4096):\n        f.write(b'x' * 1024**2)\n"
    result = judged(sandbox, code)
    assert not result.passed and result.error == "file_size"


def test_hundreds_of_megabytes_on_stdout_are_bounded(sandbox):
    result = judged(sandbox, SOLUTION + "import sys\nfor _ in range(400):\n    sys.stdout.write('y' * 1024**2)\n")
    assert not result.passed and result.error == "file_size"
    assert len(result.stdout_tail) <= FAST.output_tail_bytes


def test_callers_environment_is_not_visible(sandbox, monkeypatch):
    monkeypatch.setenv("TUNELENS_TEST_SECRET", "hunter2")
    result = judged(sandbox, SOLUTION + "import os\nprint(dict(os.environ))\n"
                             "assert os.environ.get('TUNELENS_TEST_SECRET') == 'hunter2'\n")
    assert not result.passed and result.error == "assertion"
    assert "hunter2" not in result.stdout_tail and "HOME" in result.stdout_tail


def kill_the_parent_fails_and_evaluator_survives(sandbox):
    if not (sandbox.drop_privileges or sandbox.use_pid_namespace):
        pytest.skip("the program runs as the evaluator's own user in the evaluator's pid namespace "
                    "(no uid drop, no bwrap or unshare), so it can kill the evaluator")
    code = SOLUTION + ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                       "os.killpg(os.getpgid(os.getppid()), 9)\n")
    result = judged(sandbox, code)
    assert not result.passed
    assert judged(sandbox, SOLUTION).passed  # still here, still working


def test_killing_the_parent_fails_and_evaluator_survives(sandbox):
    kill_the_parent_fails_and_evaluator_survives(sandbox)


def test_killing_the_parent_as_the_same_user_fails_and_evaluator_survives():
    kill_the_parent_fails_and_evaluator_survives(same_user_sandbox())


def connect_to_a_loopback_listener(sandbox) -> tuple[bool, bytes]:
    """(passed, bytes the listener received) for a program that connects to 127.0.0.1 and sends b"leak"."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        connect = f"socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'leak')\n"
        code = SOLUTION + "import socket\n" + connect
        result = judged(sandbox, code)
        listener.settimeout(0.2)
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            return result.passed, b""
        with connection:
            return result.passed, connection.recv(16)


def test_network_is_cut_off():
    assert connect_to_a_loopback_listener(Sandbox(FAST, workers=1, isolation="none")) == (True, b"leak")
    sandbox = Sandbox(FAST, workers=1)
    if sandbox.isolation == "none":
        pytest.skip("neither bwrap nor unshare can create a network namespace on this machine")
    assert connect_to_a_loopback_listener(sandbox) == (False, b"")


def test_network_is_cut_off_as_the_same_user():
    sandbox = same_user_sandbox()
    if sandbox.isolation == "none":
        pytest.skip("neither bwrap nor unprivileged unshare can create a network namespace on this machine")
    assert connect_to_a_loopback_listener(sandbox) == (False, b"")


def test_without_namespaces_it_warns_or_refuses(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="programs under test can use the network"):
        assert resolve_isolation.__wrapped__("auto", False) == ("none", ())
    with pytest.raises(UsageError, match="isolation 'unshare' needs `unshare`"):
        resolve_isolation.__wrapped__("unshare", True)


def test_syntax_error(sandbox):
    result = judged(sandbox, "def add(a, b)\n    return a + b\n")
    assert not result.passed and result.error == "syntax"


@pytest.mark.parametrize("escape", [
    "import sys\nsys.exit(0)\n", "import os\nos._exit(0)\n", "raise SystemExit\n",
    "import atexit, os\natexit.register(lambda: os._exit(0))\nraise KeyboardInterrupt\n"])
def test_exiting_before_the_tests_is_no_pass(sandbox, escape):
    result = judged(sandbox, SOLUTION + escape)
    assert not result.passed and result.exit_code is not None


def test_faking_a_pass_does_not_work(sandbox):
    code = SOLUTION + (
        "import builtins, os, sys\n"
        "print('PASSED')\n"
        "builtins.AssertionError = type('Quiet', (Exception,), {})\n"
        "for fd in range(3, 20):\n"
        "    try:\n"
        "        os.write(fd, b'0' * 32)\n"
        "    except OSError:\n"
        "        pass\n"
        "sys.settrace(lambda *a: None)\n")
    result = judged(sandbox, code, tests="assert add(1, 2) == 4\n")
    assert not result.passed and result.error == "assertion"


SKIP_TESTS_BY_PATCHING = {
    "exec": "import builtins\n_exec = builtins.exec\n"
            "def exec(source, *args, **kwargs):\n"
            "    if getattr(source, 'co_filename', '') != 'tests.py':\n"
            "        return _exec(source, *args, **kwargs)\n"
            "builtins.exec = exec\n",
    "compile": "import builtins\n_compile = builtins.compile\n"
               "def compile(source, name, *args, **kwargs):\n"
               "    return _compile('pass' if name == 'tests.py' else source, name, *args, **kwargs)\n"
               "builtins.compile = compile\n",
    "settrace": "import sys\nsys.settrace = lambda *args: None\nsys.setprofile = lambda *args: None\n",
    "rewrite the tests": "open('tests.py', 'w').write('pass\\n')\n",
}


@pytest.mark.parametrize("patch", SKIP_TESTS_BY_PATCHING.values(), ids=SKIP_TESTS_BY_PATCHING.keys())
def test_replacing_what_runs_the_tests_does_not_skip_them(sandbox, patch):
    result = judged(sandbox, SOLUTION + patch, tests="assert add(1, 2) == 4\n")
    assert not result.passed and result.error == "assertion"


def test_closing_stdout_does_not_hide_a_real_pass(sandbox):
    assert judged(sandbox, SOLUTION + "import os\nos.close(1)\nos.close(2)\n").passed


def test_working_directory_is_removed_and_private(sandbox):
    result = judged(sandbox, SOLUTION + "import os\nprint(os.getcwd())\nassert os.listdir('.') != []\n")
    workdir = result.stdout_tail.strip()
    assert result.passed and workdir and not os.path.exists(workdir)


def test_results_come_back_in_input_order_in_parallel():
    sandbox = Sandbox(FAST, workers=3)
    programs = [Program(f"import time\ntime.sleep({0.05 * (8 - i)})\nvalue = {i}\n",
                        "assert value % 2 == 0\n") for i in range(8)]
    results = sandbox.run_many(programs)
    assert [r.passed for r in results] == [i % 2 == 0 for i in range(8)]
    assert sandbox_processes() == []


def test_classify_and_exception_names():
    assert classify(False, True, 0, "") is None
    assert classify(True, False, -9, "") == "timeout"
    assert classify(False, False, 1, "Traceback (most recent call last):\n  x\nZeroDivisionError: division") == \
        "ZeroDivisionError"
    assert classify(False, False, -24, "") == "cpu_time"
    assert classify(False, False, 0, "") == "no_verdict"
    assert classify(False, False, 3, "") == "exit:3"
    assert last_exception_name("Traceback (most recent call last):\n  File x\nmod.CustomError: boom") == "CustomError"


def same_user_sandbox(isolation="auto"):
    """The mode of a non-root evaluator: no uid change; escapees end with the program's pid namespace or,
    without one ("none"), are found as orphans reparented to the evaluator."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "geteuid", lambda: 1000)
        sandbox = Sandbox(FAST, workers=2, isolation=isolation)
    assert not sandbox.drop_privileges
    return sandbox


@pytest.mark.parametrize("isolation", ["auto", "none"])
@pytest.mark.parametrize("code", [
    SOLUTION + "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n        time.sleep(60)\n"
               "    os._exit(0)\ntime.sleep(0.2)\n",
    SOLUTION + "import os, time\nfor _ in range(50):\n    if os.fork() == 0:\n        time.sleep(60)\n"
               "        os._exit(0)\n",
    SOLUTION + "while True:\n    pass\n",
])
def test_same_user_mode_leaves_nothing_behind(code, isolation):
    sandbox = same_user_sandbox(isolation)
    judged(sandbox, code)
    assert judged(sandbox, SOLUTION).passed
