"""Cleanup when an AWSConnector is deleted, in the reverse order of creation: the connector, then the stack, then
the identity providers (ours deleted, or only the audiences we added to a shared one removed).

Each call advances by one step and says whether it is done; a stack that is still deleting ends the call with "look
again soon", so no worker waits on CloudFormation. ``deletionPolicy: Orphan`` and paused objects leave both clouds
as they are; an object that never wrote anything (a conflicting duplicate) has nothing to remove.
"""

from dataclasses import dataclass, field

from ..api.status import AWSConnectorStatus, OidcProviderStatus
from ..aws.oidc import OidcProviders
from .clouds import Clouds
from .model import Event, Target


@dataclass
class Cleanup:
    done: bool
    message: str
    retry_after: float = 0.0
    events: list[Event] = field(default_factory=list)


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
