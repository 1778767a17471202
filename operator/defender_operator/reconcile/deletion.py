"""Cleanup when an AWSConnector is deleted, in the reverse order of creation: the connector, then the StackSet and
the stack, then the identity providers (deleted, or only the audiences the operator added removed).

Cleanup does not trust ``status`` to know what exists: it finds the connector, stack and StackSet by their
deterministic names and removes them only when they carry this object's owner mark and the operator's record proves
them this object's (``proofs.py``), and it finds the identity providers by this object's user tag. So it is complete
even when the object was deleted before its first status write or while the operator was down. What the record does
tell is the spec last acted on (cleanup uses it, not a spec changed after deletionTimestamp) and, per cloud, the moment
before the first write there: a cloud without it was never written to and is not even signed in to, so an object
whose credentials never worked is released at once.

Each call advances by one step and says whether it is done; a stack that is still deleting ends the call with "look
again soon", so no worker waits on CloudFormation. Each removal happens once: the next call sees it gone and says
nothing more. ``deletionPolicy: Orphan`` and paused objects leave both clouds as they are.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.status import AWSConnectorStatus, FirstCloudWrite, OrganizationStatus
from ..aws.api import STACK_SET_BUSY
from ..aws.stackset import MemberAccounts, StackSets
from ..errors import RetryableError, TerminalError
from .aws_side import ciem_provider_arn, prove_stack_set, provider_specs, release_provider
from .clouds import Clouds
from .eks_side import made_entries, regions_of, remove_entries
from .ledger import UNRECORDED_LEDGER, Ledger
from .member_providers import release_members
from .model import Event, Target


@dataclass
class Cleanup:
    done: bool
    message: str
    retry_after: float = 0.0
    events: list[Event] = field(default_factory=list)
    status: AWSConnectorStatus | None = None  # progress to record while cleanup is not done
    # a read found the object's namespace gone (kubernetes/kubernetes#127977): the API server keeps no status of it
    namespace_gone: bool = False
    # all cleaned up, in a namespace that is gone: the finalizer can come off only once one of its name is made again
    parked: bool = False


def _remove_stack_set(
    target: Target,
    stacksets: StackSets,
    status: AWSConnectorStatus,
    in_progress_seconds: float,
    events: list[Event],
    ledger: Ledger,
    listed: MemberAccounts | None = None,
) -> Cleanup | None:
    """Remove the member instances, then the StackSet; None once it is gone (or is not this object's). ``listed``:
    the standing this cleanup attempt already read (the organization is not listed twice). The instances
    of closed accounts, and of accounts that are not active where a removal failed or was skipped (suspended by AWS),
    are detached: the only way AWS lets them go (``MemberAccounts``)."""
    org = target.spec.aws.organization
    assert org is not None
    name = org.stack_set_name
    observed = stacksets.observe(name)
    if observed is None or not target.owner.owns(observed.tags):
        return None
    prove_stack_set(ledger, name, observed)
    organization = status.organization
    if organization is not None and organization.operation_id:
        state, _ = stacksets.operation(name, organization.operation_id)
        if state in ("RUNNING", "QUEUED", "STOPPING"):
            return Cleanup(
                False, f"waiting for StackSet {name} to remove its instances", in_progress_seconds, events
            )
    if observed.instances:
        standing = _standing(target, stacksets, set(observed.instances), listed)
        inoperable = {  # a removal failed there, or was skipped: the account is suspended
            s.account
            for s in observed.states
            if s.status == "INOPERABLE" or s.detailed == "SKIPPED_SUSPENDED_ACCOUNT"
        }
        unreachable = standing.closed | (inoperable - standing.active)
        live = [a for a in observed.instances if a not in unreachable]
        detach = not live
        try:
            operation = stacksets.remove_instances(
                name, live or observed.instances, target.spec.deployment.region, retain=detach
            )
        except RetryableError as exc:
            if exc.reason != STACK_SET_BUSY:
                raise  # throttled, unreachable: backed off from like any failed cleanup
            return Cleanup(False, f"waiting for StackSet {name}: {exc.message}", in_progress_seconds, events)
        status.organization = organization or OrganizationStatus()
        status.organization.operation_id = operation
        message = (
            f"detaching StackSet {name} from {len(observed.instances)} closed or unreachable member accounts"
            if detach
            else f"removing StackSet {name} from {len(live)} member accounts"
        )
        events.append(Event("Normal", "StackSetDeleting", message))
        return Cleanup(False, message, in_progress_seconds, events, status)
    try:
        stacksets.delete(name)
    except RetryableError as exc:
        if exc.reason != STACK_SET_BUSY:
            raise
        # an operation started meanwhile (another cluster's, a person's): DeleteStackSet is refused until it ends
        return Cleanup(False, f"waiting for StackSet {name}: {exc.message}", in_progress_seconds, events)
    events.append(Event("Normal", "StackSetDeleted", f"deleted StackSet {name}"))
    return None


ORPHANED = Event("Normal", "Orphaned", "cleanup was blocked; released with deletionPolicy Orphan")


def released_by_orphan(blocked: bool, deleting: bool, spec: Mapping[str, Any]) -> bool:
    """Whether an object is let go now, without cleanup: its cleanup is blocked (credentials that stopped working, a
    grant withdrawn), it is being deleted, and its user switched it to ``deletionPolicy: Orphan``, the documented way
    out. Read from the raw spec, so no parsing ever stands between a delete and Orphan."""
    return blocked and deleting and spec.get("deletionPolicy") == "Orphan"


def _standing(
    target: Target, stacksets: StackSets, accounts: set[str], listed: MemberAccounts | None = None
) -> MemberAccounts:
    """The standing of the targets' accounts and of ``accounts``: one listing of the units (only when there is
    something to decide: a cleanup attempt that has no member account left reads no organization; ``listed``, one
    this attempt read already), the accounts it did not name described."""
    org = target.spec.aws.organization
    assert org is not None
    under = (
        listed
        if listed is not None
        else stacksets.accounts_under(
            list(org.organizational_unit_ids) or [stacksets.root()],
            target.spec.aws.account_id,
            missing_ok=True,
        )
    )
    unknown = accounts - under.known
    return under | stacksets.described(sorted(unknown)) if unknown else under


def _member_accounts(target: Target, stacksets: StackSets, under: MemberAccounts) -> set[str]:
    """The member accounts this object may have added audiences in: those its StackSet targets (the only ones the
    grant let it assume the member role in) and those with an instance."""
    org = target.spec.aws.organization
    assert org is not None
    observed = stacksets.observe(org.stack_set_name)
    instances = (
        set(observed.instances) if observed is not None and target.owner.owns(observed.tags) else set()
    )
    return set(under.active - set(org.excluded_account_ids)) | instances


def _eks_regions(target: Target, status: AWSConnectorStatus, ledger: Ledger, partition: str) -> list[str]:
    """Regions where this object may have made EKS access entries: those the record lists, and (for objects from
    before the record kept them) the spec's when status shows entries it made."""
    record = ledger.recorded()
    regions = set(record.eks_regions) if record is not None else set()
    if target.spec.aws.eks_access_entries == "Manage" or made_entries(status.eks):
        regions |= set(regions_of(target.spec, partition)) if not regions else set()
    return sorted(regions)


def finalize(
    target: Target,
    clouds: Clouds,
    in_progress_seconds: float,
    ledger: Ledger = UNRECORDED_LEDGER,
    member_allowed: Callable[[str], bool] = lambda account: True,
) -> Cleanup:
    """One step of cleanup. ``target`` carries the spec the operator last acted on (the record's, not one changed
    after deletionTimestamp) and, as ``status.firstCloudWrite``, what the record says was written."""
    status: AWSConnectorStatus = target.status.model_copy(deep=True)
    if target.spec.deletion_policy == "Orphan":
        return Cleanup(
            True,
            "deletionPolicy Orphan",
            events=[Event("Normal", "Orphaned", "left the stack and the connector in place")],
        )
    if target.paused:
        return Cleanup(
            True,
            "paused",
            events=[
                Event(
                    "Warning", "PausedNotCleanedUp", "the object was paused: left AWS and Azure as they are"
                )
            ],
        )
    written = status.first_cloud_write or FirstCloudWrite()
    if written.aws is None and written.azure is None:
        return Cleanup(True, "nothing was written for this object")

    events: list[Event] = []
    owner = target.owner
    if written.azure is not None:
        # Otherwise Azure is not even signed in to: its credentials may never have worked.
        connectors = clouds.azure(target)
        rg, name = target.spec.azure.resource_group, target.connector_name
        connector = connectors.observe(rg, name)
        if connector is not None and owner.owns(connector.tags):
            ledger.proof("azure").check(connector.created, connector.id, f"security connector {connector.id}")
            connectors.delete(rg, name, connector.etag)
            events.append(Event("Normal", "ConnectorDeleted", f"deleted security connector {connector.id}"))

    if written.aws is None:
        return Cleanup(True, "cleaned up", events=events)
    account = clouds.aws(target, ledger, member_allowed)
    terraform = target.spec.deployment.method == "Terraform"
    members_failing: list[str] = []
    refused: list[str] = []
    org = target.spec.aws.organization
    if account.stacksets is not None and org is not None and not terraform:
        stacksets = account.stacksets
        listed: MemberAccounts | None = None
        if account.members is not None:  # before the member roles that trust the providers go
            microsoft = provider_specs(target)["microsoft"]
            record = ledger.recorded()
            if record is not None and record.member_accounts is not None:
                # every member it reached, in the targets or not any more
                accounts = set(record.member_accounts)
                standing = listed = _standing(target, stacksets, accounts) if accounts else None
            else:  # an object from before the record kept them
                standing = listed = _standing(target, stacksets, set())
                accounts = _member_accounts(target, stacksets, standing)
            standing = standing or MemberAccounts()
            closed = sorted(accounts & standing.closed)
            if closed:  # no role reaches into a closed account; what was added goes with it
                ledger.members_released(closed)
            released, failing, refused = release_members(
                account.members, microsoft, owner, accounts - standing.closed, ledger
            )
            events += released
            members_failing = [f"{f.account_id}: {f.reason}" for f in failing]
        waiting = _remove_stack_set(target, stacksets, status, in_progress_seconds, events, ledger, listed)
        if waiting is not None:
            return waiting
    if target.spec.aws.delegated_administrator:  # nothing was written in the management account itself
        _members_released(target, members_failing, refused)
        return Cleanup(
            True,
            "cleaned up; the management account's own stack is its administrators' to delete",
            events=events,
        )
    stack_name = target.spec.stack_name
    stack = None if terraform else account.stacks.observe(stack_name)
    deleting = stack is not None and stack.status == "DELETE_IN_PROGRESS"
    if not deleting:  # before the role they name goes
        regions = _eks_regions(target, status, ledger, account.partition)
        if regions:
            events += remove_entries(
                target.spec,
                owner,
                account.eks,
                account.partition,
                account.account,
                regions,
                ledger.proof("aws"),
                ledger.recorded(),
            )
            ledger.eks_regions_cleared(regions)
    if terraform:
        return Cleanup(True, "cleaned up; Terraform-managed roles are yours to destroy", events=events)
    if stack is not None and owner.owns(stack.tags):
        ledger.proof("aws").check(stack.created, stack.stack_id, f"stack {stack_name}")
        if stack.in_progress and stack.status != "DELETE_IN_PROGRESS":
            # CloudFormation refuses to delete a stack in the middle of an update or a rollback: wait for it
            message = f"waiting for stack {stack_name} to finish {stack.status} before deleting it"
            return Cleanup(False, message, in_progress_seconds, events)
        if stack.status != "DELETE_IN_PROGRESS":
            account.stacks.delete(stack.stack_id)
            if stack.status == "DELETE_FAILED":
                reason = account.stacks.first_failure(stack.stack_id) or stack.status_reason
                message = f"deleting stack {stack_name} failed: {reason}; retrying"
                events.append(Event("Warning", "StackDeleteFailed", message))
            else:
                events.append(Event("Normal", "StackDeleting", f"deleting stack {stack_name}"))
        return Cleanup(False, f"waiting for stack {stack_name} to be deleted", in_progress_seconds, events)

    # The providers this object's own spec uses (the Microsoft one of its account, its CIEM tenant's, CIEM on or off:
    # a status can lose the one CIEM used before it was turned off) and those its status recorded: not every
    # provider that carries its user tag, which anyone who may tag can put anywhere.
    ours = {spec.arn(account.partition, account.account) for spec in provider_specs(target).values()}
    ours.add(ciem_provider_arn(target.spec.azure.tenant_id, account))
    recorded = status.aws
    ours |= (
        {p.arn for p in (recorded.oidc_provider, recorded.ciem_oidc_provider) if p is not None}
        if recorded
        else set()
    )
    for provider in account.providers.list_used_by(owner):
        if provider.arn in ours:
            release_provider(account.providers, provider.arn, owner, events, ledger)
    if status.aws is not None:
        status.aws.oidc_provider = status.aws.ciem_oidc_provider = None
    _members_released(target, members_failing, refused)
    return Cleanup(True, "cleaned up", events=events)


def _members_released(target: Target, members_failing: list[str], refused: list[str]) -> None:
    """Cleanup ends only when every member account's provider was released (or the user chose Orphan)."""
    if not members_failing:
        return
    org = target.spec.aws.organization
    assert org is not None
    raise TerminalError(
        "MemberProvidersFailing",
        f"everything else is cleaned up, but the identity providers of {len(members_failing)} member accounts "
        f"could not be released through role {org.member_provider_role_name} "
        f"({'; '.join(members_failing[:3])}{'; ...' if len(members_failing) > 3 else ''}). {_members_fix(refused, len(members_failing))} "
        "(cleanup is retried), or set spec.deletionPolicy to Orphan to leave Defender's audiences on those "
        "providers",
    )


def _members_fix(refused: list[str], failing: int) -> str:
    """What lets cleanup into the failing member accounts: the grant for those it refused (a policy narrowed after
    they were reached), the role for the others."""
    grant = (
        f"Allow {', '.join(refused[:3])}{', ...' if len(refused) > 3 else ''} in the aws.accountIds of a "
        "ClusterOnboardingPolicy that allows this object again"
    )
    if len(refused) == failing:
        return grant
    return "Make the role usable there again" + (f"; {grant[0].lower()}{grant[1:]}" if refused else "")
