"""What one reconcile pass works on and what it returns. Plain data: no Kopf, no SDKs."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..api.names import ANNOTATION_ADOPT, ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT
from ..api.spec import AWSConnectorSpec
from ..api.status import AWSConnectorStatus
from ..ownership import Owner


@dataclass(frozen=True)
class Target:
    """One AWSConnector as the API server last showed it."""

    namespace: str
    name: str
    uid: str
    generation: int
    spec: AWSConnectorSpec
    status: AWSConnectorStatus
    annotations: dict[str, str] = field(default_factory=dict)
    instance: str = "default"  # the operator installation (settings.instance), part of the owner mark
    deep: bool = True  # also check the identity providers and Defender's health (settings.deep_check_seconds)
    # a resource key (``resource_keys``) -> "namespace/name" of every live AWSConnector whose spec declares it (the
    # operator's own index, not tags): adoption never takes over what another live object declares
    holders: Callable[[str], list[str]] = field(default=lambda key: [], compare=False, repr=False)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def owner(self) -> Owner:
        return Owner(self.instance, self.namespace, self.name, self.uid)

    @property
    def adopt(self) -> bool:
        """The object asks to take over an existing stack, StackSet or connector that carries no mark of its own."""
        return self.annotations.get(ANNOTATION_ADOPT, "").lower() == "true"

    @property
    def connector_name(self) -> str:
        return self.spec.azure.connector_name or self.name

    @property
    def paused(self) -> bool:
        return self.annotations.get(ANNOTATION_PAUSED, "").lower() == "true"

    @property
    def requested_at(self) -> str | None:
        return self.annotations.get(ANNOTATION_RECONCILE_REQUESTED_AT)

    @property
    def reconcile_requested(self) -> bool:
        """A reconcile-requested-at value this operator has not handled yet."""
        return bool(self.requested_at) and self.requested_at != self.status.last_handled_reconcile_at


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post about the object (on transitions and actions only)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Result = Literal["success", "requeue_after", "error", "terminal"]


@dataclass
class Outcome:
    """The new status, the events to post, and when to look again. ``eks_retry``: EKS, which only deep passes look
    at, failed for a reason that passes (throttling, 5xx, a dropped connection): the next deep pass should come
    soon, not on the deep check's interval."""

    status: AWSConnectorStatus
    events: list[Event]
    requeue_after: float
    result: Result
    eks_retry: bool = False


def resource_keys(namespace: str, name: str, spec: Mapping[str, Any]) -> list[str]:
    """The names in the clouds a spec (as stored, defaults applied) makes its object write: its stack, its StackSet,
    its connector. Two live objects declaring one of them cannot both own it."""
    aws, azure = spec.get("aws") or {}, spec.get("azure") or {}
    account = str(aws.get("accountId", ""))
    stack = (spec.get("deployment") or {}).get("stackName") or f"DefenderForCloud-{account}"
    keys = [f"stack/{account}/{stack}"]
    if aws.get("organization") is not None:
        stack_set = (aws.get("organization") or {}).get("stackSetName") or "DefenderForCloud-Members"
        keys.append(f"stackset/{account}/{stack_set}")
    subscription, group = (
        str(azure.get("subscriptionId", "")).lower(),
        str(azure.get("resourceGroup", "")).lower(),
    )
    keys.append(f"connector/{subscription}/{group}/{(azure.get('connectorName') or name).lower()}")
    return keys
