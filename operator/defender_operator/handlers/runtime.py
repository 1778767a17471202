"""What the Kopf handlers share: the runtime built at start-up, and Kopf's settings for this operator."""

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

import kopf

from .. import metrics
from ..api.names import (
    FINALIZER,
    GROUP,
)
from ..api.policy import EffectiveRule
from ..event_recorder import EventRecorder
from ..kube import Kube
from ..reconcile.claims import ClaimBook
from ..reconcile.clouds import Clouds
from ..reconcile.rollout import CatalogRollout
from ..settings import Settings
from ..workers import Workers

log = logging.getLogger("defender_operator")


@dataclass
class Runtime:
    """Everything the handlers share, built once at start-up."""

    settings: Settings
    kube: Kube
    clouds: Clouds
    workers: Workers
    instance: str
    events: EventRecorder
    rollout: CatalogRollout
    claims: ClaimBook = field(default_factory=ClaimBook)  # who writes for an onboarding (reconcile/claims.py)
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)  # uids whose cleanup has begun: no pass starts any more
    cleaned: set[str] = field(default_factory=set)  # uids whose cleanup ended (their record is gone with it)
    # uids gone from the API server while their loop ran, with no deletion Kopf saw (so Kopf never stops that loop)
    gone: set[str] = field(default_factory=set)
    # namespaces deleted while objects of theirs were still being deleted (finalized without them:
    # handlers/tenancy.py: _touch_left_behind)
    left_behind: set[str] = field(default_factory=set)
    # uids a pass saw without Kopf's finalizer (handlers/objects.py: _without_finalizer)
    unfinalized: set[str] = field(default_factory=set)
    # uid -> (namespace, name) of objects whose cleanup is blocked (cannot reach a cloud, or the grant refuses it)
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)
    # counts changes of what the grants allow (a policy, or which policies select a namespace), for blocked cleanups
    grants_version: int = 0
    # the grants as the last fold saw them, each view of the policies (tenancy.rule_views: what passes and cleanups
    # decide from); None until this leader's first fold, which so wakes blocked cleanups once (a grant given back
    # while no replica led is seen as any other change)
    grants_seen: tuple[tuple[str, ...], ...] | None = None
    # namespace -> its labels at its last event (the index holds the new ones by the time a handler runs)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    folding: asyncio.Lock = field(default_factory=asyncio.Lock)  # one fold of the policies at a time
    # the policies' rules as the last fold listed them (a grant holds where these and the index agree:
    # tenancy.rule_views)
    listed: list[EffectiveRule] | None = None
    vanished: dict[str, float] = field(
        default_factory=dict
    )  # policy name -> when a list first showed it gone
    # list the policies and the namespaces again every policy_relist_seconds
    relisting: list["asyncio.Task[None]"] = field(default_factory=list)
    # namespace -> its labels as the last list of the namespaces showed them (tenancy.label_views), and how many
    # lists of them have begun; one list at a time
    listed_labels: dict[str, dict[str, str]] | None = None
    labels_lists: int = 0
    labels_listing: asyncio.Lock = field(default_factory=asyncio.Lock)
    # policy name -> (its rule, when its grace ends) for policies deleted less than policy_grace_seconds ago
    departed: dict[str, tuple[EffectiveRule, float]] = field(default_factory=dict)
    tasks: set["asyncio.Task[None]"] = field(
        default_factory=set
    )  # the graces' timers, kept from the collector
    deep_checked: dict[str, float] = field(default_factory=dict)  # uid -> when its last deep pass ended
    eks_retries: dict[str, int] = field(
        default_factory=dict
    )  # uid -> deep passes in a row EKS failed in, passing
    last_forget: float = 0.0

    def forget_idle(self) -> None:
        """Once a minute: drop clients and credentials no object used for three resync intervals (every live object
        uses its own at least once per interval), so memory follows the live objects."""
        now = time.monotonic()
        if now - self.last_forget >= 60:
            self.last_forget = now
            dropped = self.clouds.forget_idle(3 * self.settings.resync_seconds)
            if dropped:
                log.info("idle clients dropped", extra={"dropped": dropped})

    seen: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    ready: dict[str, str] = field(default_factory=dict)  # uid -> Ready status, for the objects gauge
    catalogs: dict[str, str | None] = field(
        default_factory=dict
    )  # uid -> status.catalog.version, for its gauge
    catalogs_seen: set[str | None] = field(default_factory=set)  # versions the gauge has a series for

    def backoff(self, uid: str) -> float:
        """Exponential backoff with full jitter after consecutive failures (each one counted as a retry)."""
        metrics.RETRIES.labels(metrics.CONTROLLER).inc()
        return self.backoff_delay(self.failures.get(uid, 0))

    def backoff_delay(self, attempts: int) -> float:
        """The delay after ``attempts`` failures in a row: doubling from the base up to the maximum, jittered."""
        ceiling = min(
            self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
        )
        return random.uniform(ceiling / 2, ceiling)

    def jittered(self, seconds: float) -> float:
        spread = seconds * self.settings.resync_jitter
        return max(0.1, seconds + random.uniform(-spread, spread))


def runtime_of(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


class NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: this operator has no creation or update handlers (the daemon's loop compares generations and
    annotations itself, see ``wake``), so Kopf's ``last-handled-configuration`` annotation, a copy of the spec that
    costs one more PATCH for every new object and a deep copy of the body on every watch event, would serve nothing.
    Every object reads as already handled; deletion (the only changing cause with a handler) is detected from
    ``deletionTimestamp``, not from a diff."""

    _NOTHING = kopf.BodyEssence()

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return self._NOTHING

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self._NOTHING

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


CLEANUP_HANDLER = "cleanup"
# Kopf's handler states (a delayed retry's time among them), as annotations of the object
PROGRESS = kopf.AnnotationsProgressStorage(prefix=GROUP)


def configure_kopf(settings: kopf.OperatorSettings, operator: Settings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = PROGRESS
    settings.persistence.diffbase_storage = NoDiffBase()
    # the API server ends a watch after 5 minutes; Kopf then watches again from the last resourceVersion it saw (it
    # lists again only when that is gone, 410)
    settings.watching.server_timeout = 300
    # a LIST then a watch, never a streaming list (sendInitialEvents): an API server over an etcd without
    # RequestWatchProgress accepts that request and then ends it with an error (the sandbox's etcd 3.5.1 is one)
    settings.watching.initial_streaming = False
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = 600
    settings.networking.request_timeout = 60
    settings.posting.enabled = False  # Events are posted by the operator, on transitions only
    settings.scanning.disabled = True  # no CRD or namespace watching: fewer permissions
    settings.peering.standalone = True  # one active replica through the Lease (leader.py), not Kopf's peering
