"""The catalog rollout's decisions: batches of a bounded size, the pause between them, canaries first, a halt at the
first failed update, and a restart that resumes from the statuses (reconcile/rollout.py)."""

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.api.status import (
    AWSConnectorStatus,
    AwsStatus,
    CatalogStatus,
    Condition,
    OrganizationStatus,
)
from defender_operator.reconcile.conditions import Verdict
from defender_operator.reconcile.model import Target
from defender_operator.reconcile.rollout import (
    Canaries,
    CatalogRollout,
    Fleet,
    Standing,
    catalog_after,
    catalog_changes,
    fleet_of,
    standing_of,
    written,
    written_before,
)
from defender_operator.render.catalog import catalog_version, use_catalog
from defender_operator.render.cloudformation import member_template, stack_template
from defender_operator.render.document import Rendered
from tests.support.catalogs import changed_catalog
from tests.support.manifests import base_manifest

NOBODY = Fleet(frozenset(), (), ())
T = "2026-12-05T00:00:00Z"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def rollout(batch: int = 2, pause: float = 30.0, canaries: str = "") -> tuple[CatalogRollout, Clock]:
    clock = Clock()
    return CatalogRollout(batch, pause, Canaries(canaries), clock=clock), clock


def done() -> AWSConnectorStatus:
    return AWSConnectorStatus(catalog=CatalogStatus(version=catalog_version()))


def failed() -> AWSConnectorStatus:
    return AWSConnectorStatus(
        catalog=CatalogStatus(version="old", upgrading=catalog_version()),
        conditions=[
            Condition(type="Stalled", status="True", reason="StackUpdateFailed", last_transition_time=T)
        ],
    )


def upgrading() -> CatalogStatus:
    return CatalogStatus(version="old", upgrading=catalog_version())


def test_a_batch_takes_as_many_objects_as_its_size_and_the_next_waits_for_all_of_it_and_the_pause() -> None:
    gate, clock = rollout(batch=2, pause=30)
    assert gate.admit("a", "ns/a", NOBODY) is None
    assert gate.admit("b", "ns/b", NOBODY) is None
    held = gate.admit("c", "ns/c", NOBODY)
    assert held is not None and held.retry_after is None and "its turn" in held.message
    assert gate.admit("a", "ns/a", NOBODY) is None  # already in: its later passes go on
    gate.settled("a", "ns/a", upgrading(), done())
    assert gate.admit("c", "ns/c", NOBODY) is not None  # the batch is not over until all of it is done
    assert gate.take_wakes() == []
    gate.settled("b", "ns/b", upgrading(), done())
    assert gate.take_wakes() == [("c", 130.0)]  # woken when the pause is over
    clock.now = 110.0
    paused = gate.admit("c", "ns/c", NOBODY)
    assert paused is not None and paused.retry_after == pytest.approx(20.0)
    clock.now = 130.0
    assert gate.admit("c", "ns/c", NOBODY) is None


def test_a_failed_update_halts_the_rollout_naming_the_object_until_it_succeeds() -> None:
    gate, clock = rollout(batch=3)
    assert gate.admit("a", "ns/a", NOBODY) is None
    gate.settled("a", "ns/a", upgrading(), failed())
    halted = gate.admit("b", "ns/b", NOBODY)
    assert halted is not None and "halted" in halted.message and "ns/a" in halted.message
    # the same, from the statuses alone (another process, or this one after a restart)
    other, _ = rollout(batch=3)
    from_index = other.admit("b", "ns/b", Fleet(frozenset(), ("ns/a",), ()))
    assert from_index is not None and "ns/a" in from_index.message
    gate.settled("a", "ns/a", upgrading(), done())  # a person fixed it and requested a reconcile
    assert gate.take_wakes() == [("b", 130.0)]  # its batch is over: the pause, then the next
    clock.now = 130.0
    assert gate.admit("b", "ns/b", NOBODY) is None


def test_pausing_the_object_that_failed_ends_the_halt() -> None:
    """The way out when the failure is not the catalog's (a tenant's own account refusing the update, say): an admin
    pauses that object, which leaves the rollout as it is, and the others go on."""
    gate, _ = rollout(batch=3, pause=0)
    assert gate.admit("a", "ns/a", NOBODY) is None
    gate.settled("a", "ns/a", upgrading(), failed())
    assert gate.admit("b", "ns/b", NOBODY) is not None
    paused = failed()
    paused.conditions.append(Condition(type="Paused", status="True", reason="Paused", last_transition_time=T))
    gate.settled("a", "ns/a", upgrading(), paused)
    assert [uid for uid, _ in gate.take_wakes()] == ["b"]
    assert gate.admit("b", "ns/b", NOBODY) is None
    # and in the fleet read from the statuses: neither failed nor under way
    status = {
        "catalog": {"upgrading": catalog_version()},
        "conditions": [{"type": "Stalled", "status": "True"}, {"type": "Paused", "status": "True"}],
    }
    assert fleet_of([("a", standing_of("ns/a", status))], catalog_version(), Canaries("ns")) == NOBODY


def test_the_canaries_go_first() -> None:
    gate, _ = rollout(batch=5, canaries="canary,team/prod-a")
    fleet = Fleet(frozenset(), (), ("canary/x",))
    held = gate.admit("b", "team/b", fleet)
    # a tenant's status never names another namespace's objects
    assert held is not None and "canaries" in held.message and "canary/x" not in held.message
    assert "an object in another namespace" in held.message
    assert gate.admit("x", "canary/x", fleet) is None
    assert gate.admit("p", "team/prod-a", fleet) is None
    assert gate.admit("b", "team/b", NOBODY) is None  # no canary pending any more


def test_a_restart_counts_the_updates_the_statuses_say_are_under_way() -> None:
    gate, _ = rollout(batch=2, pause=0)
    fleet = Fleet(frozenset({"a", "b"}), (), ())
    assert gate.admit("c", "ns/c", fleet) is not None
    assert gate.admit("a", "ns/a", fleet) is None
    gate.settled("a", "ns/a", upgrading(), done())
    gate.settled("b", "ns/b", upgrading(), done())
    assert [uid for uid, _ in gate.take_wakes()] == ["c"]
    # the index may still show a and b under way for a moment: what this process saw done is not counted again
    assert gate.admit("c", "ns/c", fleet) is None


def test_a_deleted_object_leaves_its_place() -> None:
    gate, _ = rollout(batch=1, pause=0)
    assert gate.admit("a", "ns/a", NOBODY) is None
    assert gate.admit("b", "ns/b", NOBODY) is not None
    gate.forget("a")
    assert [uid for uid, _ in gate.take_wakes()] == ["b"]
    assert gate.admit("b", "ns/b", NOBODY) is None


def test_the_fleet_is_read_from_the_statuses() -> None:
    version = catalog_version()
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    standings = [
        ("u1", standing_of("ns/a", {**ready, "catalog": {"version": "old", "upgrading": version}})),
        (
            "u2",
            standing_of(
                "ns/b",
                {
                    "catalog": {"upgrading": version},
                    "conditions": [{"type": "Stalled", "status": "True", "reason": "StackUpdateFailed"}],
                },
            ),
        ),
        ("u3", standing_of("canary/c", ready)),
        ("u4", standing_of("canary/d", {**ready, "catalog": {"version": version}})),
        ("u5", standing_of("canary/e", None)),  # not Ready: not waited for
        ("u6", standing_of("ns/f", {**ready, "catalog": {"version": "old", "upgrading": "older"}})),
    ]
    fleet = fleet_of(standings, version, Canaries("canary"))
    assert fleet == Fleet(frozenset({"u1"}), ("ns/b",), ("canary/c",))
    assert standing_of("ns/x", None) == Standing("ns/x", None, None, ready=False, stalled=False)


def spec() -> AWSConnectorSpec:
    return AWSConnectorSpec.model_validate(base_manifest()["spec"])


def written_with(template_hash: str, version: str | None) -> Target:
    status = AWSConnectorStatus(
        aws=AwsStatus(template_hash=template_hash),
        catalog=CatalogStatus(version=version) if version else None,
    )
    return Target("ns", "acme", "uid", 1, spec(), status, {})


@pytest.fixture
def another_catalog(tmp_path: Path) -> Iterator[Path]:
    yield changed_catalog(tmp_path / "catalog.json")
    use_catalog(None)


def test_a_new_catalog_has_a_new_version_and_changes_the_templates_it_reaches(another_catalog: Path) -> None:
    before, template = catalog_version(), Rendered(stack_template(spec())).sha256
    assert not catalog_changes(
        written_with(template, None)
    )  # nothing to change: no place in the rollout needed
    use_catalog(str(another_catalog))
    assert catalog_version() != before
    old = written_with(template, before)
    assert catalog_changes(old)
    assert not written(old, old.status)
    new = Rendered(stack_template(spec())).sha256
    assert new != template and written(old, written_with(new, before).status)
    use_catalog(None)
    assert catalog_version() == before and Rendered(stack_template(spec())).sha256 == template


def test_a_management_accounts_member_stackset_takes_part_in_the_rollout(another_catalog: Path) -> None:
    """An organization's members get the catalog's roles through the StackSet: a change there alone needs a place
    too, and the object is written only once the StackSet's operation is over."""
    manifest = base_manifest()["spec"]
    manifest["aws"] = {**manifest["aws"], "accountId": "444455556666", "organization": {}}
    org_spec = AWSConnectorSpec.model_validate(manifest)
    stack, members = Rendered(stack_template(org_spec)).sha256, Rendered(member_template(org_spec)).sha256
    before = catalog_version()
    status = AWSConnectorStatus(
        aws=AwsStatus(template_hash=stack),
        organization=OrganizationStatus(template_hash=members),
        catalog=CatalogStatus(version=before),
    )
    use_catalog(str(another_catalog))
    new_members = Rendered(member_template(org_spec)).sha256
    assert new_members != members
    # the management account's own stack written already, its members' StackSet not yet
    status.aws = AwsStatus(template_hash=Rendered(stack_template(org_spec)).sha256)
    target = Target("ns", "org", "uid", 1, org_spec, status, {})
    assert catalog_changes(target) and not written(target, status)
    status.organization = OrganizationStatus(template_hash=new_members, operation_id="op-1")
    assert not written(target, status)  # its operation still under way
    status.organization = OrganizationStatus(template_hash=new_members)
    assert written(target, status) and not catalog_changes(target)


def test_a_stall_that_is_not_the_writes_takes_the_object_out_of_the_rollout_not_the_fleet_with_it() -> None:
    """A tenant deleting its Secret, a grant withdrawn, a conflict: the object stalls, and it is not the catalog's
    doing. Its update is dropped (it takes the catalog whenever it recovers) and it halts nothing."""
    spec_ = spec()
    target = Target("ns", "acme", "uid", 1, spec_, AWSConnectorStatus(catalog=upgrading()), {})
    gone = Verdict("True", "CredentialsSecretMissing", "the Secret is gone")
    after = catalog_after(target, target.status, aws_ready=False, stalled=gone)
    assert after == CatalogStatus(version="old")
    kept = catalog_after(target, target.status, False, Verdict("True", "StackUpdateFailed", "rolled back"))
    assert kept == upgrading()
    gate, _ = rollout(batch=1, pause=0)
    assert gate.admit("a", "ns/a", NOBODY) is None
    status = AWSConnectorStatus(
        catalog=after,
        conditions=[
            Condition(
                type="Stalled", status="True", reason="CredentialsSecretMissing", last_transition_time=T
            )
        ],
    )
    gate.settled("a", "ns/a", upgrading(), status)
    assert not gate.halted
    assert gate.admit("b", "ns/b", NOBODY) is None  # its place was given back
    # and from the statuses: a stall for another reason is not a failed update
    raw = {
        "catalog": {"upgrading": catalog_version()},
        "conditions": [{"type": "Stalled", "status": "True", "reason": "NotAllowedByPolicy"}],
    }
    assert fleet_of([("a", standing_of("ns/a", raw))], catalog_version(), Canaries("")).failed == ()


def test_the_admin_may_tolerate_failures_and_a_failed_object_may_always_try_again() -> None:
    gate, _ = rollout(batch=5)
    gate.tolerated_failures = 1
    assert gate.admit("a", "ns/a", NOBODY) is None
    gate.settled("a", "ns/a", upgrading(), failed())
    assert gate.admit("b", "ns/b", NOBODY) is None and not gate.halted  # one failure tolerated
    assert gate.admit("c", "ns/c", NOBODY) is None
    gate.settled("c", "ns/c", upgrading(), failed())
    assert gate.admit("d", "ns/d", NOBODY) is not None and gate.halted  # the second halts
    assert gate.admit("a", "ns/a", NOBODY) is None  # a failed one's own retry is how a halt ends


def test_a_deleted_object_is_not_counted_again_from_an_older_view_of_the_fleet() -> None:
    gate, _ = rollout(batch=1, pause=0)
    stale = Fleet(frozenset({"d"}), (), ())  # read before "d" was deleted
    assert gate.admit("d", "ns/d", NOBODY) is None
    gate.forget("d")
    assert gate.admit("e", "ns/e", stale) is None  # the batch is free: "d" is gone for good


def test_terraform_objects_are_never_in_the_rollout() -> None:
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    standing = standing_of("canary/t", ready, terraform=True)
    assert fleet_of([("t", standing)], catalog_version(), Canaries("canary")) == NOBODY


def test_an_object_being_deleted_is_out_of_the_rollout_even_while_its_cleanup_is_blocked() -> None:
    """Deletion cannot be undone, and a cleanup can be blocked for as long as a tenant keeps its credentials broken:
    an object being deleted holds no place in a batch, halts nothing and is no canary to wait for, in any process
    (the fleet is read from the index, whose entry says it is being deleted)."""
    version = catalog_version()
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    blocked = {
        "catalog": {"version": "old", "upgrading": version},
        "conditions": [{"type": "Stalled", "status": "True", "reason": "CleanupBlocked"}],
    }
    write_failed = {
        "catalog": {"version": "old", "upgrading": version},
        "conditions": [{"type": "Stalled", "status": "True", "reason": "StackUpdateFailed"}],
    }
    standings = [
        ("u1", standing_of("ns/a", blocked, deleting=True)),
        ("u2", standing_of("ns/b", write_failed, deleting=True)),
        ("u3", standing_of("canary/c", ready, deleting=True)),
    ]
    assert fleet_of(standings, version, Canaries("canary")) == NOBODY
    assert fleet_of(
        [(u, replace(s, deleting=False)) for u, s in standings], version, Canaries("canary")
    ) == Fleet(frozenset({"u1"}), ("ns/b",), ("canary/c",))


def test_a_delegated_administrators_member_stackset_takes_part_in_the_rollout(another_catalog: Path) -> None:
    """From a delegated administrator the operator writes the member StackSet alone (the management account's stack
    is its administrators'): the StackSet's template says which catalog the object is on, and a change there needs a
    place. It used to be never in the rollout: updated at once everywhere, and never on the catalog, so a canary of
    this kind held every other object back for good."""
    manifest = base_manifest()["spec"]
    manifest["aws"] = {
        **manifest["aws"],
        "accountId": "444455556666",
        "organization": {"delegatedAdministratorAccountId": "777788889999"},
    }
    org_spec = AWSConnectorSpec.model_validate(manifest)
    members = Rendered(member_template(org_spec)).sha256
    status = AWSConnectorStatus(aws=AwsStatus(), organization=OrganizationStatus(template_hash=members))
    target = Target("ns", "org", "uid", 1, org_spec, status, {})
    assert written(target, status) and written_before(target)  # no stack of its own is needed
    assert catalog_after(target, status, True, None) == CatalogStatus(version=catalog_version())
    use_catalog(str(another_catalog))
    status.catalog = CatalogStatus(version="old")
    assert catalog_changes(target) and not written(target, status)
    status.organization = OrganizationStatus(template_hash=Rendered(member_template(org_spec)).sha256)
    assert written(target, status) and not catalog_changes(target)


def test_a_pass_that_ends_after_its_objects_deletion_began_does_not_take_its_place_or_halt_the_rollout() -> (
    None
):
    """Cleanup gives the place back as it begins; a pass admitted before may still be running, and its end (a failed
    update, say) must not put the object back into the batch or halt the rollout for it."""
    gate, _ = rollout(batch=1, pause=0)
    assert gate.admit("a", "ns/a", NOBODY) is None
    gate.forget("a")  # its deletion began
    gate.settled("a", "ns/a", upgrading(), failed())
    assert not gate.halted
    assert gate.admit("b", "ns/b", NOBODY) is None
