"""The Kopf layer: translates Kopf's events into calls of ``reconcile()`` and ``finalize()``; decides nothing.

One daemon per object runs the level-based loop: reconcile, write status, post events, then sleep until the requeue
time (jittered, with exponential backoff after errors) or until something changed (a new generation, the pause or
reconcile-requested annotations), whichever comes first. Deletion is an ``on.delete`` handler, so Kopf keeps the
project's finalizer until cleanup is done. An index by AWS account finds duplicates.
"""

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf

from . import metrics
from .api.names import ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT, FINALIZER, GROUP, PLURAL, VERSION
from .api.spec import AWSConnectorSpec
from .api.status import AWSConnectorStatus
from .credentials import CredentialFactory
from .errors import CloudError, RetryableError
from .kube import Kube, load_config
from .reconcile import conditions
from .reconcile.clouds import Clouds
from .reconcile.conditions import Verdict
from .reconcile.deletion import finalize
from .reconcile.engine import now, reconcile
from .reconcile.model import Target
from .settings import Settings

log = logging.getLogger("defender_operator")
T = TypeVar("T")


@dataclass
class Runtime:
    """Everything the handlers share, built once at start-up."""

    settings: Settings
    kube: Kube
    clouds: Clouds
    workers: asyncio.Semaphore
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    seen: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    ready: dict[str, str] = field(default_factory=dict)  # uid -> Ready status, for the objects gauge

    def backoff(self, uid: str) -> float:
        """Exponential backoff with full jitter after consecutive failures."""
        attempts = self.failures.get(uid, 0)
        ceiling = min(
            self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
        )
        return random.uniform(ceiling / 2, ceiling)

    def jittered(self, seconds: float) -> float:
        spread = seconds * self.settings.resync_jitter
        return max(0.1, seconds + random.uniform(-spread, spread))

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self.workers:
            return await asyncio.to_thread(fn, *args)


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


def configure_kopf(settings: kopf.OperatorSettings, operator: Settings) -> None:
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.watching.server_timeout = 300  # the API server ends a watch after 5 minutes; Kopf then re-lists
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.watching.inactivity_timeout = 600
    settings.networking.request_timeout = 60
    settings.posting.enabled = False  # Events are posted by the operator, on transitions only
    settings.execution.max_workers = operator.workers
    settings.scanning.disabled = True  # no CRD or namespace watching: fewer permissions
    settings.peering.standalone = True  # one replica (Deployment strategy Recreate); no peering objects


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    operator: Settings = memo.settings
    configure_kopf(settings, operator)
    kube = Kube(await asyncio.to_thread(load_config))
    memo.runtime = Runtime(
        settings=operator,
        kube=kube,
        clouds=Clouds(operator, CredentialFactory(operator, kube.read_secret)),
        workers=asyncio.Semaphore(operator.workers),
    )
    metrics.MAX_WORKERS.labels(metrics.CONTROLLER).set(operator.workers)
    log.info("defender-operator started", extra={"namespaces": ",".join(operator.namespaces) or "*"})


@kopf.index(GROUP, VERSION, PLURAL)
def by_account(
    namespace: str | None, name: str, spec: Any, meta: Any, **_: Any
) -> dict[str, tuple[str, str]]:
    """AWS account -> (creationTimestamp + uid, "namespace/name") of every object that onboards it."""
    return {
        str(spec.get("aws", {}).get("accountId", "")): (
            f"{meta.get('creationTimestamp')}/{meta.get('uid')}",
            f"{namespace}/{name}",
        )
    }


def conflict_with(index: Any, spec: Any, meta: Any, namespace: str, name: str) -> str | None:
    """The object that onboards the same account and came first, if it is not this one."""
    entries = sorted(index.get(str(spec.get("aws", {}).get("accountId", "")), []))
    if not entries:
        return None
    first = entries[0]
    me = (f"{meta.get('creationTimestamp')}/{meta.get('uid')}", f"{namespace}/{name}")
    return None if first == me else str(first[1])


def target_of(body: Any) -> Target:
    meta = body["metadata"]
    return Target(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=AWSConnectorSpec.model_validate(dict(body["spec"])),
        status=AWSConnectorStatus.model_validate(_status_without_kopf(body.get("status") or {})),
        annotations=dict(meta.get("annotations") or {}),
    )


def _status_without_kopf(status: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(status).items() if k in AWSConnectorStatus.model_fields or k in _ALIASES}


_ALIASES = {f.alias for f in AWSConnectorStatus.model_fields.values() if f.alias}


def _signature(meta: Any) -> tuple[Any, ...]:
    annotations = meta.get("annotations") or {}
    return (
        meta.get("generation"),
        annotations.get(ANNOTATION_PAUSED),
        annotations.get(ANNOTATION_RECONCILE_REQUESTED_AT),
        meta.get("deletionTimestamp"),
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
def wake(meta: Any, memo: Any, type: str | None, **_: Any) -> None:
    """Wake the object's loop when something the loop acts on changed (not on its own status writes)."""
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        return
    uid = meta.get("uid")
    signature = _signature(meta)
    if type == "DELETED":
        runtime.seen.pop(uid, None)
        runtime.ready.pop(uid, None)
        _update_objects_gauge(runtime)
    elif runtime.seen.get(uid) != signature:
        runtime.seen[uid] = signature
        event = runtime.wakeups.get(uid)
        if event is not None:
            event.set()


def _update_objects_gauge(runtime: Runtime) -> None:
    counts = {"True": 0, "False": 0, "Unknown": 0}
    for state in runtime.ready.values():
        counts[state] = counts.get(state, 0) + 1
    for state, count in counts.items():
        metrics.OBJECTS.labels(state).set(count)


def _dump(status: AWSConnectorStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json")


def _normalized(status: Any) -> dict[str, Any]:
    return AWSConnectorStatus.model_validate(_status_without_kopf(status or {})).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10)
async def reconcile_loop(body: Any, uid: str, stopped: Any, memo: Any, **kwargs: Any) -> None:
    runtime = _runtime(memo)
    wakeup = runtime.wakeups.setdefault(uid, asyncio.Event())
    try:
        while not stopped:
            wakeup.clear()
            delay = await _one_pass(runtime, body, kwargs["by_account"])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
    finally:
        runtime.wakeups.pop(uid, None)


async def _one_pass(runtime: Runtime, body: Any, index: Any) -> float:
    meta = body["metadata"]
    if meta.get("deletionTimestamp"):
        return runtime.settings.resync_seconds
    try:
        target = target_of(body)
    except ValueError as exc:  # the CRD prevents this; a stale CRD might not
        log.error("invalid spec", extra={"object": f"{meta['namespace']}/{meta['name']}", "error": str(exc)})
        return runtime.settings.resync_seconds
    conflict = conflict_with(index, body["spec"], meta, target.namespace, target.name)
    with metrics.timed_reconcile():
        try:
            outcome = await runtime.run(reconcile, target, runtime.clouds, runtime.settings, conflict)
        except Exception:
            log.exception("reconcile failed unexpectedly", extra={"object": target.key})
            metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "error").inc()
            metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
            runtime.failures[target.uid] = runtime.failures.get(target.uid, 0) + 1
            return runtime.backoff(target.uid)
    new_status = _dump(outcome.status)
    if _normalized(body.get("status")) != _normalized(new_status):
        await asyncio.to_thread(runtime.kube.patch_status, target.namespace, target.name, new_status)
    for event in outcome.events:
        await asyncio.to_thread(runtime.kube.post_event, target.namespace, target.name, target.uid, event)
    ready = conditions.get(outcome.status.conditions, "Ready")
    runtime.ready[target.uid] = ready.status if ready else "Unknown"
    _update_objects_gauge(runtime)
    result = outcome.result
    metrics.RECONCILE_TOTAL.labels(
        metrics.CONTROLLER, "error" if result in ("error", "terminal") else result
    ).inc()
    if result == "terminal":
        metrics.TERMINAL_ERRORS.labels(metrics.CONTROLLER).inc()
    if result == "error":
        metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
        runtime.failures[target.uid] = runtime.failures.get(target.uid, 0) + 1
        delay = runtime.backoff(target.uid)
        log.warning("retryable error; backing off", extra={"object": target.key, "delay": round(delay, 1)})
        return delay
    runtime.failures.pop(target.uid, None)
    log.info(
        "reconciled",
        extra={
            "object": target.key,
            "result": result,
            "ready": ready.status if ready else "Unknown",
            "reason": ready.reason if ready else "",
        },
    )
    return runtime.jittered(outcome.requeue_after)


@kopf.on.delete(GROUP, VERSION, PLURAL, id="cleanup")
async def cleanup(body: Any, memo: Any, **kwargs: Any) -> None:
    runtime = _runtime(memo)
    target = target_of(body)
    namespace, name = target.namespace, target.name
    conflict = conflict_with(kwargs["by_account"], body["spec"], body["metadata"], namespace, name)
    try:
        result = await runtime.run(
            finalize, target, runtime.clouds, runtime.settings.in_progress_seconds, conflict
        )
    except CloudError as exc:
        delay = (
            runtime.backoff(target.uid)
            if isinstance(exc, RetryableError)
            else runtime.settings.backoff_max_seconds
        )
        runtime.failures[target.uid] = runtime.failures.get(target.uid, 0) + 1
        status = target.status.model_copy(deep=True)
        verdict = Verdict(
            "True" if not exc.retryable else "False", exc.reason, f"cleanup is blocked: {exc.message}"
        )
        status.conditions = conditions.put(status.conditions, "Stalled", verdict, target.generation, now())
        await asyncio.to_thread(runtime.kube.patch_status, namespace, name, _dump(status))
        raise kopf.TemporaryError(f"cleanup: {exc.message}", delay=delay) from None
    for event in result.events:
        await asyncio.to_thread(runtime.kube.post_event, namespace, name, target.uid, event)
    if result.status is not None:
        await asyncio.to_thread(runtime.kube.patch_status, namespace, name, _dump(result.status))
    if not result.done:
        raise kopf.TemporaryError(result.message, delay=result.retry_after)
    runtime.failures.pop(target.uid, None)
    log.info("cleaned up", extra={"object": target.key, "result": result.message})
