"""Locks on the run directory (filelock): one `undo` process writes a run directory at a time, and one worker
writes an artifact at a time.

- `run_dir_lock`: held by every command that writes a run directory (`undo run`, `undo pretrain`, ...). A second
  command on the same run directory exits with one line naming the process that holds it. The lock is an OS lock
  on `<run_dir>/.undo.lock`: a killed process releases it, so a rerun never finds a stale one.
- `artifact_lock`: held by the worker that makes an artifact, from its partial folder to its final rename; a
  second worker asked for the same artifact (two tasks of one study can need one attack) waits, then reuses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from undo.core import distributed
from undo.schema.errors import UserError

LOCK, OWNER = ".undo.lock", ".undo.lock.owner"


def writable_run_dir(run_dir: Path) -> Path:
    """The run directory, created if needed; one line when it is a file or cannot be written."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run_dir {run_dir} is a file, not a folder; point run_dir (or --run-dir) at a folder")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".undo.write-test.{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run_dir {run_dir} cannot be written ({err.strerror}); fix its permissions or point "
                        "run_dir elsewhere") from None
    return run_dir


@contextlib.contextmanager
def run_dir_lock(run_dir: Path, command: str) -> Iterator[Path]:
    if not distributed.is_main():  # the processes of one torchrun are one writer: the main one holds the lock
        yield Path(run_dir)
        return
    run_dir = writable_run_dir(run_dir)
    lock = FileLock(run_dir / LOCK, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        try:
            owner = json.loads((run_dir / OWNER).read_text())
            who = f"`{owner['command']}` (pid {owner['pid']} on {owner['host']}, since {owner['since']})"
        except (OSError, ValueError, KeyError):
            who = "another undo process"
        raise UserError(f"{who} is writing {run_dir}; wait for it to finish (or stop it), or use another run_dir"
                        ) from None
    try:
        (run_dir / OWNER).write_text(json.dumps({"command": command, "pid": os.getpid(), "host": socket.gethostname(),
                                                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}) + "\n")
        yield run_dir
    finally:
        lock.release()


@contextlib.contextmanager
def artifact_lock(run_dir: Path, name: str) -> Iterator[None]:
    folder = Path(run_dir) / ".locks"
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(folder / f"{name}.lock"):
        yield


def command_line() -> str:
    return " ".join(["undo", *sys.argv[1:]])
