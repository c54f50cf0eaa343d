"""Ctrl-C that always stops a run.

Python turns SIGINT into a KeyboardInterrupt wherever the main thread happens to be; if that is a finalizer
(`__del__`) or a callback, Python prints "Exception ignored" and carries on, and the study would run to its end
as if nothing was pressed. So the CLI's handler also remembers the request, and the study and the engine check it
between stages and between steps (`stop_if_requested`).
"""

from __future__ import annotations

import signal
import threading

_requested = threading.Event()


def _on_sigint(signum, frame) -> None:
    _requested.set()
    raise KeyboardInterrupt


def install() -> None:
    """Use the remembering handler (main thread only, as Python requires; elsewhere a no-op)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def stop_if_requested() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed, even if its first exception was swallowed."""
    if _requested.is_set():
        raise KeyboardInterrupt
