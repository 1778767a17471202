"""The AWSConnectors' index, fed watch events through Kopf's own indexing (whose rules decide what it holds), read
through its parts (``handlers/indexes.py``): each part reads as an index of its own; an object's entries follow its
status both ways (a cleanup no longer blocked leaves the blocked part, so a change of the grants does not wake it
again); a deleted object leaves every part; and a spec a part cannot read leaves the object's earlier entries, a claim
and declared resources included, where dropping them would let another object take what this one declares."""

from typing import Any

from defender_operator.handlers.indexes import INDEX, awsconnectors, indexes_of
from tests.support.kopf_indexing import Indexing

SPEC = {
    "aws": {"accountId": "111122223333"},
    "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000001", "resourceGroup": "rg"},
}


def _body(
    name: str,
    uid: str,
    status: dict[str, Any] | None = None,
    spec: dict[str, Any] = SPEC,
    deleting: bool = False,
) -> dict[str, Any]:
    meta = {"namespace": "team-a", "name": name, "uid": uid, "creationTimestamp": "2026-12-07T10:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-12-07T11:00:00Z"
    return {"metadata": meta, "spec": spec, "status": status or {}}


def _stalled(reason: str) -> dict[str, Any]:
    return {"conditions": [{"type": "Stalled", "status": "True", "reason": reason}]}


def _part(kopf: Indexing, name: str) -> dict[Any, list[Any]]:
    return {key: list(values) for key, values in indexes_of(kopf.indexes())[name].items()}


def test_each_part_reads_as_an_index_of_its_own_and_a_deleted_object_leaves_them_all() -> None:
    kopf = Indexing({INDEX: awsconnectors})
    kopf.see("ADDED", _body("one", "u-1"))
    kopf.see("ADDED", _body("two", "u-2"))
    assert _part(kopf, "by_name") == {("team-a", "one"): ["u-1"], ("team-a", "two"): ["u-2"]}
    ((key, claims),) = _part(kopf, "by_account").items()
    assert sorted(c.ref for c in claims) == ["team-a/one", "team-a/two"]
    parts = indexes_of(kopf.indexes())
    assert key in parts["by_account"] and len(parts["by_account"].get(key, [])) == 2
    assert parts["by_name"].get(("team-a", "three"), []) == [] and ("team-a", "three") not in parts["by_name"]
    assert [namespace for namespace, _ in parts["by_name"]] == ["team-a", "team-a"]
    assert set(_part(kopf, "by_catalog")) == {"u-1", "u-2"}
    assert "stack/111122223333/DefenderForCloud-111122223333" in _part(kopf, "by_resource")
    assert _part(kopf, "cleanup_blocked") == {}
    kopf.see("DELETED", _body("one", "u-1"))
    assert _part(kopf, "by_name") == {("team-a", "two"): ["u-2"]}
    assert [c.ref for c in _part(kopf, "by_account")[key]] == ["team-a/two"]
    assert set(_part(kopf, "by_catalog")) == {"u-2"}


def test_a_cleanup_no_longer_blocked_leaves_the_index() -> None:
    kopf = Indexing({INDEX: awsconnectors})
    kopf.see("MODIFIED", _body("prod", "u-1", _stalled("CleanupBlocked"), deleting=True))
    assert _part(kopf, "cleanup_blocked") == {"u-1": [("team-a", "prod")]}
    # the grant came back, and the status says something else now
    kopf.see("MODIFIED", _body("prod", "u-1", _stalled("SomethingElse"), deleting=True))
    assert _part(kopf, "cleanup_blocked") == {}
    kopf.see("MODIFIED", _body("prod", "u-1", _stalled("CleanupBlocked"), deleting=True))
    assert _part(kopf, "cleanup_blocked") == {"u-1": [("team-a", "prod")]}


def test_a_spec_a_part_cannot_read_leaves_the_objects_earlier_entries() -> None:
    kopf = Indexing({INDEX: awsconnectors})
    kopf.see("ADDED", _body("one", "u-1"))
    before = {part: _part(kopf, part) for part in ("by_account", "by_name", "by_resource", "by_catalog")}
    # a spec the CRD's schema refuses (a stale CRD might not): the parts that read spec.deployment cannot
    kopf.see("MODIFIED", _body("one", "u-1", spec={**SPEC, "deployment": "CloudFormation"}))
    assert {part: _part(kopf, part) for part in before} == before
