"""Cleanup when an AWSConnector is deleted, in the reverse order of creation: the connector, then the stack, then
the identity providers (ours deleted, or only the audiences we added to a shared one removed).

Each call advances by one step and says whether it is done; a stack that is still deleting ends the call with "look
again soon", so no worker waits on CloudFormation. ``deletionPolicy: Orphan`` and paused objects leave both clouds
as they are; an object that never wrote anything (a conflicting duplicate) has nothing to remove.
"""

from dataclasses import dataclass, field

from ..api.status import AWSConnectorStatus, OidcProviderStatus, OrganizationStatus
from ..aws.api import AwsClientError
from ..aws.oidc import OidcProviders
from ..aws.stackset import StackSets, Targets
from .clouds import Clouds
from .model import Event, Target


@dataclass
class Cleanup:
    done: bool
    message: str
    retry_after: float = 0.0
    events: list[Event] = field(default_factory=list)
    status: AWSConnectorStatus | None = None  # progress to record while cleanup is not done


def _release_provider(providers: OidcProviders, provider: OidcProviderStatus | None) -> str | None:
    if provider is None:
        return None
    if provider.owned:
        providers.delete(provider.arn)
        return f"deleted identity provider {provider.arn}"
    if provider.added_audiences:
        providers.remove_audiences(provider.arn, provider.added_audiences)
        return f"removed audiences {', '.join(provider.added_audiences)} from {provider.arn}"
    return None


def _remove_stack_set(
    target: Target,
    stacksets: StackSets,
    status: AWSConnectorStatus,
    in_progress_seconds: float,
    events: list[Event],
) -> Cleanup | None:
    """Remove the member instances, then the StackSet; None once it is gone."""
    org = target.spec.aws.organization
    assert org is not None
    name = org.stack_set_name
    observed = stacksets.observe(name)
    if observed is None or observed.owner not in (None, target.key):
        return None
    organization = status.organization
    if organization is not None and organization.operation_id:
        state, _ = stacksets.operation(name, organization.operation_id)
        if state in ("RUNNING", "QUEUED", "STOPPING"):
            return Cleanup(
                False, f"waiting for StackSet {name} to remove its instances", in_progress_seconds, events
            )
    if observed.instances:
        region = target.spec.deployment.region
        targets = Targets(list(org.organizational_unit_ids) or [stacksets.root()], [], region)
        try:
            operation = stacksets.remove_instances(name, targets)
        except AwsClientError as exc:
            if exc.code != "OperationInProgressException":
                raise
            return Cleanup(
                False, f"waiting for StackSet {name}: {exc.aws_message}", in_progress_seconds, events
            )
        status.organization = organization or OrganizationStatus()
        status.organization.operation_id = operation
        message = f"removing StackSet {name} from {len(observed.instances)} member accounts"
        events.append(Event("Normal", "StackSetDeleting", message))
        return Cleanup(False, message, in_progress_seconds, events, status)
    stacksets.delete(name)
    events.append(Event("Normal", "StackSetDeleted", f"deleted StackSet {name}"))
    return None


def finalize(
    target: Target, clouds: Clouds, in_progress_seconds: float, conflict_with: str | None
) -> Cleanup:
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
    if conflict_with or (status.aws is None and status.azure is None):
        return Cleanup(True, "nothing was written for this object")

    events: list[Event] = []
    if status.azure and status.azure.connector_id:
        clouds.azure(target).delete(target.spec.azure.resource_group, target.connector_name)
        events.append(
            Event("Normal", "ConnectorDeleted", f"deleted security connector {status.azure.connector_id}")
        )
        status.azure.connector_id = None

    aws_status = status.aws
    if aws_status is None or target.spec.deployment.method == "Terraform":
        return Cleanup(
            True, "connector deleted; the Terraform-managed roles are yours to destroy", events=events
        )
    account = clouds.aws(target)
    if account.stacksets is not None and target.spec.aws.organization is not None:
        waiting = _remove_stack_set(target, account.stacksets, status, in_progress_seconds, events)
        if waiting is not None:
            return waiting
    stack = account.stacks.observe(target.spec.stack_name)
    if stack is not None and stack.owner in (None, target.key):
        if stack.status != "DELETE_IN_PROGRESS":
            account.stacks.delete(stack.stack_id)
            events.append(Event("Normal", "StackDeleting", f"deleting stack {target.spec.stack_name}"))
        if stack.status == "DELETE_FAILED":
            reason = account.stacks.first_failure(stack.stack_id) or stack.status_reason
            events.append(
                Event(
                    "Warning",
                    "StackDeleteFailed",
                    f"deleting stack {target.spec.stack_name} failed: {reason}; retrying",
                )
            )
        return Cleanup(
            False, f"waiting for stack {target.spec.stack_name} to be deleted", in_progress_seconds, events
        )

    for provider in (aws_status.oidc_provider, aws_status.ciem_oidc_provider):
        released = _release_provider(account.providers, provider)
        if released:
            events.append(Event("Normal", "IdentityProviderReleased", released))
    aws_status.oidc_provider = aws_status.ciem_oidc_provider = None
    return Cleanup(True, "cleaned up", events=events)
