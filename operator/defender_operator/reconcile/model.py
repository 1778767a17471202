"""What one reconcile pass works on and what it returns. Plain data: no Kopf, no SDKs."""

from dataclasses import dataclass, field
from typing import Literal

from ..api.names import ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT
from ..api.spec import AWSConnectorSpec
from ..api.status import AWSConnectorStatus


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

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

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
