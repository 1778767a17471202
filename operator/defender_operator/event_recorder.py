"""Events posted from a thread of their own, in the order they were recorded, so a pass never waits for them.

A pass used to post its Events itself, in its worker slot: on a first pass that is up to five requests (identity
provider, stack, prerequisites, health, Ready), about a tenth of a worker's time over a backlog
(docs/performance.md, "A backlog"). client-go records Events the same way (``record.EventBroadcaster``: a queue and
a goroutine), because an Event is for people reading ``kubectl describe``, not part of the reconcile: when the API
server refuses one, it is logged and dropped, never retried into the next pass. The queue is bounded; an Event that
finds it full is dropped with a log line (a flood of Events is the thing to avoid, not to queue without end).
"""

import logging
import queue
import threading

from .kube import Kube, one_line
from .reconcile.model import Event

log = logging.getLogger("defender_operator")
CAPACITY = 10_000


class EventRecorder:
    def __init__(self, kube: Kube, capacity: int = CAPACITY) -> None:
        self._kube = kube
        self._queue: queue.Queue[tuple[str, str, str, Event]] = queue.Queue(capacity)
        threading.Thread(target=self._post_forever, daemon=True, name="events").start()

    def record(self, namespace: str, name: str, uid: str, event: Event) -> None:
        try:
            self._queue.put_nowait((namespace, name, uid, event))
        except queue.Full:
            log.warning(
                "event dropped: too many waiting",
                extra={"object": f"{namespace}/{name}", "reason": event.reason},
            )

    def flush(self, timeout: float) -> bool:
        """Wait until every Event recorded so far is posted (or dropped), for at most ``timeout`` seconds: a leader
        that stops posts its last passes' Events before it hands the Lease over. False if some were still waiting."""
        with self._queue.all_tasks_done:
            return self._queue.all_tasks_done.wait_for(lambda: not self._queue.unfinished_tasks, timeout)

    def _post_forever(self) -> None:
        while True:
            namespace, name, uid, event = self._queue.get()
            try:
                self._kube.post_event(namespace, name, uid, event)
            except Exception as exc:  # any failure drops this Event, never the recorder
                log.warning(
                    "event not posted",
                    extra={"object": f"{namespace}/{name}", "reason": event.reason, "error": one_line(exc)},
                )
            finally:
                self._queue.task_done()
