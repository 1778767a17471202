"""The index of blocked cleanups follows the object's status both ways: an object whose cleanup was blocked and is
no longer leaves it, so a change of the grants does not wake its cleanup again (``handlers/objects.py``). Run through
Kopf's own indexers, whose rule decides it: a handler's None keeps the object's earlier entry."""

import asyncio
from typing import Any

from kopf._core.actions.execution import Outcome
from kopf._core.engines.indexing import OperatorIndexer, OperatorIndexers

from defender_operator.handlers.objects import cleanup_blocked

META = {"namespace": "team-a", "name": "prod", "uid": "u-1", "deletionTimestamp": "2026-12-07T10:00:00Z"}


def _status(reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Stalled", "status": "True", "reason": reason}]}


def _indexed(
    indexers: OperatorIndexers, status: dict[str, Any], meta: dict[str, Any] = META
) -> dict[str, Any]:
    """The index after Kopf stores the handler's result for the object with ``status``."""
    result = asyncio.run(
        cleanup_blocked(
            namespace=meta["namespace"], name=meta["name"], uid=meta["uid"], meta=meta, status=status
        )
    )
    body: Any = {"metadata": meta}
    indexers.replace(body, {"cleanup_blocked": Outcome(final=True, result=result)})  # type: ignore[dict-item]
    return {key: list(values) for key, values in indexers["cleanup_blocked"].index.items()}


def test_a_cleanup_no_longer_blocked_leaves_the_index() -> None:
    indexers = OperatorIndexers()
    indexers["cleanup_blocked"] = OperatorIndexer()  # what Kopf makes for the handler
    assert _indexed(indexers, _status("CleanupBlocked")) == {"u-1": [("team-a", "prod")]}
    # the grant came back and the cleanup now waits on the cloud (or any other reason)
    assert _indexed(indexers, _status("CleanupInProgress")) == {}
    assert _indexed(indexers, _status("CleanupBlocked")) == {"u-1": [("team-a", "prod")]}
    # the deletion is not what it was: an object not being deleted is never in it
    assert _indexed(indexers, {}, {**META, "deletionTimestamp": None}) == {}
