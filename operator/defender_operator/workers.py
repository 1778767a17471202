"""The worker slots: at most ``count`` passes and cleanups at once, one at a time per object, each in a thread.

The threads are a pool of exactly ``count``, the operator's own. ``asyncio.to_thread`` would run them in the event
loop's default pool, which has ``min(32, cores + 4)`` threads: six on a two-core node, so eight workers would run
six passes at a time (and the other two would hold slots while they wait for a thread), whatever the setting says.
"""

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from . import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
CALL_THREADS = 4  # the handlers' short calls outside passes (Workers.call)


class Workers:
    def __init__(self, count: int) -> None:
        self._slots = asyncio.Semaphore(count)
        self._pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="worker")
        self._calls = ThreadPoolExecutor(max_workers=CALL_THREADS, thread_name_prefix="call")
        self._locks: dict[str, asyncio.Lock] = {}

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a thread for the handlers' short Kubernetes calls outside a pass (a finalizer
        removed, a status written by a blocked cleanup, the admission policy's parameter): the operator's own,
        not the event loop's default pool, so that :meth:`close` waits for them too."""
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._calls, call)

    async def exclusive(
        self, uid: str, fn: Callable[..., T], *args: Any, late: Callable[[], Any] | None = None
    ) -> T:
        """``fn(*args)`` in a worker thread, under the object's lock and a worker slot; with ``late``,
        ``fn(*args, late())``, ``late`` called on the event loop once the slot is held (a decision such as the
        grant, which must not be the one of before a wait for a slot).

        If the caller is cancelled (Kopf stops the daemon of a deleted object), the lock is kept until the thread
        has finished: cleanup must not start while a pass can still write.
        """
        lock = self._locks.setdefault(uid, asyncio.Lock())
        with metrics.queued():
            await lock.acquire()
            try:
                await self._slots.acquire()
            except BaseException:
                lock.release()
                raise
        try:
            if late is not None:
                args = (*args, late())
            call = functools.partial(contextvars.copy_context().run, _working, fn, *args)
            task = asyncio.get_running_loop().run_in_executor(self._pool, call)
            # A caller cancelled meanwhile never reads the outcome; read it here, so a pass that ended in an error
            # after its caller went (a status conflict, say) is not reported as "never retrieved" by asyncio.
            task.add_done_callback(_outcome_read)
            try:
                return await asyncio.shield(task)
            except asyncio.CancelledError:
                await asyncio.wait([task])
                if not task.cancelled() and task.exception() is not None:  # its caller is gone: said here
                    error = task.exception()
                    log.info(
                        "a pass ended with an error after it was cancelled",
                        extra={"uid": uid, "error": f"{type(error).__name__}: {error}"[:300]},
                    )
                raise
        finally:
            self._slots.release()
            lock.release()

    def close(self) -> None:
        """Start nothing more, and return once the passes, cleanups and calls under way have ended. Kopf stops
        waiting for a daemon after its cancellation timeout, but the pass it waited for goes on in its thread: a
        leader must not hand its Lease over before that pass has stopped writing."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._calls.shutdown(wait=True, cancel_futures=True)

    def forget(self, uid: str) -> None:
        """The object is gone: drop its lock."""
        self._locks.pop(uid, None)


def _working(fn: Callable[..., T], *args: Any) -> T:
    with metrics.working():
        return fn(*args)


def _outcome_read(task: "asyncio.Future[Any]") -> None:
    if not task.cancelled():
        task.exception()
