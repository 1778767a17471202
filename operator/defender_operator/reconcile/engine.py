"""One reconcile pass: observe both clouds, act on differences (AWS first, then Azure), and build the status.

Called on create, on spec change, on resume, on a jittered timer and when a reconcile is requested; it trusts
nothing from memory except what the status records (the durable state of multi-pass work such as drift repair).
"""

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from ..api.spec import AWSConnectorSpec
from ..api.status import (
    AWSConnectorStatus,
    AwsStatus,
    AzureStatus,
    EksStatus,
    OrganizationStatus,
)
from ..errors import CloudError, RetryableError, TerminalError
from ..render.catalog import required_roles
from ..settings import Settings
from . import conditions, prerequisites, role_names, rollout
from .aws_side import (
    AwsAccount,
    AwsResult,
    delegated_management,
    observe_organization,
    observe_terraform,
    reconcile_aws,
    reconcile_organization,
)
from .azure_side import AzureResult, reconcile_azure
from .claims import conflict_message
from .clouds import Clouds
from .conditions import Verdict
from .eks_side import discovery_on, made_entries, reconcile_eks, regions_of, remove_entries
from .ledger import UNRECORDED_LEDGER, CloudName, Ledger
from .model import Event, Outcome, Result, Target
from .proofs import moment
from .tenancy import Admission

# Refusals of access that may have been given a moment ago: IAM's changes take seconds to be in effect everywhere (AWS
# IAM User Guide, "Troubleshoot IAM", "Changes that I make are not always immediately visible"), Azure role
# assignments up to 10 minutes (Microsoft Learn, "Troubleshoot Azure RBAC"), and infrastructure as code commonly makes
# the access and the AWSConnector together (docs/design-decisions.md).
ACCESS_REFUSED = frozenset(
    {"AWSAccessDenied", "AWSCredentialsRejected", "AzureAccessDenied", "AzureCredentialsRejected"}
)

WAITING_FOR_AWS = Verdict("Unknown", "WaitingForAWS", "the connector is written once the AWS roles exist")
NOT_EVALUATED = Verdict("Unknown", "NotEvaluated", "Defender has not evaluated the connector yet")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def stalled_requeue(reason: str, stalled_since: str, stamp: str, settings: Settings) -> float:
    """How soon a Stalled object is looked at again: after resyncSeconds (the cause may be fixed by then), except a
    refusal of access, looked at again after as long as it has lasted so far (from inProgressSeconds, doubling, at
    most resyncSeconds): access given together with the object is used within seconds, and one that is missing
    costs a few passes more. ``stalled_since``: the Stalled condition's lastTransitionTime."""
    if reason not in ACCESS_REFUSED:
        return settings.resync_seconds
    now_, since = moment(stamp), moment(stalled_since)
    lasted = (now_ - since).total_seconds() if now_ is not None and since is not None else 0.0
    return min(settings.resync_seconds, max(settings.in_progress_seconds, lasted))


def plans_summary(spec: AWSConnectorSpec) -> str:
    p = spec.plans
    enabled = ["CSPM" if not p.cspm.enabled else "DefenderCSPM"]
    if p.servers.enabled:
        enabled.append(f"Servers({p.servers.sub_plan})")
    if p.containers.enabled:
        enabled.append("Containers")
    if p.databases.enabled:
        enabled.append("Databases")
    return ",".join(enabled)


def _transition_events(before: AWSConnectorStatus, after: AWSConnectorStatus) -> list[Event]:
    """Events for transitions only (became Ready, became Stalled, health changed), so a steady object is quiet."""

    def pair(type_: str) -> tuple[Any, Any]:
        return conditions.get(before.conditions, type_), conditions.get(after.conditions, type_)

    events = []
    old, new = pair("Ready")
    if new and new.status == "True" and (old is None or old.status != "True"):
        events.append(Event("Normal", "Ready", new.message))
    old, new = pair("Stalled")
    if new and new.status == "True" and (old is None or (old.status, old.reason) != ("True", new.reason)):
        events.append(Event("Warning", new.reason, new.message))
    old, new = pair("Prerequisites")
    if new and new.status == "False" and (old is None or (old.status, old.message) != ("False", new.message)):
        events.append(Event("Warning", "PrerequisitesMissing", new.message))
    elif new and new.status == "True" and old is not None and old.status == "False":
        events.append(Event("Normal", "PrerequisitesMet", new.message))
    old, new = pair("Healthy")
    if new and new.status == "False" and (old is None or (old.status, old.message) != ("False", new.message)):
        events.append(Event("Warning", "NotHealthy", new.message))
    elif new and new.status == "True" and old is not None and old.status == "False":
        events.append(Event("Normal", "Healthy", new.message))
    return events


# what a first onboarding makes, and its first Ready: told by the status alone (``_told``)
FIRST_ONBOARDING_QUIET = frozenset(
    {
        "IdentityProviderCreated",
        "StackCreating",
        "StackSetCreated",
        "ConnectorCreated",
        "Ready",
    }
)


def _told(before: AWSConnectorStatus, events: list[Event]) -> list[Event]:
    """The Events a pass posts. Until the object's connector first exists (a first onboarding), the status tells what
    is being made and when it is Ready, and each Event would be one more write to the API server for every new object,
    many at once when a backlog starts (four of a new object's ten writes were these): its Warnings are posted, what
    it takes over or shares, and the access it gives to EKS clusters, not what it creates. Every change to an
    onboarding that exists is an Event."""
    if before.azure is not None and before.azure.connector_id:
        return events
    return [e for e in events if e.type == "Warning" or e.reason not in FIRST_ONBOARDING_QUIET]


def _with_organization(account: AwsResult, members: AwsResult) -> AwsResult:
    """The management account's own result, with the members' events and the sooner requeue; the members' state goes
    to its own condition (MembersReady), so Ready says whether the management account itself is onboarded."""
    requeues = [r for r in (account.requeue_after, members.requeue_after) if r is not None]
    return AwsResult(
        account.verdict,
        account.stalled or members.stalled,
        account.role_arns,
        account.events + members.events,
        requeue_after=min(requeues) if requeues else None,
    )


def _nodes(target: Target, account: AwsAccount) -> Verdict | None:
    """Arc auto-provisioning's prerequisite in the spec's regions: Systems Manager manages the running instances.
    None when AWS did not answer (throttled, unavailable): the condition keeps what it said, as for the plans."""
    assert account.nodes is not None
    found, unreadable = [], []
    for region in regions_of(target.spec, account.partition, "ssm"):
        try:
            nodes = account.nodes.region(region)
        except RetryableError:
            return None
        except TerminalError as exc:
            if exc.reason in ("AWSAccessDenied", "AWSCredentialsRejected"):  # the same in every region
                return prerequisites.nodes_unreadable(exc.reason)
            unreadable.append(region)
            continue
        if nodes is not None:  # None: a region the account has not enabled
            found.append(nodes)
    return prerequisites.nodes_verdict(found, unreadable)


def _ciem(target: Target, clouds: Clouds) -> Verdict | None:
    """CIEM's prerequisite: its Entra application, read with the object's Azure identity in its tenant (None: Graph
    did not answer; the condition keeps what it said)."""
    subject = target.spec.plans.cspm.ciem.oidc_subject
    assert subject is not None
    try:
        found = clouds.graph(target).service_principal(subject)
    except RetryableError:
        return None
    except CloudError as exc:
        return prerequisites.ciem_unreadable(exc.reason)
    return prerequisites.ciem_verdict(target.spec, found)


def _eks(
    target: Target, account: AwsAccount, status: AWSConnectorStatus, ledger: Ledger
) -> tuple[list[Event], bool]:
    """EKS reachability on deep passes, once onboarding is Ready: its events, and whether it failed for a reason
    that passes (throttling, 5xx, dropped connections). Its failures stay on status.eks; for one that passes the
    next deep pass comes soon (``Outcome.eks_retry``), not on the deep check's interval (the campaign's seed 68051:
    a new object was Ready with an error and no access entry long after EKS answered again)."""
    if not discovery_on(target.spec):
        # Turned off: the entries made for it go, as with any role it no longer needs. Those the status shows, and,
        # on a deep pass (the one that meets the change), those the record names: the record is the authority, and
        # a status can lose them (written from a copy older than the pass that made them: the campaign's seed
        # 67071, where the entry then stayed for good with the object Ready).
        events: list[Event] = []
        record = ledger.recorded() if made_entries(status.eks) or target.deep else None
        if made_entries(status.eks) or (record is not None and (record.eks_entries or record.eks_regions)):
            regions = sorted(
                {*regions_of(target.spec, account.partition), *(record.eks_regions if record else [])}
            )
            try:
                events = remove_entries(
                    target.spec,
                    target.owner,
                    account.eks,
                    account.partition,
                    account.account,
                    regions,
                    ledger.proof("aws"),
                    record,
                )
            except CloudError as exc:
                status.eks = (status.eks or EksStatus()).model_copy(update={"error": exc.message})
                return [], exc.retryable
            ledger.eks_regions_cleared(regions)
        status.eks = None
        return events, False
    if not target.deep and status.eks is not None:
        return [], False
    try:
        result = reconcile_eks(
            target.spec, target.owner, account.eks, account.partition, account.account, ledger
        )
    except CloudError as exc:
        status.eks = (status.eks or EksStatus()).model_copy(update={"error": exc.message})
        return [], exc.retryable
    status.eks = result.status
    return result.events, False


def writes_ahead(
    target: Target, conflict_with: str | None, admission: Admission | None
) -> tuple[CloudName, ...]:
    """The cloud whose first write a new generation's pass can record in its announcement: AWS, when the object has
    never written there and nothing found so far stops the pass before writing (a refusal by policy, another object's
    claim on the account, Terraform's roles). One status write then says both "a new generation" and "a write may
    follow"; if the pass ends without one, its result withdraws the record (``WriteJournal``). Azure is not recorded
    ahead: its first write follows a stack that real CloudFormation takes minutes to create, a later pass."""
    if target.paused or conflict_with or (admission is not None and admission.refusal):
        return ()
    if target.spec.deployment.method == "Terraform":
        return ()
    written = target.status.first_cloud_write
    return () if written is not None and written.aws is not None else ("aws",)


def reconcile(
    target: Target,
    clouds: Clouds,
    settings: Settings,
    conflict_with: str | None = None,
    ledger: Ledger = UNRECORDED_LEDGER,
    admission: Admission | None = None,
) -> Outcome:
    """One pass. ``ledger(cloud)`` wraps every change in a cloud (the caller records the first durably, so cleanup
    knows whether anything can be left behind there, and keeps the record that proves ownership). ``admission`` is the tenancy decision, made before any cloud
    call (None: not checked, as in ``defender-operator plan``, which runs with the user's own credentials)."""
    status = target.status.model_copy(deep=True)
    names = role_names.resolve(target.spec, target.status)
    target = replace(target, spec=role_names.with_names(target.spec, names))
    status.plans = plans_summary(target.spec)
    if target.paused:
        status.conditions = conditions.paused(status.conditions, target.generation, now())
        status.observed_generation = target.generation
        return Outcome(status=status, events=[], requeue_after=settings.resync_seconds, result="success")

    events: list[Event] = []
    aws = AwsResult(Verdict("Unknown", "Observing"))
    azure: AzureResult | None = None
    stalled: Verdict | None = None
    result: Result = "success"
    requeue = settings.resync_seconds
    stage = "aws"
    eks_retry = False
    members: Verdict | None = None  # the member StackSet (management accounts)
    account: AwsAccount | None = None
    delegated = target.spec.aws.delegated_administrator is not None
    if admission is not None:
        status.allowed_by = admission.allowed_by
    if admission is not None and admission.refusal:
        stalled = Verdict("True", "NotAllowedByPolicy", admission.refusal)
        aws = AwsResult(Verdict("False", "NotAllowedByPolicy", admission.refusal))
    elif conflict_with:
        message = conflict_message(
            conflict_with, target.key, target.spec.aws.account_id, target.spec.azure.subscription_id
        )
        stalled = Verdict("True", "ConnectorConflict", message)
        aws = AwsResult(Verdict("False", "ConnectorConflict", message))
    else:
        try:
            status.aws = status.aws or AwsStatus()
            status.aws.role_names = {key: names[key] for key in required_roles(target.spec)}
            account = clouds.aws(
                target, ledger, admission.allows_account if admission is not None else lambda a: True
            )
            terraform = target.spec.deployment.method == "Terraform"
            if terraform:
                aws = observe_terraform(target, account, status.aws)
            elif target.spec.aws.delegated_administrator:
                aws = delegated_management(target, account.partition, status.aws)
            else:
                aws = reconcile_aws(target, account, status.aws, settings, ledger)
            if account.stacksets is not None and aws.verdict.status == "True" and aws.stalled is None:
                status.organization = status.organization or OrganizationStatus()
                members_result = (
                    observe_organization(target, account.stacksets, status.organization, settings)
                    if terraform
                    else reconcile_organization(
                        target, account.stacksets, status.organization, settings, account.members, ledger
                    )
                )
                members = members_result.verdict
                aws = _with_organization(aws, members_result)
            events += aws.events
            stalled = aws.stalled
            if aws.requeue_after is not None:
                requeue, result = aws.requeue_after, "requeue_after"
            if aws.role_arns is not None and aws.stalled is None:
                stage = "azure"
                status.azure = status.azure or AzureStatus()
                azure = reconcile_azure(
                    target,
                    clouds.azure(target, ledger),
                    status.azure,
                    aws.role_arns,
                    status.organization,
                    ledger,
                )
                events += azure.events
        except CloudError as exc:
            verdict = Verdict("False", exc.reason, exc.message)
            if stage == "aws":
                aws = AwsResult(verdict)
            else:
                azure = AzureResult(verdict, NOT_EVALUATED)
            if isinstance(exc, RetryableError):
                result = "error"
            else:
                stalled, result = Verdict("True", exc.reason, exc.message), "terminal"

    # EKS clusters of the management account are out of reach of a delegated administrator's credentials
    if account is not None and azure is not None and azure.verdict.status == "True" and not delegated:
        eks_events, eks_retry = _eks(target, account, status, ledger)
        events += eks_events
    if target.spec.deployment.method != "Terraform":
        status.catalog = rollout.catalog_after(target, status, aws.verdict.status == "True", stalled)
    azure_verdict = azure.verdict if azure else WAITING_FOR_AWS
    stamp = now()
    status.conditions = conditions.summarize(
        status.conditions, aws.verdict, azure_verdict, stalled, target.generation, stamp
    )
    status.conditions = conditions.ordered(
        conditions.put(
            [c for c in status.conditions if c.type != "Paused"],
            "Healthy",
            azure.health if azure else NOT_EVALUATED,
            target.generation,
            stamp,
        )
    )
    if members is not None:
        status.conditions = conditions.members(status.conditions, members, target.generation, stamp)
    # read when the subscription's plans are (deep passes); a delegated administrator cannot reach them
    arc = (
        account is not None
        and account.nodes is not None
        and not delegated
        and prerequisites.arc_on(target.spec)
    )
    if azure is not None and azure.prerequisites is not None and arc:
        assert account is not None
        nodes = _nodes(target, account)
        azure.prerequisites = None if nodes is None else prerequisites.combined(azure.prerequisites, nodes)
    if azure is not None and azure.prerequisites is not None and prerequisites.ciem_on(target.spec):
        ciem = _ciem(target, clouds)
        azure.prerequisites = None if ciem is None else prerequisites.combined(azure.prerequisites, ciem)
    if azure is not None and azure.prerequisites is not None:
        status.conditions = conditions.ordered(
            conditions.put(status.conditions, "Prerequisites", azure.prerequisites, target.generation, stamp)
        )
    status.observed_generation = target.generation
    if target.requested_at:
        status.last_handled_reconcile_at = target.requested_at
    ready = conditions.get(status.conditions, "Ready")
    if stalled is not None and result != "error":
        held = conditions.get(status.conditions, "Stalled")
        since = held.last_transition_time if held is not None and held.last_transition_time else stamp
        result, requeue = "terminal", stalled_requeue(stalled.reason, since, stamp, settings)
    elif result == "success" and ready is not None and ready.status != "True":
        result, requeue = "requeue_after", min(requeue, settings.in_progress_seconds)
    events += _transition_events(target.status, status)
    return Outcome(
        status=status,
        events=_told(target.status, events),
        requeue_after=requeue,
        result=result,
        eks_retry=eks_retry,
    )
