"""What one reconcile pass works on and what it returns. Plain data: no Kopf, no SDKs."""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

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
    # (namespace, name) -> whether that AWSConnector exists now; unknown means it may: adoption is then refused
    live: Callable[[str, str], bool] = field(default=lambda namespace, name: True, compare=False, repr=False)

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
    """The new status, the events to post, and when to look again."""

    status: AWSConnectorStatus
    events: list[Event]
    requeue_after: float
    result: Result
