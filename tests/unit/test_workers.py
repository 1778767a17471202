"""The worker slots: as many passes at once as the setting says, whatever the node's cores, and one per object."""

import asyncio
import contextlib
import threading
import time

from defender_operator.workers import Workers


def test_every_slot_runs_at_once_whatever_the_cores() -> None:
    """40 slots, 40 passes that each wait for all the others: they all run together. In the event loop's default
    pool (at most 32 threads, and cores + 4 below that: 6 on two cores) they never would, and the barrier breaks."""
    count = 40
    barrier = threading.Barrier(count, timeout=10)

    async def main() -> list[int]:
        workers = Workers(count)
        return await asyncio.gather(*(workers.exclusive(f"uid-{i}", barrier.wait) for i in range(count)))

    assert sorted(asyncio.run(main())) == list(range(count))


def test_passes_of_one_object_never_overlap() -> None:
    running: list[str] = []
    overlaps: list[list[str]] = []

    def work(uid: str) -> None:
        running.append(uid)
        if running.count(uid) > 1:
            overlaps.append(list(running))
        time.sleep(0.02)
        running.remove(uid)

    async def main() -> None:
        workers = Workers(8)
        await asyncio.gather(*(workers.exclusive(uid, work, uid) for uid in ["a", "b"] * 6))

    asyncio.run(main())
    assert overlaps == []


def test_a_cancelled_pass_holds_its_object_until_its_thread_ends() -> None:
    """Kopf cancels the daemon of a deleted object; its thread goes on, and cleanup must wait for it."""
    release = threading.Event()
    order: list[str] = []

    def pass_() -> None:
        release.wait(10)
        order.append("pass ended")

    def cleanup() -> None:
        order.append("cleanup")

    async def main() -> None:
        workers = Workers(2)
        first = asyncio.ensure_future(workers.exclusive("uid", pass_))
        await asyncio.sleep(0.05)  # the pass is in its thread
        first.cancel()
        second = asyncio.ensure_future(workers.exclusive("uid", cleanup))
        await asyncio.sleep(0.2)
        assert order == []  # cleanup has not started while the pass's thread runs
        release.set()
        await second
        assert first.cancelled()

    asyncio.run(main())
    assert order == ["pass ended", "cleanup"]


def test_a_late_decision_is_made_once_the_slot_is_free_not_while_waiting_for_it() -> None:
    """A pass queued behind a busy slot decides its grant when it gets the slot: a grant withdrawn while it waited
    is the one it acts on (issue 25)."""
    grant = {"allowed": True}
    release = threading.Event()

    async def main() -> tuple[bool, bool]:
        workers = Workers(1)
        busy = asyncio.ensure_future(workers.exclusive("uid-a", release.wait, 10))
        await asyncio.sleep(0)  # the busy pass holds the only slot
        queued = asyncio.ensure_future(
            workers.exclusive("uid-b", lambda allowed: allowed, late=lambda: grant["allowed"])
        )
        await asyncio.sleep(0.05)
        grant["allowed"] = False  # withdrawn while the second pass waits for the slot
        release.set()
        return await busy, await queued

    assert asyncio.run(main()) == (True, False)


def test_a_pass_that_fails_after_its_caller_was_cancelled_is_not_an_unretrieved_exception() -> None:
    """Kopf cancels the daemon of a deleted object while its pass runs; the pass may then end in an error (a status
    conflict). Its caller is gone, so the error is dropped, and asyncio must not report it as "Future exception was
    never retrieved" (found by the chaos campaign, with an API-server restart)."""
    reported: list[str] = []
    started, release = threading.Event(), threading.Event()

    def fails() -> None:
        started.set()
        release.wait(5)
        raise RuntimeError("the status changed meanwhile")

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, context: reported.append(context["message"])
        )
        workers = Workers(2)
        caller = asyncio.create_task(workers.exclusive("uid", fails))
        await asyncio.to_thread(started.wait, 5)
        caller.cancel()
        release.set()
        with contextlib.suppress(asyncio.CancelledError):
            await caller
        del caller
        await asyncio.sleep(0.1)  # the thread's outcome reaches the loop, and the future is let go

    asyncio.run(main())
    assert not [m for m in reported if "never retrieved" in m], reported


def test_close_returns_once_the_pass_under_way_has_ended() -> None:
    """A stopping leader keeps its Lease until its passes have stopped writing (operator_main.py): Kopf gives a pass
    up after its cancellation timeout, the thread goes on, and ``close`` waits for it."""
    release = threading.Event()
    order: list[str] = []

    def pass_() -> None:
        release.wait(10)
        order.append("pass ended")

    async def main() -> None:
        workers = Workers(2)
        running = asyncio.ensure_future(workers.exclusive("uid", pass_))
        await asyncio.sleep(0.05)  # the pass is in its thread
        running.cancel()  # Kopf gave it up
        closing = asyncio.ensure_future(asyncio.to_thread(workers.close))
        await asyncio.sleep(0.2)
        assert not closing.done()  # the pass still runs
        release.set()
        await closing
        order.append("closed")

    asyncio.run(main())
    assert order == ["pass ended", "closed"]
