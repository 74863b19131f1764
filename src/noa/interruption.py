"""SIGTERM handled as Ctrl-C: a closed terminal or a scheduler's stop ends a command the way
Ctrl-C does (with its message and what was kept), not by the default handler's silent exit 143."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Interruption:
    """Turns SIGTERM into the KeyboardInterrupt SIGINT raises, so both stop the work the same
    way, and remembers which signal came (for the exit status 128 + signal)."""

    def __init__(self) -> None:
        self.signum = signal.SIGINT

    @contextmanager
    def installed(self) -> Iterator[Interruption]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handle(signum: int, _frame: object) -> None:
            self.signum = signal.Signals(signum)
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
