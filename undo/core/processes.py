"""Processes that must not outlive the one that started them (pool workers, torchrun's processes)."""

from __future__ import annotations

import os
import threading
import time


def die_with_parent() -> None:
    """A worker must not outlive the `undo run` that started it (killed, the parent cannot stop its workers, and a
    rerun would collide with them): on Linux the kernel kills it when its parent dies (PR_SET_PDEATHSIG); elsewhere
    a watchdog thread exits once the parent is gone."""
    parent = os.getppid()
    try:
        import ctypes
        import signal

        if ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before the request took effect
                os._exit(1)
            return
    except OSError:
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
