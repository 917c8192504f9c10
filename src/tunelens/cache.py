"""One cache for everything the toolkit trains deterministically from a config: SPD targets, the tiny base
models, fine-tuned checkpoints.

An entry is a directory `<root>/<namespace>/<hash of the key>`; the key is the config (plus anything else the
result depends on, such as a corpus version). It is built in a staging directory and renamed into place when
complete, with a marker file written last, so a killed build or two processes building at once never leave a
half-written entry where a reader looks. The root is `$TUNELENS_CACHE`, else `$XDG_CACHE_HOME/tunelens`, else
`~/.cache/tunelens`.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tunelens.config import config_hash, config_to_dict

MARKER = ".tunelens-cache.json"


def cache_root() -> Path:
    root = os.environ.get("TUNELENS_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "tunelens"


def _plain(key: BaseModel | dict[str, Any]) -> dict[str, Any]:
    if isinstance(key, BaseModel):
        return config_to_dict(key)
    return {k: _plain(v) if isinstance(v, (BaseModel, dict)) else v for k, v in key.items()}


def entry_dir(namespace: str, key: BaseModel | dict[str, Any]) -> Path:
    return cache_root() / namespace / config_hash(_plain(key))


def is_cached(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def cached(namespace: str, key: BaseModel | dict[str, Any], build: Callable[[Path], None],
           log: Callable[[str], None] = lambda message: None) -> Path:
    """Directory of the entry for `key`, made by `build(staging_dir)` the first time it is asked for."""
    folder = entry_dir(namespace, key)
    if is_cached(folder):
        log(f"cache: reusing {folder}")
        return folder
    log(f"cache: building {namespace} (kept in {folder})")
    staging = folder.parent / f".{folder.name}.{os.getpid()}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        build(staging)
        (staging / MARKER).write_text(json.dumps({"namespace": namespace, "key": _plain(key)}, indent=2) + "\n")
        if folder.exists() and not is_cached(folder):  # left by a build that was killed after an old layout
            shutil.rmtree(folder)
        try:
            staging.rename(folder)
        except OSError:  # another process finished first: keep its entry
            if not is_cached(folder):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder
