"""The Azure side of a pass: the connector (after the AWS side is ready) and its health.

The desired body comes from the spec and the stack's role ARNs, plus the owner mark as tags. One GET per pass; a PUT
only when the live body differs (read-only fields ignored). A connector that disappeared or changed while the spec
did not is drift: repaired, and reported as such. A connector of the wanted name that this object does not own
(another object's, another cluster's, an earlier object's of the same name, one made in the portal) is never written:
Stalled, naming what is there, unless the object asks to adopt it, it onboards the same AWS account and it is not
another live object's. One that carries this object's mark is written only when the operator's record agrees
(``proofs.py``): created after the object's first write to Azure, or adopted.
"""

from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..api.names import ANNOTATION_ADOPT
from ..api.status import AzureStatus, HealthIssue, HealthStatus, MemberAccount, OrganizationStatus
from ..azure.connector import Connectors, HealthIssueReport, HealthReport, ObservedConnector, comparable
from ..errors import CloudError, RetryableError, TerminalError
from ..ownership import describe_owner
from ..render.connector import connector_body
from ..render.document import Rendered
from . import conditions, prerequisites
from .aws_side import live_holder
from .conditions import Verdict
from .ledger import UNRECORDED_LEDGER, Ledger
from .model import Event, Target

# Member accounts named on status: an organization of thousands would otherwise outgrow the object's size limit (etcd
# takes at most 1.5 MiB), and every status write would then fail; memberConnectors has the count.
MEMBERS_SHOWN = 100


@dataclass
class AzureResult:
    verdict: Verdict
    health: Verdict
    events: list[Event] = field(default_factory=list)
    prerequisites: Verdict | None = None  # None: not checked in this pass (the condition keeps what it said)


def health_verdict(report: HealthReport) -> Verdict:
    if report.status == "Healthy":
        return Verdict("True", "Healthy", "Defender reports the connector healthy")
    if report.status == "NotHealthy":
        details = "; ".join(
            f"{i.name or i.key}: {i.description or ''}{' Remediation: ' + i.remediation if i.remediation else ''}".strip()
            for i in report.issues
        )
        return Verdict("False", "NotHealthy", details or "Defender reports the connector not healthy")
    if report.status == "NotApplicable":
        return Verdict("True", "NotApplicable", "Defender has no health checks for this connector")
    return Verdict("Unknown", "NotEvaluated", "Defender has not evaluated the connector yet")


def check_owned(target: Target, observed: ObservedConnector) -> None:
    """Refuse a connector this object does not own, unless it asked to adopt it, it onboards the same account and
    it is not another live object's."""
    if target.owner.owns(observed.tags):
        return
    name, rg = target.connector_name, target.spec.azure.resource_group
    azure = target.spec.azure
    holder = live_holder(target, f"connector/{azure.subscription_id.lower()}/{rg.lower()}/{name.lower()}")
    if target.adopt and observed.account == target.spec.aws.account_id and holder is None:
        return
    what = f"security connector {name} in resource group {rg} already exists for AWS account {observed.account or '?'}"
    if target.adopt and holder is not None:
        raise TerminalError(
            "ConnectorOwnedElsewhere",
            f"{what} and belongs to AWSConnector {holder}, which exists: adoption never takes over another live "
            "object's resources; nothing was written. Choose another spec.azure.connectorName.",
        )
    if target.adopt:
        raise TerminalError(
            "ConnectorOwnedElsewhere",
            f"{what}, not {target.spec.aws.account_id}; adoption is only for a connector of the same account. "
            "Choose another spec.azure.connectorName.",
        )
    raise TerminalError(
        "ConnectorOwnedElsewhere",
        f"{what} and {describe_owner(observed.tags, target.owner)}; nothing was written. Choose another "
        f"spec.azure.connectorName, or, if it is the same onboarding, annotate the object {ANNOTATION_ADOPT}=true "
        "to take it over.",
    )


def desired_body(target: Target, role_arns: dict[str, str]) -> dict[str, Any]:
    """The connector body the spec renders to, with the owner mark added to its tags."""
    body = connector_body(target.spec, role_arns)
    body["tags"] = dict(sorted({**body.get("tags", {}), **target.owner.tags()}.items()))
    return body


def report_of(health: HealthStatus) -> HealthReport:
    """The health report as last read, from the status."""
    return HealthReport(
        status=health.status,
        issues=[HealthIssueReport(i.key, i.name, i.description, i.remediation) for i in health.issues],
        last_scanned=health.last_scanned,
    )


def reconcile_azure(
    target: Target,
    connectors: Connectors,
    status: AzureStatus,
    role_arns: dict[str, str],
    organization: OrganizationStatus | None = None,
    ledger: Ledger = UNRECORDED_LEDGER,
) -> AzureResult:
    events: list[Event] = []
    spec, name = target.spec, target.connector_name
    rg = spec.azure.resource_group
    desired = desired_body(target, role_arns)
    desired_hash = Rendered(desired).sha256
    status.connector_name = name
    observed = connectors.observe(rg, name)
    adopting = observed is not None and not target.owner.owns(observed.tags)
    if observed is not None:
        check_owned(target, observed)
    if observed is None or comparable(observed.body) != comparable(desired):
        # Drift: the connector we wrote is gone, or differs although the body we want is the one we last wrote.
        drifted = status.connector_id is not None if observed is None else status.applied_hash == desired_hash
        if observed is not None and adopting:
            ledger.adopted(observed.id)
        elif observed is not None:
            ledger.proof("azure").check(observed.created, observed.id, f"security connector {observed.id}")
        written = connectors.put(rg, name, desired, observed.etag if observed else None)
        if adopting:
            events.append(Event("Normal", "ConnectorAdopted", f"took over security connector {written.id}"))
        elif drifted:
            what = "deleted" if observed is None else "changed"
            message = f"connector {name} was {what} outside the operator; put it back"
            events.append(Event("Warning", "DriftRepaired", message))
            metrics.DRIFT_REPAIRS.labels("connector").inc()
        elif observed is None:
            events.append(Event("Normal", "ConnectorCreated", f"created security connector {written.id}"))
        else:
            events.append(Event("Normal", "ConnectorUpdated", f"updated security connector {written.id}"))
        observed = written
    status.connector_id, status.etag, status.applied_hash = observed.id, observed.etag, desired_hash
    status.trial_end_date = observed.trial_end_date or status.trial_end_date
    if organization is not None:
        members, organization.member_connector_scope = connectors.members_of(spec.aws.account_id, rg)
        organization.member_connectors = len(members)
        organization.members = [
            MemberAccount(account_id=a, connector_id=c) for a, c in sorted(members.items())[:MEMBERS_SHOWN]
        ]
    if connectors.dry_run:
        return AzureResult(
            Verdict("True", "ConnectorReady", f"connector {name}"), Verdict("Unknown", "NotEvaluated"), events
        )
    checked = _prerequisites(target, connectors)
    if not target.deep and status.health is not None:  # health is read on deep passes only
        return AzureResult(
            Verdict("True", "ConnectorReady", f"connector {status.connector_id}"),
            health_verdict(report_of(status.health)),
            events,
            checked,
        )
    report = connectors.health(rg, name)
    status.health = HealthStatus(
        status=report.status,
        issues=[
            HealthIssue(key=i.key, name=i.name, description=i.description, remediation=i.remediation)
            for i in report.issues
        ],
        last_scanned=report.last_scanned,
    )
    return AzureResult(
        Verdict("True", "ConnectorReady", f"connector {status.connector_id}"),
        health_verdict(report),
        events,
        checked,
    )


def _prerequisites(target: Target, connectors: Connectors) -> Verdict | None:
    """The Prerequisites condition, read on deep passes (and on the first pass that reaches the connector): the
    subscription's Defender plans change rarely, and by hand."""
    if not target.deep and conditions.get(target.status.conditions, "Prerequisites") is not None:
        return None
    try:
        return prerequisites.verdict(target.spec, connectors.pricing_tiers())
    except (
        RetryableError
    ):  # throttled or unavailable: what the condition said still stands, asked again next time
        return None
    except CloudError as exc:  # refused: said without ARM's text, which names the caller's ids
        return prerequisites.unreadable(exc.reason)
