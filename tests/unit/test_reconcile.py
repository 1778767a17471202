"""The pure parts of the reconciler: conditions (kstatus), transition events, health, drift comparison."""

import re
from typing import Any

import pytest

from defender_operator.api.names import ANNOTATION_ADOPT, ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT
from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.api.status import AWSConnectorStatus, AzureStatus, FirstCloudWrite
from defender_operator.aws.stack import idempotency_token
from defender_operator.azure.connector import HealthIssueReport, HealthReport, ObservedConnector, comparable
from defender_operator.errors import TerminalError
from defender_operator.reconcile import conditions
from defender_operator.reconcile.aws_side import role_arns_from_outputs
from defender_operator.reconcile.azure_side import check_owned, desired_body, health_verdict
from defender_operator.reconcile.conditions import Verdict
from defender_operator.reconcile.deletion import released_by_orphan
from defender_operator.reconcile.engine import (
    _told,
    _transition_events,
    plans_summary,
    stalled_requeue,
    writes_ahead,
)
from defender_operator.reconcile.journal import unwritten
from defender_operator.reconcile.model import Event, Target
from defender_operator.reconcile.tenancy import Admission
from defender_operator.render.cloudformation import stack_template
from defender_operator.render.connector import connector_body, default_role_arns
from defender_operator.settings import Settings
from tests.support.manifests import base_manifest

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"
READY = Verdict("True", "StackReady")


def spec(**plans: Any) -> AWSConnectorSpec:
    manifest = base_manifest()["spec"]
    manifest["plans"] = plans
    return AWSConnectorSpec.model_validate(manifest)


def target(status: AWSConnectorStatus | None = None, **annotations: str) -> Target:
    return Target("ns", "acme", "uid", 2, spec(), status or AWSConnectorStatus(), annotations)


def as_dict(conds: list[Any]) -> dict[str, tuple[str, str]]:
    return {c.type: (c.status, c.reason) for c in conds}


def test_ready_needs_both_sides() -> None:
    both = conditions.summarize([], READY, Verdict("True", "ConnectorReady"), None, 2, T0)
    assert as_dict(both)["Ready"] == ("True", "Onboarded")
    assert as_dict(both)["Reconciling"] == ("False", "Idle") and as_dict(both)["Stalled"] == (
        "False",
        "NoError",
    )
    waiting = conditions.summarize(
        [], Verdict("False", "StackCreating", "creating"), Verdict("Unknown", "WaitingForAWS"), None, 2, T0
    )
    assert as_dict(waiting)["Ready"] == ("False", "StackCreating")
    assert as_dict(waiting)["Reconciling"] == ("True", "StackCreating")
    assert all(c.observed_generation == 2 for c in waiting)


def test_stalled_is_failed_for_kstatus_and_not_reconciling() -> None:
    stalled = Verdict("True", "AccountMismatch", "wrong account")
    out = as_dict(
        conditions.summarize(
            [], Verdict("False", "AccountMismatch"), Verdict("Unknown", "WaitingForAWS"), stalled, 2, T0
        )
    )
    assert out["Stalled"] == ("True", "AccountMismatch")
    assert out["Ready"] == ("False", "AccountMismatch")
    assert out["Reconciling"] == ("False", "Idle")


def test_transition_time_changes_only_with_the_status() -> None:
    first = conditions.put([], "AWSReady", Verdict("False", "StackCreating"), 1, T0)
    same_status = conditions.put(first, "AWSReady", Verdict("False", "StackInProgress"), 1, T1)
    assert same_status[0].last_transition_time == T0 and same_status[0].reason == "StackInProgress"
    flipped = conditions.put(same_status, "AWSReady", READY, 1, T1)
    assert flipped[0].last_transition_time == T1


def test_conditions_have_a_stable_order() -> None:
    out = conditions.summarize([], READY, READY, None, 1, T0)
    assert [c.type for c in out] == ["Ready", "Reconciling", "Stalled", "AWSReady", "AzureReady"]


def status_with(*verdicts: tuple[str, Verdict]) -> AWSConnectorStatus:
    conds: list[Any] = []
    for type_, verdict in verdicts:
        conds = conditions.put(conds, type_, verdict, 1, T0)
    return AWSConnectorStatus(conditions=conds)


def test_events_only_on_transitions() -> None:
    before = status_with(
        ("Ready", Verdict("False", "StackCreating")), ("Stalled", Verdict("False", "NoError"))
    )
    after = status_with(
        ("Ready", Verdict("True", "Onboarded", "in place")), ("Stalled", Verdict("False", "NoError"))
    )
    assert [(e.type, e.reason) for e in _transition_events(before, after)] == [("Normal", "Ready")]
    assert _transition_events(after, after) == []
    stalled = status_with(
        ("Ready", Verdict("False", "StackCreateFailed")),
        ("Stalled", Verdict("True", "StackCreateFailed", "role exists")),
    )
    assert [(e.type, e.reason, e.message) for e in _transition_events(before, stalled)] == [
        ("Warning", "StackCreateFailed", "role exists")
    ]
    assert _transition_events(stalled, stalled) == []
    unhealthy = status_with(("Healthy", Verdict("False", "NotHealthy", "role cannot be assumed")))
    healthy = status_with(("Healthy", Verdict("True", "Healthy", "fine")))
    assert [e.reason for e in _transition_events(healthy, unhealthy)] == ["NotHealthy"]
    assert [e.reason for e in _transition_events(unhealthy, healthy)] == ["Healthy"]


def test_health_verdicts_carry_defender_text() -> None:
    issue = HealthIssueReport("MissingRole", "Role missing", "CspmMonitorAws is gone", "Redeploy the stack")
    verdict = health_verdict(HealthReport("NotHealthy", [issue], None))
    assert (
        verdict.status == "False"
        and "CspmMonitorAws is gone" in verdict.message
        and "Redeploy the stack" in verdict.message
    )
    assert health_verdict(HealthReport("Healthy", [], None)).status == "True"
    assert health_verdict(HealthReport("Unknown", [], None)).status == "Unknown"


def test_connector_comparison_ignores_read_only_fields_and_order() -> None:
    desired = connector_body(spec(cspm={"enabled": True}))
    live = comparable(desired)
    served = {
        **desired,
        "id": "/subscriptions/x",
        "name": "acme",
        "type": "Microsoft.Security/securityConnectors",
        "etag": "e",
        "systemData": {},
        "kind": "",
        "properties": {
            **desired["properties"],
            "hierarchyIdentifierTrialEndDate": T0,
            "offerings": [{**o, "description": "d"} for o in reversed(desired["properties"]["offerings"])],
            "environmentData": {**desired["properties"]["environmentData"], "accountName": "aws-1"},
        },
    }
    assert comparable(served) == live
    changed = {
        **served,
        "properties": {
            **served["properties"],
            "environmentData": {**served["properties"]["environmentData"], "scanInterval": 24},
        },
    }
    assert comparable(changed) != live


def test_role_arns_come_from_the_outputs_of_every_needed_role() -> None:
    t = target()
    arns = {key: f"arn:aws:iam::111122223333:role/{key}" for key in stack_template(t.spec)["Outputs"]}
    assert role_arns_from_outputs(t, arns) is not None
    assert role_arns_from_outputs(t, dict(list(arns.items())[1:])) is None  # one missing


def test_annotations() -> None:
    assert target(**{ANNOTATION_PAUSED: "true"}).paused and not target(**{ANNOTATION_PAUSED: "false"}).paused
    requested = target(**{ANNOTATION_RECONCILE_REQUESTED_AT: "now"})
    assert requested.reconcile_requested
    handled = target(
        AWSConnectorStatus(last_handled_reconcile_at="now"), **{ANNOTATION_RECONCILE_REQUESTED_AT: "now"}
    )
    assert not handled.reconcile_requested


def test_plans_summary_for_printer_column() -> None:
    assert plans_summary(spec()) == "CSPM,Servers(P2),Containers,Databases"
    assert (
        plans_summary(
            spec(
                cspm={"enabled": True},
                servers={"subPlan": "P1"},
                containers={"enabled": False},
                databases={"enabled": False},
            )
        )
        == "DefenderCSPM,Servers(P1)"
    )


def test_idempotency_tokens_are_fresh_per_attempt_and_valid() -> None:
    tokens = {idempotency_token("update") for _ in range(100)}
    assert len(tokens) == 100  # a new attempt never replays an earlier request's outcome
    # ClientRequestToken: 1-128 characters, [a-zA-Z0-9][-a-zA-Z0-9]* (API_CreateStack.html).
    assert all(re.fullmatch(r"[a-zA-Z0-9][-a-zA-Z0-9]{0,127}", t) for t in tokens)


def test_the_connector_carries_the_owner_mark_and_adoption_needs_the_same_account() -> None:
    mine = target()
    body = desired_body(mine, default_role_arns(mine.spec))
    assert body["tags"]["defender-operator-owner"] == f"default/{mine.namespace}/{mine.name}"
    check_owned(mine, ObservedConnector("id", '"e"', body))  # ours: fine
    foreign = ObservedConnector("id", '"e"', {"properties": {"hierarchyIdentifier": "999988887777"}})
    with pytest.raises(TerminalError, match="not made by defender-operator") as refused:
        check_owned(mine, foreign)
    assert refused.value.reason == "ConnectorOwnedElsewhere"
    adopting = target(**{ANNOTATION_ADOPT: "true"})
    with pytest.raises(TerminalError, match="adoption is only"):
        check_owned(adopting, foreign)
    same_account = ObservedConnector(
        "id", '"e"', {"properties": {"hierarchyIdentifier": adopting.spec.aws.account_id}}
    )
    check_owned(adopting, same_account)


def test_a_new_generation_records_its_first_aws_write_ahead_only_when_nothing_stops_it_first() -> None:
    allowed = Admission("Default")
    assert writes_ahead(target(), None, allowed) == ("aws",)
    assert writes_ahead(target(), None, None) == ("aws",)  # not checked (the plan command)
    recorded = AWSConnectorStatus(first_cloud_write=FirstCloudWrite(aws=T0))
    assert writes_ahead(target(recorded), None, allowed) == ()  # an earlier pass's record stands
    azure_only = AWSConnectorStatus(first_cloud_write=FirstCloudWrite(azure=T0))
    assert writes_ahead(target(azure_only), None, allowed) == ("aws",)
    assert writes_ahead(target(), "ns/other", allowed) == ()  # another object's claim: no write follows
    assert writes_ahead(target(), None, Admission(None, "not allowed")) == ()
    assert writes_ahead(target(**{ANNOTATION_PAUSED: "true"}), None, allowed) == ()
    manifest = base_manifest()["spec"]
    manifest["deployment"] = {"method": "Terraform"}  # the roles are Terraform's: AWS is only read
    terraform = Target(
        "ns", "acme", "uid", 2, AWSConnectorSpec.model_validate(manifest), AWSConnectorStatus(), {}
    )
    assert writes_ahead(terraform, None, allowed) == ()


def test_a_blocked_deletion_is_let_go_by_orphan_whatever_else_the_spec_holds() -> None:
    """The documented way out of a blocked cleanup is read from the raw spec: a spec the model refuses (a tag key the
    CRD accepts and the parser does not) cannot stand between a delete and Orphan."""
    spec = base_manifest()["spec"]
    unparseable = {**spec, "deletionPolicy": "Orphan", "azure": {**spec["azure"], "tags": {"k" * 129: "v"}}}
    with pytest.raises(ValueError, match="tags"):
        AWSConnectorSpec.model_validate(unparseable)
    assert released_by_orphan(blocked=True, deleting=True, spec=unparseable)
    assert not released_by_orphan(blocked=False, deleting=True, spec=unparseable)  # cleanup may still succeed
    assert not released_by_orphan(blocked=True, deleting=False, spec=unparseable)
    assert not released_by_orphan(
        blocked=True, deleting=True, spec={**unparseable, "deletionPolicy": "Delete"}
    )


@pytest.mark.parametrize(
    ("reason", "lasted", "again"),
    [
        ("AWSAccessDenied", 0, 15.0),  # at once: in_progress_seconds
        ("AWSAccessDenied", 10, 15.0),
        ("AzureAccessDenied", 40, 40.0),  # as long after as it has lasted
        ("AWSCredentialsRejected", 200, 200.0),
        ("AzureCredentialsRejected", 3600, 300.0),  # never less often than resync_seconds
        ("NotAllowedByPolicy", 0, 300.0),  # not access that may be on its way: resync_seconds
        ("InvalidSpec", 40, 300.0),
    ],
)
def test_a_refusal_of_access_is_looked_at_again_soon_then_less_often(
    reason: str, lasted: int, again: float
) -> None:
    """IAM and Entra ID changes take seconds to minutes to be in effect everywhere, and infrastructure as code makes the
    access and the object together: such a refusal is looked at again after as long as it has lasted so far."""
    settings = Settings(resync_seconds=300, in_progress_seconds=15)
    since = "2026-12-06T10:00:00Z"
    stamp = (
        f"2026-12-06T10:{lasted // 60:02d}:{lasted % 60:02d}Z" if lasted < 3600 else "2026-12-06T11:00:00Z"
    )
    assert stalled_requeue(reason, since, stamp, settings) == again


def test_a_first_onboarding_posts_its_warnings_and_what_it_takes_over_not_what_it_makes() -> None:
    made = [
        Event("Normal", "IdentityProviderCreated", "created identity provider"),
        Event("Normal", "StackCreating", "creating stack"),
        Event("Normal", "ConnectorCreated", "created security connector"),
        Event("Normal", "Ready", "onboarded"),
    ]
    told = [
        Event("Warning", "PrerequisitesMissing", "plans off"),
        Event("Normal", "IdentityProviderShared", "added audiences"),
        Event("Normal", "ConnectorAdopted", "took over"),
    ]
    assert _told(AWSConnectorStatus(), made + told) == told
    waiting = AWSConnectorStatus(
        azure=AzureStatus(connector_name="c")
    )  # a stack still being made: no connector
    assert _told(waiting, made + told) == told
    onboarded = AWSConnectorStatus(azure=AzureStatus(connector_id="/subscriptions/s/providers/x/c"))
    assert _told(onboarded, made + told) == made + told  # a change to an onboarding that exists


def test_a_status_is_unwritten_until_the_operator_writes_anything_in_it() -> None:
    assert unwritten(AWSConnectorStatus.model_validate({}))
    assert unwritten(AWSConnectorStatus.model_validate({"observedGeneration": 0}))  # the CRD's default
    assert not unwritten(AWSConnectorStatus.model_validate({"observedGeneration": 1}))
    assert not unwritten(AWSConnectorStatus.model_validate({"firstCloudWrite": {"aws": T0}}))
    assert not unwritten(AWSConnectorStatus(plans="CSPM"))
