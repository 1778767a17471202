"""Stack operations that finish later, as real CloudFormation's do, and the one lock over moto's state.

Kept apart from the CloudFormation fixes so that the server can read and set the delay, and reset pending work,
without importing moto's CloudFormation models (which cost most of the emulator's start-up; see server.py).
"""

import threading
from collections.abc import Callable
from typing import ClassVar

from . import authorization

# One lock for moto's state: requests (see server.py) and the timers below both take it.
LOCK = threading.RLock()


class Settings:
    async_seconds: ClassVar[float] = 0.0
    # Items per page of the paged lists the fixes serve (AWS: at most 100 for ListStackInstances); tests set fewer,
    # so that a client reading only the first page is caught with a small organization.
    page_size: ClassVar[int] = 100
    timers: ClassVar[list[threading.Timer]] = []


def later(action: Callable[[], None]) -> None:
    """Run now (synchronous mode) or after the configured delay, under the lock, acting for the principal whose
    request scheduled it (CloudFormation's forward access sessions; see :mod:`.authorization`)."""
    if Settings.async_seconds <= 0:
        action()
        return
    principal = authorization.current()

    def run() -> None:
        with LOCK, authorization.acting_for(principal):
            action()

    timer = threading.Timer(Settings.async_seconds, run)
    timer.daemon = True
    Settings.timers.append(timer)
    timer.start()


def after(seconds: float, action: Callable[[], None]) -> None:
    """Run ``action`` once after ``seconds`` under the lock, whatever the configured delay (a queue's next look);
    cancelled with the other pending work on a reset."""

    def run() -> None:
        with LOCK:
            action()

    timer = threading.Timer(seconds, run)
    timer.daemon = True
    Settings.timers[:] = [t for t in Settings.timers if t.is_alive()]
    Settings.timers.append(timer)
    timer.start()


def cancel_pending() -> None:
    for timer in Settings.timers:
        timer.cancel()
    Settings.timers.clear()
