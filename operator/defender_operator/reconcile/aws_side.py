"""The AWS side of a pass: identity providers (on deep passes only, see ``Target.deep``), then the stack, then (on a
slower cadence) role drift.

Each step observes first and acts only on a difference, and no step waits for CloudFormation: a stack that is
``*_IN_PROGRESS`` ends the pass with "look again soon". Role drift is found with CloudFormation drift detection once
per ``drift_check_seconds`` rather than by reading every role each pass: three CloudFormation calls an hour instead
of about forty IAM reads every pass for a fully enabled account (docs/design-decisions.md, "Drift").
"""

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from .. import metrics
from ..api.names import ANNOTATION_ADOPT
from ..api.status import AwsStatus, FailingMember, InstanceCounts, OidcProviderStatus, OrganizationStatus
from ..aws.api import AwsClientError, call
from ..aws.eks import EksClusters
from ..aws.managed_nodes import ManagedNodes
from ..aws.oidc import OidcProviders, ProviderSpec
from ..aws.stack import ObservedStack, Stacks
from ..aws.stackset import TRUSTED_ACCESS_MESSAGE, MemberAccounts, ObservedStackSet, StackSets, Targets
from ..errors import TerminalError
from ..ownership import Owner, describe_owner
from ..render.catalog import catalog
from ..render.cloudformation import (
    CIEM_OIDC_PARAMETER,
    OIDC_PARAMETER,
    member_template,
    output_key,
    stack_template,
)
from ..render.document import Rendered
from ..render.iam import role_documents
from ..render.placeholders import ciem_oidc_host, tenant_oidc_host
from ..settings import Settings
from .conditions import Verdict
from .ledger import UNRECORDED_LEDGER, Ledger
from .member_providers import ensure_members, release_members
from .model import Event, Target
from .proofs import made_provider

STABLE = {
    "CREATE_COMPLETE",
    "UPDATE_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE",
    "IMPORT_COMPLETE",
    "IMPORT_ROLLBACK_COMPLETE",
}
NEEDS_A_PERSON = {"ROLLBACK_FAILED", "DELETE_FAILED", "UPDATE_ROLLBACK_FAILED", "IMPORT_ROLLBACK_FAILED"}


@dataclass(frozen=True)
class AwsAccount:
    """The adapters of one AWS account, signed in as the credentials of the object say."""

    account: str
    partition: str
    stacks: Stacks
    providers: OidcProviders
    iam: Any
    eks: EksClusters
    stacksets: StackSets | None = None  # for a management account
    # member account id -> its identity providers, through spec.aws.organization.memberProviderRoleName
    members: Callable[[str], OidcProviders] | None = None
    nodes: ManagedNodes | None = None  # the EC2 instances Systems Manager manages (Arc's prerequisite)


@dataclass
class AwsResult:
    verdict: Verdict
    stalled: Verdict | None = None
    role_arns: dict[str, str] | None = None
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def defender_audiences() -> set[str]:
    """Every audience Defender's providers get: the only ones the operator ever takes away from a provider."""
    return {*catalog().microsoft_oidc.audiences, catalog().ciem_audience}


def ensure_provider(
    providers: OidcProviders,
    spec: ProviderSpec,
    owner: Owner,
    events: list[Event],
    ledger: Ledger,
    first: bool = False,
) -> OidcProviderStatus:
    """Create the provider, or add the missing audiences to an existing one (e.g. Microsoft Sentinel's), recorded in
    the ledger first. ``first``: the status has never recorded it, so it is created without a read first."""
    observed, added, created = providers.ensure(spec, owner, first, before_adding=ledger.shared)
    if created:
        events.append(
            Event("Normal", "IdentityProviderCreated", f"created identity provider https://{spec.host}")
        )
    elif added:
        message = f"added audiences {', '.join(added)} to the existing provider {observed.arn}"
        events.append(Event("Normal", "IdentityProviderShared", message))
    owned = observed.created_by_operator
    return OidcProviderStatus(
        arn=observed.arn, owned=owned, added_audiences=[] if owned else observed.added_audiences
    )


def release_provider(
    providers: OidcProviders, arn: str, owner: Owner, events: list[Event], ledger: Ledger
) -> None:
    """This object no longer needs the provider: take away what the mark and the record both say it added."""
    proof, record = ledger.proof("aws"), ledger.recorded()
    released = providers.release(
        arn,
        owner,
        made=lambda observed: made_provider(observed, owner, proof),
        shared=record.shared(arn) if record is not None else [],
        defender_audiences=defender_audiences(),
        hand_over=ledger.hand_over,
    )
    if released:
        ledger.unshared(arn)
        events.append(Event("Normal", "IdentityProviderReleased", released))


def live_holder(target: Target, key: str) -> str | None:
    """Another live AWSConnector whose own spec declares the resource ``key`` (``model.resource_keys``), from the
    operator's index of live objects: adoption never takes it over, whatever the resource's (forgeable) tags say."""
    return next((holder for holder in target.holders(key) if holder != target.key), None)


def check_owned(target: Target, kind: str, name: str, tags: dict[str, str], field: str) -> bool:
    """Whether this object may write ``kind`` ``name``: True when it is adopting it now, False when it owns it
    already by its mark (the caller proves it by the record before it writes); TerminalError (Stalled, nothing
    written) when it belongs to someone else."""
    if target.owner.owns(tags):
        return False
    account = target.spec.aws.account_id
    holder = live_holder(target, f"{'stack' if kind == 'stack' else 'stackset'}/{account}/{name}")
    if target.adopt and holder is None:
        return True
    title = f"{kind[0].upper()}{kind[1:]}OwnedElsewhere"
    where = f"{kind} {name} already exists in AWS account {target.spec.aws.account_id}"
    if target.adopt:
        raise TerminalError(
            title,
            f"{where} and belongs to AWSConnector {holder}, which exists: adoption never takes over another live "
            f"object's resources; nothing was written. Set {field} to another name.",
        )
    raise TerminalError(
        title,
        f"{where} and {describe_owner(tags, target.owner)}; nothing was written. Set {field} to another name, or, if "
        f"it is the same onboarding, annotate the object {ANNOTATION_ADOPT}=true to take it over.",
    )


def provider_specs(target: Target) -> dict[str, ProviderSpec]:
    ms = catalog().microsoft_oidc
    specs = {"microsoft": ProviderSpec(host=ms.host, audiences=ms.audiences, thumbprints=ms.thumbprints)}
    cspm = target.spec.plans.cspm
    if cspm.enabled and cspm.ciem.enabled:
        specs["ciem"] = ProviderSpec(
            host=ciem_oidc_host(target.spec),
            audiences=[catalog().ciem_audience],
            thumbprints=catalog().ciem_thumbprints,
        )
    return specs


def ciem_provider_arn(tenant_id: str, account: AwsAccount) -> str:
    """The identity provider CIEM uses in the account for an Entra tenant, whether or not a spec has CIEM on."""
    return f"arn:{account.partition}:iam::{account.account}:oidc-provider/{tenant_oidc_host(tenant_id)}"


def _recorded_ciem_provider(target: Target, account: AwsAccount, ledger: Ledger) -> str | None:
    """The provider CIEM used under the spec the operator last wrote with (the record's: its tenant, which the spec
    may have changed since), when that spec had CIEM on; never the Microsoft provider the object still uses."""
    record = ledger.recorded()
    connector = record.connector if record is not None else {}
    cspm = (connector.get("plans") or {}).get("cspm") or {}
    tenant = (connector.get("azure") or {}).get("tenantId")
    if not (cspm.get("enabled") and (cspm.get("ciem") or {}).get("enabled") and tenant):
        return None
    arn = ciem_provider_arn(tenant, account)
    return None if arn == provider_specs(target)["microsoft"].arn(account.partition, account.account) else arn


def role_arns_from_outputs(target: Target, outputs: dict[str, str]) -> dict[str, str] | None:
    """The ARN of every role the spec needs, from the stack outputs; None if one is missing."""
    arns = {}
    for role in role_documents(target.spec):
        arn = outputs.get(output_key(role))
        if arn is None:
            return None
        arns[role.key] = arn
    return arns


def reconcile_aws(
    target: Target,
    account: AwsAccount,
    status: AwsStatus,
    settings: Settings,
    ledger: Ledger = UNRECORDED_LEDGER,
) -> AwsResult:
    events: list[Event] = []
    owner = target.owner
    specs = provider_specs(target)
    known = status.oidc_provider is not None and (
        ("ciem" in specs) == (status.ciem_oidc_provider is not None)
    )
    if target.deep or not known:
        # read before this pass's first write, which records its own spec (CIEM off) in place of the one it had
        lost_ciem = (
            _recorded_ciem_provider(target, account, ledger)
            if target.deep and "ciem" not in specs and status.ciem_oidc_provider is None
            else None
        )
        status.oidc_provider = ensure_provider(
            account.providers, specs["microsoft"], owner, events, ledger, first=status.oidc_provider is None
        )
        if "ciem" in specs:
            status.ciem_oidc_provider = ensure_provider(
                account.providers,
                specs["ciem"],
                owner,
                events,
                ledger,
                first=status.ciem_oidc_provider is None,
            )
        elif status.ciem_oidc_provider is not None:
            # CIEM turned off: this object no longer needs its provider.
            release_provider(account.providers, status.ciem_oidc_provider.arn, owner, events, ledger)
            status.ciem_oidc_provider = None
        elif lost_ciem is not None:
            # The same, where a status written from an older copy lost the provider (the shape of the campaign's seed
            # 67071): the one the record's spec had CIEM use. release_provider takes away only what the mark, the
            # proof and the record say this object added; a provider it may not even read it did not make.
            with contextlib.suppress(TerminalError):  # refused: turning CIEM off still ends a stall it caused
                release_provider(account.providers, lost_ciem, owner, events, ledger)
    assert status.oidc_provider is not None
    parameters = {OIDC_PARAMETER: status.oidc_provider.arn}
    if status.ciem_oidc_provider is not None:
        parameters[CIEM_OIDC_PARAMETER] = status.ciem_oidc_provider.arn
    template = Rendered(stack_template(target.spec))  # only what this side sends, not every rendering
    name = target.spec.stack_name
    status.stack_name = name
    # A stack this object has never seen is most likely not there: it is created without a read first, and looked
    # at only if CloudFormation answers that it exists (an earlier pass that died after creating it, or someone
    # else's stack, which check_owned then refuses).
    first = status.stack_id is None and not account.stacks.dry_run
    stack = None if first else account.stacks.observe(name)
    result = _reconcile_stack(
        target, account.stacks, stack, status, template.compact, template.sha256, parameters, settings, ledger
    )
    result.events[:0] = events
    return result


def _reconcile_stack(
    target: Target,
    stacks: Stacks,
    stack: ObservedStack | None,
    status: AwsStatus,
    body: str,
    template_hash: str,
    parameters: dict[str, str],
    settings: Settings,
    ledger: Ledger,
) -> AwsResult:
    owner = target.owner
    if stack is None:
        events = []
        if status.stack_id and status.stack_status in STABLE:
            events.append(
                Event(
                    "Warning",
                    "DriftRepaired",
                    f"stack {status.stack_name} was deleted outside the operator; recreating it",
                )
            )
            _drift_repaired("stack")
        stack_id = stacks.create(status.stack_name or "", body, template_hash, parameters, owner)
        if stack_id is None:  # it exists after all: reconcile it as found
            existing = stacks.observe(status.stack_name or "")
            if existing is None:  # deleted again meanwhile
                return AwsResult(
                    Verdict("False", "StackInProgress", f"stack {status.stack_name} is being deleted"),
                    requeue_after=settings.in_progress_seconds,
                )
            return _reconcile_stack(
                target, stacks, existing, status, body, template_hash, parameters, settings, ledger
            )
        status.stack_id = stack_id or None
        status.stack_status, status.template_hash = "CREATE_IN_PROGRESS", template_hash
        status.roles, status.failed_template_hash = {}, None
        # Roles just made from the template have not drifted: the first check waits drift_check_seconds, and a
        # first onboarding needs no detection and no extra pass to be Ready.
        status.last_drift_check = _now()
        events.append(Event("Normal", "StackCreating", f"creating stack {status.stack_name}"))
        created = None if stacks.dry_run else stacks.observe(status.stack_name or "")
        if created is not None and created.status == "CREATE_COMPLETE":
            # Already done when first described (a small stack can be): go on in this pass, no fixed wait.
            result = _reconcile_stack(
                target, stacks, created, status, body, template_hash, parameters, settings, ledger
            )
            result.events[:0] = events
            return result
        return AwsResult(
            Verdict("False", "StackCreating", f"CloudFormation is creating stack {status.stack_name}"),
            events=events,
            requeue_after=settings.in_progress_seconds,
        )

    adopting = check_owned(target, "stack", status.stack_name or "", stack.tags, "spec.deployment.stackName")
    status.stack_id, status.stack_status = stack.stack_id, stack.status
    if target.reconcile_requested:
        # A person asked for a look, and the drift check is part of it, whenever the stack is next settled: this pass
        # hands the request in as handled even when it meets the stack in progress or updates it, and a role
        # deleted by hand stayed missing until the hourly check (campaign seed 15046).
        status.last_drift_check = None
    if stack.in_progress:
        return AwsResult(
            Verdict("False", "StackInProgress", f"stack {status.stack_name} is {stack.status}"),
            requeue_after=settings.in_progress_seconds,
        )
    if stack.status == "UPDATE_ROLLBACK_FAILED" and not adopting:
        gone = stacks.roles_gone_in_failed_rollback(stack.stack_id)
        if gone and (status.roles_remade_for != template_hash or target.reconcile_requested):
            if target.reconcile_requested:
                status.roles_remade_for = (
                    None  # a person asks for another try: the next pass makes them again
                )
            return _finish_rollback_without(stacks, stack, status, gone, settings, ledger)
    if stack.status in NEEDS_A_PERSON:
        reason = why_failed(target, stacks, stack)
        message = f"stack {status.stack_name} is {stack.status}: {reason}. Fix the cause in AWS, then request a reconcile."
        return AwsResult(
            Verdict("False", "StackFailed", message), stalled=Verdict("True", "StackFailed", message)
        )
    if stack.status == "ROLLBACK_COMPLETE":
        return _after_failed_create(target, stacks, stack, status, template_hash, settings, ledger)

    if (
        stack.status == "UPDATE_ROLLBACK_COMPLETE"
        and not adopting
        and (
            status.roles_remade_for != template_hash
            or target.reconcile_requested
            or status.repair_change_set_id  # one under way (a person's request started it)
        )
        and stacks.roles_gone_in_failed_rollback(stack.stack_id)
    ):
        remaking = _update_making_roles_again(
            target, stacks, stack, status, body, template_hash, parameters, settings, ledger
        )
        if remaking is not None:
            return remaking
    retry_failed = target.reconcile_requested or status.failed_template_hash != template_hash
    if (
        stack.status == "UPDATE_ROLLBACK_COMPLETE"
        and status.failed_template_hash == template_hash
        and not retry_failed
    ):
        reason = why_failed(target, stacks, stack)
        message = f"updating stack {status.stack_name} failed and was rolled back: {reason}. Fix the cause, then request a reconcile."
        return AwsResult(
            Verdict("False", "StackUpdateFailed", message),
            stalled=Verdict("True", "StackUpdateFailed", message),
        )
    if (
        stack.status == "UPDATE_ROLLBACK_COMPLETE"
        and status.template_hash == template_hash
        and stack.template_hash != template_hash
        and not target.reconcile_requested
    ):
        # The update this operator started was rolled back: remember that this template fails.
        status.failed_template_hash = template_hash
        reason = why_failed(target, stacks, stack)
        message = f"updating stack {status.stack_name} failed and was rolled back: {reason}. Fix the cause, then request a reconcile."
        return AwsResult(
            Verdict("False", "StackUpdateFailed", message),
            stalled=Verdict("True", "StackUpdateFailed", message),
            events=[Event("Warning", "StackUpdateFailed", message)],
        )

    # A retry that was asked for updates even when the stack's tags already carry this template's hash.
    retrying = target.reconcile_requested and status.failed_template_hash == template_hash
    changed = adopting or retrying or stack.template_hash != template_hash or stack.parameters != parameters
    if changed and adopting:
        ledger.adopted(stack.stack_id)
    elif changed:
        ledger.proof("aws").check(stack.created, stack.stack_id, f"stack {status.stack_name}")
    if changed and status.repair_change_set_id:
        # a change set made for what the stack was (a drift repair, an older template) must not run after this update
        stacks.delete_change_set(status.repair_change_set_id)
        status.repair_change_set_id = None
    if changed and stacks.update(status.stack_name or "", body, template_hash, parameters, owner):
        status.stack_status, status.template_hash = "UPDATE_IN_PROGRESS", template_hash
        status.failed_template_hash = None
        return AwsResult(
            Verdict("False", "StackUpdating", f"CloudFormation is updating stack {status.stack_name}"),
            events=[
                Event(
                    "Normal",
                    "StackUpdating",
                    f"updating stack {status.stack_name} to template {template_hash[:12]}",
                )
            ],
            requeue_after=settings.in_progress_seconds,
        )
    status.template_hash = template_hash
    arns = role_arns_from_outputs(target, stack.outputs)
    if arns is None:
        raise TerminalError(
            "StackOutputsMissing",
            f"stack {status.stack_name} has no output for every role; request a reconcile to redeploy it",
        )
    status.roles = arns
    drift = _check_drift(target, stacks, stack, status, parameters, settings, ledger)
    if drift is not None:
        return drift
    return AwsResult(
        Verdict("True", "StackReady", f"stack {status.stack_name} is {stack.status}"), role_arns=arns
    )


PENDING = (
    "pending"  # the record's stackSetId between the decision to create the StackSet and its first observation
)


def prove_stack_set(ledger: Ledger, name: str, observed: ObservedStackSet) -> None:
    """The second proof for a StackSet, which CloudFormation gives no creation time: the record names its id (or
    names it ``pending``: created by this object, not observed since, which records the id now)."""
    record = ledger.recorded()
    if record is None or observed.stack_set_id in (record.stack_set_id, *record.adopted):
        return
    if record.stack_set_id == PENDING:
        ledger.stack_set(observed.stack_set_id)
        return
    ledger.proof("aws").check(None, observed.stack_set_id, f"StackSet {name} ({observed.stack_set_id})")


def reconcile_organization(
    target: Target,
    stacksets: StackSets,
    status: OrganizationStatus,
    settings: Settings,
    members: Callable[[str], OidcProviders] | None = None,
    ledger: Ledger = UNRECORDED_LEDGER,
) -> AwsResult:
    """The member accounts' StackSet: create and deploy it, update it when the template changes, report it."""
    org = target.spec.aws.organization
    assert org is not None
    member = Rendered(member_template(target.spec))
    name, owner = org.stack_set_name, target.owner
    settled = False  # an operation of ours ended in this pass: compare targets and instances again now
    if status.operation_id:
        state, _ = stacksets.operation(name, status.operation_id)
        status.stack_set_status = state
        if state in ("RUNNING", "QUEUED", "STOPPING"):
            message = f"StackSet {name} operation is {state}"
            return AwsResult(
                Verdict("False", "StackSetDeploying", message), requeue_after=settings.in_progress_seconds
            )
        # Ended (FAILED or STOPPED too: the instances' own states tell which accounts failed).
        status.operation_id, settled = None, True
    targets = Targets(
        organizational_units=list(org.organizational_unit_ids) or [stacksets.root()],
        excluded_accounts=list(org.excluded_account_ids),
        region=target.spec.deployment.region,
        failure_tolerance_percentage=org.failure_tolerance_percentage,
        max_concurrent_percentage=org.max_concurrent_percentage,
        auto_deployment=org.member_provider_role_name is None,
    )
    observed = stacksets.observe(name)
    events: list[Event] = []
    if members is None:
        status.member_providers = None
    if observed is None:
        deploying: Targets | None = targets
        if members is not None:  # the providers first: the member roles trust them
            under = stacksets.accounts_under(targets.organizational_units, target.spec.aws.account_id)
            wanted = under.active - set(targets.excluded_accounts)
            events, not_ready = _member_providers(target, members, status, wanted, ledger, under=under)
            if not_ready:  # deployed to once their provider is, by a deep pass
                deploying = replace(
                    targets, excluded_accounts=sorted({*targets.excluded_accounts, *not_ready})
                )
            if not wanted - not_ready:
                deploying = None
        ledger.stack_set(PENDING)
        try:
            stacksets.create(name, member.compact, member.sha256, owner, targets)
        except TerminalError as exc:
            if TRUSTED_ACCESS_MESSAGE in exc.message.lower():
                message = (
                    "StackSets cannot use AWS Organizations yet: enable trusted access for CloudFormation StackSets "
                    f"in the management account ({exc.message})"
                )
                raise TerminalError("OrganizationsAccessDisabled", message) from None
            raise
        status.operation_id = (stacksets.deploy(name, deploying) if deploying is not None else "") or None
        status.template_hash = member.sha256
        deployment = (
            f"deploying StackSet {name} to {', '.join(targets.organizational_units)}"
            if deploying is not None
            else f"created StackSet {name}; it deploys to each member account once its identity provider is set up"
        )
        return AwsResult(
            Verdict("False", "StackSetDeploying", deployment),
            events=[
                *events,
                Event("Normal", "StackSetCreated", f"created StackSet {name} for the member accounts"),
            ],
            requeue_after=settings.in_progress_seconds,
        )
    adopting = check_owned(target, "StackSet", name, observed.tags, "spec.aws.organization.stackSetName")
    status.stack_set_id, status.member_accounts = observed.stack_set_id, len(observed.instances)
    if adopting:
        ledger.adopted(observed.stack_set_id)
    # automatic deployment other than wanted: e.g. made before memberProviderRoleName turned it off (not said: left)
    automatic = observed.auto_deployment
    if (
        adopting
        or observed.template_hash != member.sha256
        or automatic not in (None, targets.auto_deployment)
    ):
        prove_stack_set(ledger, name, observed)
        status.operation_id = stacksets.update(name, member.compact, member.sha256, owner, targets) or None
        status.template_hash = member.sha256
        return AwsResult(
            Verdict("False", "StackSetUpdating", f"updating StackSet {name}"),
            events=[
                Event(
                    "Normal", "StackSetUpdating", f"updating StackSet {name} to template {member.sha256[:12]}"
                )
            ],
            requeue_after=settings.in_progress_seconds,
        )
    # the template the StackSet carries, as observed: a pass killed after it wrote the StackSet and before it wrote
    # its status left none, and the catalog the object is on (rollout.written) was then never said (campaign seed
    # 41028)
    status.template_hash = member.sha256
    if target.deep or settled:  # level-triggered: exactly the member accounts of the targets have an instance
        targeted = stacksets.accounts_under(targets.organizational_units, target.spec.aws.account_id)
        wanted = targeted.active - set(targets.excluded_accounts)
        instances = set(observed.instances)
        record = ledger.recorded() if members is not None else None
        reached = set(record.member_accounts or []) if record is not None else set()
        unknown = (instances | reached) - targeted.known  # moved out of the units, or out of the organization
        under = targeted | stacksets.described(sorted(unknown)) if unknown else targeted  # their standing too
        missing = sorted(wanted - instances)
        # an account waited for (suspended by AWS, closing) is neither deployed to nor let go
        extra = sorted(instances - wanted - under.closed - under.waiting)
        closed = sorted(instances & under.closed)
        if members is not None:
            set_up, not_ready = _member_providers(
                target, members, status, wanted, ledger, leaving=extra, under=under
            )
            events += set_up
            missing = [account for account in missing if account not in not_ready]
        if extra or missing or closed:
            prove_stack_set(ledger, name, observed)
        if extra:  # excluded since, or moved out of the target OUs
            status.operation_id = stacksets.remove_instances(name, extra, targets.region) or None
            message = (
                f"removing StackSet {name} from {len(extra)} accounts no longer targeted: {', '.join(extra)}"
            )
            return AwsResult(
                Verdict("False", "StackSetUpdating", message),
                events=[*events, Event("Normal", "StackSetUpdating", message)],
                requeue_after=settings.in_progress_seconds,
            )
        # StackSets skip a closed account: a deletion would fail there for good; detaching is AWS's way
        if closed:
            status.operation_id = (
                stacksets.remove_instances(name, closed, targets.region, retain=True) or None
            )
            message = (
                f"detaching StackSet {name} from {len(closed)} closed accounts (their stacks go with the accounts): "
                f"{', '.join(closed)}"
            )
            return AwsResult(
                Verdict("False", "StackSetUpdating", message),
                events=[*events, Event("Normal", "StackSetUpdating", message)],
                requeue_after=settings.in_progress_seconds,
            )
        if missing:
            status.operation_id = stacksets.deploy(name, targets, missing) or None
            message = f"deploying StackSet {name} to {len(missing)} member accounts without an instance"
            return AwsResult(
                Verdict("False", "StackSetDeploying", message),
                events=[*events, Event("Normal", "StackSetDeploying", message)],
                requeue_after=settings.in_progress_seconds,
            )
    result = _members_verdict(target, stacksets, observed, status, settings)
    result.events[:0] = events
    return result


def _member_providers(
    target: Target,
    members: Callable[[str], OidcProviders],
    status: OrganizationStatus,
    accounts: frozenset[str],
    ledger: Ledger,
    *,
    under: MemberAccounts,
    leaving: list[str] | None = None,
) -> tuple[list[Event], frozenset[str]]:
    """What was added for the accounts that leave goes first (those that left the StackSet, and those recorded as
    reached and no longer wanted, so a release that failed is retried on every deep pass); then every wanted account
    is set up. A closed account is not visited: no role can be assumed there any more, and what was added goes with
    the account; it leaves the record. One waited for (suspended by AWS, closing) is left as it is. Returns the
    events and the wanted accounts whose provider is not ready: no instance is deployed there yet (its roles would
    trust a provider that does not exist, which IAM refuses)."""
    microsoft = provider_specs(target)["microsoft"]
    record = ledger.recorded()
    if record is not None and record.member_accounts is not None:
        gone = sorted(set(record.member_accounts) & under.closed)
        if gone:
            ledger.members_released(gone)
        stay = accounts | under.closed | under.waiting
        leaving = sorted({*(leaving or []), *(set(record.member_accounts) - stay)})
    released, not_released, _ = release_members(members, microsoft, target.owner, leaving or [], ledger)
    providers, set_up, not_ready = ensure_members(members, microsoft, target.owner, accounts, ledger)
    if not_released:  # accounts that left keep what was added until their role lets the operator in again
        providers = providers.model_copy(
            update={
                "failing": (not_released + providers.failing)[:FAILING_SHOWN],
                "failed": providers.failed + len(not_released),
            }
        )
    status.member_providers = providers
    return released + set_up, not_ready


FAILING_SHOWN = 20  # failing accounts named on status, whatever the size of the organization


def _members_verdict(
    target: Target,
    stacksets: StackSets,
    observed: ObservedStackSet,
    status: OrganizationStatus,
    settings: Settings,
    writes: bool = True,
) -> AwsResult:
    """Count the instances by state; name the first failing accounts; retry them when a person asks (unless the
    StackSet is the user's Terraform's: ``writes`` False)."""
    name = observed_name(target)
    failed = [s for s in observed.states if s.failed]
    status.instances = InstanceCounts(
        current=sum(1 for s in observed.states if s.status == "CURRENT" and not s.failed),
        outdated=sum(1 for s in observed.states if s.status == "OUTDATED" and not s.failed),
        failed=sum(1 for s in failed if s.status != "INOPERABLE"),
        inoperable=sum(1 for s in observed.states if s.status == "INOPERABLE"),
    )
    status.failing_accounts = [
        FailingMember(account_id=s.account, reason=s.reason) for s in failed[:FAILING_SHOWN]
    ]
    status.progress = f"{status.instances.current}/{len(observed.states)}"
    if failed and writes and target.reconcile_requested:
        # A person fixed the cause: deploy those accounts again.
        accounts = sorted(s.account for s in failed)
        status.operation_id = (
            stacksets.remove_instances(name, accounts, target.spec.deployment.region) or None
        )
        message = f"redeploying StackSet {name} to {len(accounts)} failed member accounts"
        return AwsResult(
            Verdict("False", "StackSetUpdating", message),
            events=[Event("Normal", "StackSetUpdating", message)],
            requeue_after=settings.in_progress_seconds,
        )
    if failed:
        shown = "; ".join(f"{s.account}: {s.reason or s.detailed}" for s in failed[:3])
        message = (
            f"StackSet {name} failed in {len(failed)} of {len(observed.states)} member accounts ({shown}"
            f"{'; ...' if len(failed) > 3 else ''}). Fix the cause in those accounts, then "
            + (
                "request a reconcile."
                if writes
                else "deploy them again (terraform apply -replace=aws_cloudformation_stack_set_instance.members)."
            )
        )
        return AwsResult(Verdict("False", "MembersFailing", message))
    providers = status.member_providers
    if providers is not None and providers.failed:
        org = target.spec.aws.organization
        assert org is not None
        shown = "; ".join(f"{f.account_id}: {f.reason}" for f in providers.failing[:3])
        delegate = target.spec.aws.delegated_administrator
        signer = f"delegated administrator {delegate}" if delegate else "the management account"
        message = (
            f"the identity provider could not be set up in {providers.failed} member accounts through role "
            f"{org.member_provider_role_name} ({shown}{'; ...' if providers.failed > 3 else ''}); their Defender "
            f"roles cannot be used. Make the role assumable from the operator's identity in {signer} there (or fix "
            "the cause named), then request a reconcile."
        )
        return AwsResult(Verdict("False", "MemberProvidersFailing", message))
    pending = sum(1 for s in observed.states if s.status != "CURRENT")
    if pending:
        message = f"StackSet {name}: {pending} of {len(observed.states)} member accounts are being deployed"
        return AwsResult(
            Verdict("False", "StackSetDeploying", message), requeue_after=settings.in_progress_seconds
        )
    message = f"StackSet {name} is deployed to {len(observed.instances)} member accounts"
    return AwsResult(Verdict("True", "StackSetReady", message))


def observed_name(target: Target) -> str:
    org = target.spec.aws.organization
    assert org is not None
    return org.stack_set_name


def failure_hint(reason: str, role_policies: str) -> str:
    """A stack failure's reason, with the way out where the cause is this project's own choice: an account set up
    for ``rolePolicies: Managed`` (docs/production.md) refuses inline policies to the operator's identity."""
    if role_policies == "Inline" and "iam:PutRolePolicy" in reason and "not authorized" in reason:
        return (
            f"{reason} (the identity may not write inline policies, as in an account prepared with the setup stack: "
            "set spec.aws.rolePolicies: Managed)"
        )
    return reason


def why_failed(target: Target, stacks: Stacks, stack: ObservedStack) -> str:
    return failure_hint(
        stacks.first_failure(stack.stack_id) or stack.status_reason, target.spec.aws.role_policies
    )


def _finish_rollback_without(
    stacks: Stacks,
    stack: ObservedStack,
    status: AwsStatus,
    gone: list[str],
    settings: Settings,
    ledger: Ledger,
) -> AwsResult:
    """UPDATE_ROLLBACK_FAILED on roles someone deleted (an update changed a role that was gone, and its rollback
    could not restore it either): nothing a person must decide, the roles are this object's and their template says
    what they are. The rollback is finished without them, and the next pass updates through a change set that makes
    them again (``_update_making_roles_again``), once per template (``status.aws.rolesRemadeFor``)."""
    name = status.stack_name or ""
    ledger.proof("aws").check(stack.created, stack.stack_id, f"stack {name}")
    events = []
    if not stacks.continue_rollback(stack.stack_id, gone):
        again = stacks.observe(name)
        if again is not None and again.status == "UPDATE_ROLLBACK_FAILED":  # refused, not overtaken
            message = f"stack {name} is UPDATE_ROLLBACK_FAILED and CloudFormation refused to finish the rollback without its deleted roles ({', '.join(gone)}). Fix it in AWS, then request a reconcile."
            return AwsResult(
                Verdict("False", "StackFailed", message), stalled=Verdict("True", "StackFailed", message)
            )
    else:
        status.stack_status = "UPDATE_ROLLBACK_IN_PROGRESS"
        message = (
            f"roles of stack {name} were deleted outside the operator: {', '.join(gone)}; an update met them and "
            "its rollback failed on them, so the rollback is finished without them and the update makes them again"
        )
        events.append(Event("Warning", "DriftRepaired", message))
        _drift_repaired("role")
    return AwsResult(
        Verdict(
            "False", "RepairingDrift", f"finishing the rollback of stack {name} without its deleted roles"
        ),
        events=events,
        requeue_after=settings.in_progress_seconds,
    )


def _update_making_roles_again(
    target: Target,
    stacks: Stacks,
    stack: ObservedStack,
    status: AwsStatus,
    body: str,
    template_hash: str,
    parameters: dict[str, str],
    settings: Settings,
    ledger: Ledger,
) -> AwsResult | None:
    """The update after a rollback finished without deleted roles: CloudFormation still believes in them (their
    drift is NOT_CHECKED, API_StackResourceDrift.html), so UpdateStack would fail on them again. A drift-aware
    change set with this object's template reads the live resources instead, which makes the missing roles and
    updates the rest (docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/drift-aware-change-sets.html; the
    page does not say so of a skipped resource in as many words, docs/design-decisions.md). None: nothing to do
    here after all (the change set found nothing to change)."""
    name = status.stack_name or ""
    preparing = AwsResult(
        Verdict(
            "False", "RepairingDrift", f"preparing the update of {name} that makes its deleted roles again"
        ),
        requeue_after=settings.in_progress_seconds,
    )
    if status.repair_change_set_id:
        change_set = stacks.change_set_status(status.repair_change_set_id)
        if change_set.status in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
            return preparing
        if change_set.status == "CREATE_COMPLETE" and change_set.template_hash == template_hash:
            stacks.execute_change_set(status.repair_change_set_id)
            status.repair_change_set_id, status.roles_remade_for = None, template_hash
            status.stack_status, status.template_hash = "UPDATE_IN_PROGRESS", template_hash
            status.failed_template_hash = None
            message = (
                f"updating stack {name} to template {template_hash[:12]}, making its deleted roles again"
            )
            return AwsResult(
                Verdict("False", "StackUpdating", f"CloudFormation is updating stack {name}"),
                events=[Event("Normal", "StackUpdating", message)],
                requeue_after=settings.in_progress_seconds,
            )
        if change_set.status != "GONE":  # failed, or made for another template (the spec changed meanwhile)
            stacks.delete_change_set(status.repair_change_set_id)
        status.repair_change_set_id = None
        if change_set.empty:
            return None
        if change_set.status == "FAILED":
            status.failed_template_hash = template_hash
            message = (
                f"the update of stack {name} that makes its deleted roles again could not be prepared: "
                f"{change_set.reason}. Fix the cause, then request a reconcile."
            )
            return AwsResult(
                Verdict("False", "StackUpdateFailed", message),
                stalled=Verdict("True", "StackUpdateFailed", message),
                events=[Event("Warning", "StackUpdateFailed", message)],
            )
    if status.failed_template_hash == template_hash and not target.reconcile_requested:
        message = (
            f"the update of stack {name} that makes its deleted roles again could not be prepared. Fix the cause, "
            "then request a reconcile."
        )
        return AwsResult(
            Verdict("False", "StackUpdateFailed", message),
            stalled=Verdict("True", "StackUpdateFailed", message),
        )
    ledger.proof("aws").check(stack.created, stack.stack_id, f"stack {name}")
    status.repair_change_set_id = stacks.start_drift_repair(
        name, parameters, (body, template_hash, target.owner)
    )
    return preparing


def _after_failed_create(
    target: Target,
    stacks: Stacks,
    stack: ObservedStack,
    status: AwsStatus,
    template_hash: str,
    settings: Settings,
    ledger: Ledger,
) -> AwsResult:
    """ROLLBACK_COMPLETE: nothing of the stack exists any more, so deleting and recreating it is always safe; it is
    only worth it when something changed (the template, or a person asked for a retry after fixing the cause)."""
    if stack.template_hash == template_hash and not target.reconcile_requested:
        reason = why_failed(target, stacks, stack)
        message = (
            f"creating stack {status.stack_name} failed: {reason}. Fix the cause, then request a reconcile."
        )
        status.failed_template_hash = template_hash
        return AwsResult(
            Verdict("False", "StackCreateFailed", message),
            stalled=Verdict("True", "StackCreateFailed", message),
        )
    ledger.proof("aws").check(stack.created, stack.stack_id, f"stack {status.stack_name}")
    stacks.delete(stack.stack_id)
    status.stack_status, status.failed_template_hash = "DELETE_IN_PROGRESS", None
    return AwsResult(
        Verdict(
            "False",
            "StackRecreating",
            f"deleting the rolled-back stack {status.stack_name} to create it again",
        ),
        events=[
            Event(
                "Normal",
                "StackRecreating",
                f"deleting rolled-back stack {status.stack_name} to create it again",
            )
        ],
        requeue_after=settings.in_progress_seconds,
    )


def _seconds_since(timestamp: str | None) -> float:
    if not timestamp:
        return float("inf")
    return (datetime.now(UTC) - datetime.fromisoformat(timestamp.replace("Z", "+00:00"))).total_seconds()


def _check_drift(
    target: Target,
    stacks: Stacks,
    stack: ObservedStack,
    status: AwsStatus,
    parameters: dict[str, str],
    settings: Settings,
    ledger: Ledger,
) -> AwsResult | None:
    """Advance the drift state machine by one step: detect -> (drifted) repair -> done. None when the stack is fine."""
    name = status.stack_name or ""
    if stacks.dry_run:
        return None
    if target.reconcile_requested and status.drift_detection_id:
        status.drift_detection_id = None  # it may predate the request: look again from now
    if status.repair_change_set_id:
        state = stacks.change_set_status(status.repair_change_set_id).status
        if state == "CREATE_COMPLETE":
            stacks.execute_change_set(status.repair_change_set_id)
            status.repair_change_set_id = None
            status.stack_status = "UPDATE_IN_PROGRESS"
            return AwsResult(
                Verdict("False", "RepairingDrift", f"putting drifted roles of {name} back"),
                requeue_after=settings.in_progress_seconds,
            )
        if state in ("CREATE_PENDING", "CREATE_IN_PROGRESS"):
            return AwsResult(
                Verdict("False", "RepairingDrift", f"preparing the repair of {name}"),
                requeue_after=settings.in_progress_seconds,
            )
        if state == "FAILED":
            stacks.delete_change_set(status.repair_change_set_id)
        status.repair_change_set_id = None
        return None
    if status.drift_detection_id:
        result = stacks.drift_result(name, status.drift_detection_id)
        if result is None:
            return AwsResult(
                Verdict("True", "StackReady", f"stack {name} is ready; checking role drift"),
                role_arns=status.roles,
                requeue_after=settings.in_progress_seconds,
            )
        status.drift_detection_id, status.last_drift_check = None, _now()
        if not result.drifted:
            return None
        ledger.proof("aws").check(stack.created, stack.stack_id, f"stack {name}")
        status.repair_change_set_id = stacks.start_drift_repair(name, parameters)
        _drift_repaired("role")
        message = f"roles of stack {name} were changed outside the operator: {', '.join(result.resources)}; putting them back"
        return AwsResult(
            Verdict("False", "RepairingDrift", message),
            events=[Event("Warning", "DriftRepaired", message)],
            requeue_after=settings.in_progress_seconds,
        )
    if target.reconcile_requested or _seconds_since(status.last_drift_check) >= settings.drift_check_seconds:
        status.drift_detection_id = stacks.start_drift_detection(name)
        return AwsResult(
            Verdict("True", "StackReady", f"stack {name} is ready; checking role drift"),
            role_arns=status.roles,
            requeue_after=settings.in_progress_seconds,
        )
    return None


def _drift_repaired(kind: str) -> None:
    metrics.DRIFT_REPAIRS.labels(kind).inc()


def observe_organization(
    target: Target, stacksets: StackSets, status: OrganizationStatus, settings: Settings
) -> AwsResult:
    """deployment.method Terraform for a management account: the user's Terraform made the member StackSet and its
    instances; the operator reads them for status and MembersReady, and writes nothing."""
    name = observed_name(target)
    observed = stacksets.observe(name)
    status.member_providers = None
    if observed is None:
        message = f"apply the Terraform from `defender-operator render`; StackSet {name} does not exist yet"
        return AwsResult(Verdict("False", "AwaitingTerraform", message), requeue_after=60.0)
    status.stack_set_id, status.member_accounts = observed.stack_set_id, len(observed.instances)
    return _members_verdict(target, stacksets, observed, status, settings, writes=False)


def delegated_management(target: Target, partition: str, status: AwsStatus) -> AwsResult:
    """``organization.delegatedAdministratorAccountId``: the operator signs in to the delegated administrator and
    writes nothing in the management account, whose own stack (its roles and identity provider) its administrators
    deploy from ``defender-operator render``. The connector names those roles as that stack creates them; whether
    Defender can use them shows on the Healthy condition."""
    management, delegate = target.spec.aws.account_id, target.spec.aws.delegated_administrator
    arns = {
        role.key: f"arn:{partition}:iam::{management}:role/{role.name}"
        for role in role_documents(target.spec)
    }
    status.roles = arns
    message = (
        f"signed in to delegated administrator {delegate}, which runs the member StackSet; the management account's "
        f"own roles are deployed by its administrators (`defender-operator render`), never by the operator"
    )
    return AwsResult(Verdict("True", "DelegatedAdministrator", message), role_arns=arns)


def observe_terraform(target: Target, account: AwsAccount, status: AwsStatus) -> AwsResult:
    """deployment.method Terraform: the user applies the Terraform; the operator only waits for the roles."""
    arns, missing = {}, []
    for role in role_documents(target.spec):
        try:
            arns[role.key] = str(call(account.iam, "get_role", RoleName=role.name)["Role"]["Arn"])
        except AwsClientError as exc:
            if exc.code != "NoSuchEntity":
                raise
            missing.append(role.name)
    if missing:
        return AwsResult(
            Verdict(
                "False",
                "AwaitingTerraform",
                f"apply the Terraform from `defender-operator render`; missing roles: {', '.join(missing)}",
            ),
            requeue_after=60.0,
        )
    status.roles = arns
    return AwsResult(Verdict("True", "RolesReady", "every role the plans need exists"), role_arns=arns)
