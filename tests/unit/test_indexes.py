"""The AWSConnectors' index, run through Kopf's own indexers (whose rules decide what it holds), read through its
parts (``handlers/indexes.py``): each part reads as an index of its own, an object's entries follow its status both
ways (a cleanup no longer blocked leaves the blocked part, so a change of the grants does not wake it again), and a
part that fails for an object leaves the object's other parts alone."""

import asyncio
from typing import Any

from kopf._core.actions.execution import Outcome
from kopf._core.engines.indexing import OperatorIndexer, OperatorIndexers

from defender_operator.handlers.indexes import INDEX, awsconnectors, indexes_of

SPEC = {
    "aws": {"accountId": "111122223333"},
    "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000001"},
}


def _meta(name: str, uid: str, deleting: bool = False) -> dict[str, Any]:
    meta = {"namespace": "team-a", "name": name, "uid": uid, "creationTimestamp": "2026-12-07T10:00:00Z"}
    return {**meta, "deletionTimestamp": "2026-12-07T11:00:00Z"} if deleting else meta


def _stalled(reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Stalled", "status": "True", "reason": reason}]}


class Kopf:
    """Kopf's indexers for the one index handler, fed as Kopf feeds them on a watch event."""

    def __init__(self) -> None:
        self.indexers = OperatorIndexers()
        self.indexers[INDEX] = OperatorIndexer()  # what Kopf makes for the handler

    def event(self, meta: dict[str, Any], status: dict[str, Any], spec: dict[str, Any] = SPEC) -> None:
        result = asyncio.run(
            awsconnectors(
                namespace=meta["namespace"],
                name=meta["name"],
                uid=meta["uid"],
                meta=meta,
                spec=spec,
                status=status,
            )
        )
        body: Any = {"metadata": meta}
        self.indexers.replace(body, {INDEX: Outcome(final=True, result=result)})  # type: ignore[dict-item]

    def deleted(self, meta: dict[str, Any]) -> None:
        self.indexers.discard({"metadata": meta})  # type: ignore[arg-type]

    def part(self, name: str) -> dict[Any, list[Any]]:
        parts = indexes_of({INDEX: self.indexers[INDEX].index})
        return {key: list(values) for key, values in parts[name].items()}


def test_each_part_reads_as_an_index_of_its_own() -> None:
    kopf = Kopf()
    kopf.event(_meta("one", "u-1"), {})
    kopf.event(_meta("two", "u-2"), {})
    assert kopf.part("by_name") == {("team-a", "one"): ["u-1"], ("team-a", "two"): ["u-2"]}
    ((key, claims),) = kopf.part("by_account").items()
    assert sorted(c.ref for c in claims) == ["team-a/one", "team-a/two"]
    parts = indexes_of({INDEX: kopf.indexers[INDEX].index})
    assert parts["by_account"].get(key) is not None and key in parts["by_account"]
    assert parts["by_name"].get(("team-a", "three"), []) == [] and ("team-a", "three") not in parts["by_name"]
    assert set(kopf.part("by_catalog")) == {"u-1", "u-2"}
    assert kopf.part("cleanup_blocked") == {}
    kopf.deleted(_meta("one", "u-1"))
    assert kopf.part("by_name") == {("team-a", "two"): ["u-2"]}
    assert [c.ref for c in kopf.part("by_account")[key]] == ["team-a/two"]


def test_a_cleanup_no_longer_blocked_leaves_the_index() -> None:
    kopf = Kopf()
    kopf.event(_meta("prod", "u-1", deleting=True), _stalled("CleanupBlocked"))
    assert kopf.part("cleanup_blocked") == {"u-1": [("team-a", "prod")]}
    # the grant came back, and the status says something else now
    kopf.event(_meta("prod", "u-1", deleting=True), _stalled("SomethingElse"))
    assert kopf.part("cleanup_blocked") == {}
    kopf.event(_meta("prod", "u-1", deleting=True), _stalled("CleanupBlocked"))
    assert kopf.part("cleanup_blocked") == {"u-1": [("team-a", "prod")]}


def test_a_part_that_fails_leaves_the_others() -> None:
    # a spec the CRD's schema refuses (a stale CRD might not): the parts that read spec.deployment cannot
    kopf = Kopf()
    kopf.event(_meta("one", "u-1"), {}, {**SPEC, "deployment": "CloudFormation"})
    assert kopf.part("by_resource") == {} and kopf.part("by_catalog") == {}
    assert kopf.part("by_name") == {("team-a", "one"): ["u-1"]}
    assert [c.ref for claims in kopf.part("by_account").values() for c in claims] == ["team-a/one"]
