"""Cleanup when an AWSConnector is deleted, in the reverse order of creation: the connector, then the StackSet and
the stack, then the identity providers (deleted, or only the audiences the operator added removed).

Cleanup does not trust ``status`` to know what exists: it finds the connector, stack and StackSet by their
deterministic names and removes them only when they carry this object's owner mark, and it finds the identity
providers by this object's user tag. So it is complete even when the object was deleted before its first status
write or while the operator was down. The one thing status does tell is ``firstCloudWrite``, written per cloud before
the first write there: a cloud without it was never written to and is not even signed in to, so an object whose
credentials never worked is released at once.

Each call advances by one step and says whether it is done; a stack that is still deleting ends the call with "look
again soon", so no worker waits on CloudFormation. Each removal happens once: the next call sees it gone and says
nothing more. ``deletionPolicy: Orphan`` and paused objects leave both clouds as they are.
"""

from dataclasses import dataclass, field

from ..api.status import AWSConnectorStatus, FirstCloudWrite, OrganizationStatus
from ..aws.stackset import StackSets
from ..errors import RetryableError
from .aws_side import AwsAccount, provider_specs, release_provider
from .clouds import Clouds
from .eks_side import made_entries, remove_entries
from .member_providers import release_members
from .model import Event, Target


@dataclass
class Cleanup:
    done: bool
    message: str
    retry_after: float = 0.0
    events: list[Event] = field(default_factory=list)
    status: AWSConnectorStatus | None = None  # progress to record while cleanup is not done


def _remove_stack_set(
    target: Target,
    account: AwsAccount,
    stacksets: StackSets,
    status: AWSConnectorStatus,
    in_progress_seconds: float,
    events: list[Event],
) -> Cleanup | None:
    """Remove the member instances, then the StackSet; None once it is gone (or is not ours). Member accounts'
    identity providers are released first, in every account of the organization (by this object's tag on them)."""
    org = target.spec.aws.organization
    assert org is not None
    name = org.stack_set_name
    observed = stacksets.observe(name)
    if observed is None or not target.owner.owns(observed.tags):
        return None
    organization = status.organization
    if organization is not None and organization.operation_id:
        state, _ = stacksets.operation(name, organization.operation_id)
        if state in ("RUNNING", "QUEUED", "STOPPING"):
            return Cleanup(
                False, f"waiting for StackSet {name} to remove its instances", in_progress_seconds, events
            )
    if account.members is not None:
        everyone = stacksets.accounts_under([stacksets.root()], target.spec.aws.account_id)
        microsoft = provider_specs(target)["microsoft"]
        events += release_members(
            account.members, microsoft, target.owner, everyone | set(observed.instances)
        )
    if observed.instances:
        try:
            operation = stacksets.remove_instances(name, observed.instances, target.spec.deployment.region)
        except RetryableError as exc:  # StackSetBusy: another operation runs on it
            return Cleanup(False, f"waiting for StackSet {name}: {exc.message}", in_progress_seconds, events)
        status.organization = organization or OrganizationStatus()
        status.organization.operation_id = operation
        message = f"removing StackSet {name} from {len(observed.instances)} member accounts"
        events.append(Event("Normal", "StackSetDeleting", message))
        return Cleanup(False, message, in_progress_seconds, events, status)
    stacksets.delete(name)
    events.append(Event("Normal", "StackSetDeleted", f"deleted StackSet {name}"))
    return None


def _granted_access_entries(target: Target, status: AWSConnectorStatus) -> bool:
    """Whether the object may have created EKS access entries: it manages them, or status still shows some it made
    (after a switch back to Report). Not scanning otherwise spares every cleanup the calls, and an operator without
    EKS permissions the refusal."""
    if target.spec.aws.eks_access_entries == "Manage":
        return True
    return made_entries(status.eks)


def finalize(target: Target, clouds: Clouds, in_progress_seconds: float) -> Cleanup:
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
            connectors.delete(rg, name, connector.etag)
            events.append(Event("Normal", "ConnectorDeleted", f"deleted security connector {connector.id}"))

    if written.aws is None or target.spec.deployment.method == "Terraform":
        return Cleanup(True, "cleaned up; Terraform-managed roles are yours to destroy", events=events)
    account = clouds.aws(target)
    if account.stacksets is not None and target.spec.aws.organization is not None:
        waiting = _remove_stack_set(target, account, account.stacksets, status, in_progress_seconds, events)
        if waiting is not None:
            return waiting
    stack_name = target.spec.stack_name
    stack = account.stacks.observe(stack_name)
    deleting = stack is not None and stack.status == "DELETE_IN_PROGRESS"
    if _granted_access_entries(target, status) and not deleting:  # before the role they name goes
        events += remove_entries(target.spec, owner, account.eks, account.partition, account.account)
    if stack is not None and owner.owns(stack.tags):
        if stack.status != "DELETE_IN_PROGRESS":
            account.stacks.delete(stack.stack_id)
            if stack.status == "DELETE_FAILED":
                reason = account.stacks.first_failure(stack.stack_id) or stack.status_reason
                message = f"deleting stack {stack_name} failed: {reason}; retrying"
                events.append(Event("Warning", "StackDeleteFailed", message))
            else:
                events.append(Event("Normal", "StackDeleting", f"deleting stack {stack_name}"))
        return Cleanup(False, f"waiting for stack {stack_name} to be deleted", in_progress_seconds, events)

    for provider in account.providers.list_used_by(owner):
        release_provider(account.providers, provider.arn, owner, events)
    if status.aws is not None:
        status.aws.oidc_provider = status.aws.ciem_oidc_provider = None
    return Cleanup(True, "cleaned up", events=events)
