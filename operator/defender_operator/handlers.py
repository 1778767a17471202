"""The Kopf layer: translates Kopf's events into calls of ``reconcile()`` and ``finalize()``; decides nothing.

One daemon per object runs the level-based loop: reconcile, write status, post events, then sleep until the requeue
time (jittered, with exponential backoff after errors) or until something changed (a new generation, the pause or
reconcile-requested annotations), whichever comes first. Deletion is an ``on.delete`` handler, so Kopf keeps the
project's finalizer until cleanup is done. An index by AWS account and subscription finds duplicates.

A pass and a cleanup of one object never overlap: both run under the object's lock, which is held until the worker
thread really ends (a cancelled coroutine does not stop its thread), and once cleanup has begun no pass starts.
Before the first write to either cloud, the pass records it (``reconcile/journal.py``: the object's OnboardingRecord,
then ``status.firstCloudWrite``); cleanup works from that record, and of an object without one it has nothing to
remove and ends at once, whatever its credentials. The grant is decided when a worker slot is free, for passes and
cleanups alike.
"""

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any

import kopf

from . import metrics
from .api.names import (
    ANNOTATION_ADOPT,
    ANNOTATION_PAUSED,
    ANNOTATION_RECONCILE_REQUESTED_AT,
    FINALIZER,
    GROUP,
    PLURAL,
    POLICY_PLURAL,
    VERSION,
)
from .api.policy import (
    ClusterOnboardingPolicySpec,
    EffectiveOnboardingPolicySpec,
    EffectiveRule,
    effective_rule,
)
from .api.spec import AWSConnectorSpec
from .api.status import AWSConnectorStatus
from .credentials import CredentialFactory
from .errors import CloudError, RetryableError, TerminalError
from .event_recorder import EventRecorder
from .kube import Kube, StatusConflict, api_server_unavailable, load_config, one_line
from .reconcile import conditions
from .reconcile.claims import claim_rank, conflict_with, onboarding_key
from .reconcile.cleanup_step import cleanup_step
from .reconcile.clouds import Clouds
from .reconcile.conditions import Verdict
from .reconcile.deletion import Cleanup
from .reconcile.engine import now, reconcile, writes_ahead
from .reconcile.journal import WriteJournal, abandon, release_held
from .reconcile.model import Event, Target, resource_keys
from .reconcile.tenancy import Admission, admit
from .settings import Settings
from .workers import Workers

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
    wakeups: dict[str, asyncio.Event] = field(default_factory=dict)
    deleting: set[str] = field(default_factory=set)  # uids whose cleanup has begun: no pass starts any more
    cleaned: set[str] = field(default_factory=set)  # uids whose cleanup ended (their record is gone with it)
    # uid -> (namespace, name) of objects whose cleanup is blocked (cannot reach a cloud, or the grant refuses it)
    blocked: dict[str, tuple[str, str]] = field(default_factory=dict)
    # counts changes of what the grants allow (a policy, or which policies select a namespace), for blocked cleanups
    grants_version: int = 0
    # the grants as the policies' index held them at the last policy event (what passes and cleanups decide from);
    # None until this leader's first policy event, which so wakes blocked cleanups once (a grant given back while no
    # replica led is seen as any other change)
    grants_seen: tuple[str, ...] | None = None
    # namespace -> its labels at its last event (the index holds the new ones by the time a handler runs)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    folding: asyncio.Lock = field(default_factory=asyncio.Lock)  # one fold of the policies at a time
    deep_checked: dict[str, float] = field(default_factory=dict)  # uid -> when its last deep pass ended
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

    def backoff(self, uid: str) -> float:
        """Exponential backoff with full jitter after consecutive failures (each one counted as a retry)."""
        metrics.RETRIES.labels(metrics.CONTROLLER).inc()
        attempts = self.failures.get(uid, 0)
        ceiling = min(
            self.settings.backoff_max_seconds, self.settings.backoff_base_seconds * 2 ** max(attempts - 1, 0)
        )
        return random.uniform(ceiling / 2, ceiling)

    def jittered(self, seconds: float) -> float:
        spread = seconds * self.settings.resync_jitter
        return max(0.1, seconds + random.uniform(-spread, spread))


def _runtime(memo: Any) -> Runtime:
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
    settings.watching.server_timeout = 300  # the API server ends a watch after 5 minutes; Kopf then re-lists
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


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    operator: Settings = memo.settings
    configure_kopf(settings, operator)
    kube = Kube(await asyncio.to_thread(load_config))
    instance = operator.instance if operator.instance else await asyncio.to_thread(_cluster_instance, kube)
    factory = CredentialFactory(operator, kube.read_secret)
    await asyncio.to_thread(factory.warm)
    memo.runtime = Runtime(
        settings=operator,
        kube=kube,
        clouds=Clouds(operator, factory),
        workers=Workers(operator.workers),
        instance=instance,
        events=EventRecorder(kube),
    )
    metrics.MAX_WORKERS.labels(metrics.CONTROLLER).set(operator.workers)
    metrics.precreate()
    await asyncio.to_thread(sync_effective_policy, kube)
    log.info(
        "defender-operator started",
        extra={"namespaces": ",".join(operator.namespaces) or "*", "instance": instance},
    )


def _cluster_instance(kube: Kube) -> str:
    try:
        return f"cluster-{kube.cluster_id()}"
    except Exception as exc:
        raise kopf.PermanentError(
            "cannot tell this cluster's id (the uid of namespace kube-system) for the owner mark: "
            f"{exc}. Set DEFENDER_OPERATOR_INSTANCE, or allow the operator to get namespace kube-system."
        ) from None


# --- tenancy: ClusterOnboardingPolicies --------------------------------------------------------------------------


# The indexes are ``async`` only so that Kopf calls them on its event loop: it runs a plain function in a thread pool,
# one hop per watch event, which cost more than the few dictionary lookups they do.


@kopf.index(GROUP, VERSION, POLICY_PLURAL)
async def policies(name: str, spec: Any, **_: Any) -> dict[str, EffectiveRule]:
    """Policy name -> its rule, as the admission policy reads it."""
    return {name: effective_rule(name, ClusterOnboardingPolicySpec.model_validate(dict(spec)))}


@kopf.index("", "v1", "namespaces")
async def namespace_labels(name: str, labels: Any, **_: Any) -> dict[str, dict[str, str]]:
    """Namespace -> its labels, for the policies' namespace selectors."""
    return {name: dict(labels or {})}


@kopf.on.event(GROUP, VERSION, POLICY_PLURAL)
async def policy_changed(memo: Any, **indexes: Any) -> None:
    """A policy changed: rewrite the admission policy's parameter; when the grants changed, let every object look
    again at once, blocked cleanups too (a grant given back lets them go on). Whether they changed is read from the
    index the passes decide from, not from the parameter: a fold lists every policy afresh and may show a second
    change before the index has it, and the event that brings it would then find nothing new to wake."""
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        return
    async with runtime.folding:  # two folds at once could write the older list last
        await asyncio.to_thread(sync_effective_policy, runtime.kube)
    grants = tuple(sorted(rule.model_dump_json() for rules in indexes["policies"].values() for rule in rules))
    if grants == runtime.grants_seen:  # a policy's metadata, or a re-list: the grants are the same
        return
    runtime.grants_seen = grants
    await _grants_changed(runtime, indexes)


@kopf.on.event("", "v1", "namespaces")
async def namespace_relabelled(name: str, labels: Any, type: str | None, memo: Any, **indexes: Any) -> None:
    """A namespace's labels decide which policies select it: when a label change makes other policies select it, its
    objects look again at once (a grant a label gives or takes applies now, not at their next resync), blocked
    cleanups there too. Labels that change no policy's selection (a GitOps tool's, Pod Security's) wake nothing, nor
    does a namespace seen for the first time (at start, or new: nothing lives in it yet). The labels are kept, not
    the selection: a policy changed since would make a kept selection stale."""
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        return
    if type == "DELETED":
        runtime.namespace_labels.pop(name, None)
        return
    now, before = dict(labels or {}), runtime.namespace_labels.get(name)
    runtime.namespace_labels[name] = now
    if before is None or before == now:
        return
    rules = [rule for entries in indexes["policies"].values() for rule in entries]

    def selecting(labels: dict[str, str]) -> set[str]:
        return {rule.policy for rule in rules if rule.namespaces.selects(name, labels)}

    if selecting(before) != selecting(now):
        await _grants_changed(runtime, indexes, name)


async def _grants_changed(runtime: Runtime, indexes: Any, only: str | None = None) -> None:
    """What the grants allow may have changed for the objects (of namespace ``only``, or all): their loops look
    again at once, and their cleanups a grant blocked try again."""
    runtime.grants_version += 1
    if only is None:
        woken = list(runtime.wakeups)
    else:
        woken = [
            uid for (namespace, _), uids in indexes["by_name"].items() if namespace == only for uid in uids
        ]
    for uid in woken:
        if uid in runtime.wakeups:
            runtime.wakeups[uid].set()
    # the blocked cleanups this process saw and those its status names (blocked before a restart)
    blocked = {**dict(runtime.blocked), **_first_of(indexes["cleanup_blocked"])}
    for uid, (namespace, name) in blocked.items():
        if only is not None and namespace != only:
            continue
        try:
            await asyncio.to_thread(retry_cleanup_now, runtime.kube, uid, namespace, name)
        except Exception as exc:  # the others still go on; this one is tried on its resync
            log.warning(
                "a blocked cleanup could not be woken",
                extra={"object": f"{namespace}/{name}", "error": one_line(exc)},
            )


def retry_cleanup_now(kube: Kube, uid: str, namespace: str, name: str) -> None:
    """A blocked cleanup waits ``resyncSeconds`` for its next try, a delay Kopf keeps in the handler's progress
    annotation (``AnnotationsProgressStorage``, one per handler id). Without it, Kopf runs the handler on the event the
    removal itself causes, as a handler not yet tried (its retry count and start time start again: the handler sets
    neither a retry limit nor a timeout)."""
    kube.remove_annotations(namespace, name, uid, PROGRESS.make_keys(CLEANUP_HANDLER))


def _first_of(index: Any) -> dict[str, tuple[str, str]]:
    return {uid: next(iter(values)) for uid, values in dict(index).items() if values}


def sync_effective_policy(kube: Kube) -> bool:
    """The EffectiveOnboardingPolicy ``effective``: every policy's rule (read afresh, not from the index, so the
    parameter never lags behind a policy that was just written)."""
    rules = [
        effective_rule(p["metadata"]["name"], ClusterOnboardingPolicySpec.model_validate(p.get("spec") or {}))
        for p in sorted(kube.list_policies(), key=lambda p: str(p["metadata"]["name"]))
    ]
    # without nulls, as the API server stores it (it drops them): a null kept would make every sync a change
    spec = EffectiveOnboardingPolicySpec(rules=rules).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    if kube.ensure_effective_policy(spec):
        log.info("admission policy parameter updated", extra={"policies": len(rules)})
        return True
    return False


def admission_of(target: Target, indexes: Any) -> Admission:
    """The grant, decided now from the policies' and namespaces' indexes (on the event loop, which updates them)."""
    rules = [rule for entries in indexes["policies"].values() for rule in entries]
    labels: dict[str, str] = next(iter(indexes["namespace_labels"].get(target.namespace, [])), {})
    return admit(target.spec, target.namespace, labels, rules, adopt=target.adopt)


@kopf.index(GROUP, VERSION, PLURAL)
async def by_account(
    namespace: str | None, name: str, spec: Any, meta: Any, status: Any, **_: Any
) -> dict[str, tuple[str, str]]:
    """AWS account and subscription -> (claim rank, "namespace/name") of every object onboarding it."""
    return {onboarding_key(spec): (claim_rank(meta, status), f"{namespace}/{name}")}


@kopf.index(GROUP, VERSION, PLURAL)
async def cleanup_blocked(
    namespace: str | None, name: str, uid: str, meta: Any, status: Any, **_: Any
) -> dict[str, tuple[str, str]] | None:
    """uid -> (namespace, name) of every object whose status says its cleanup is blocked: the ones a change of the
    grants tries again, whichever process saw them blocked."""
    if not meta.get("deletionTimestamp"):  # the common case, decided without reading the status
        return None
    stalled = [c for c in (status or {}).get("conditions") or [] if c.get("type") == "Stalled"]
    if not stalled or stalled[0].get("reason") != "CleanupBlocked":
        return None
    return {uid: (str(namespace), name)}


@kopf.index(GROUP, VERSION, PLURAL)
async def by_name(namespace: str | None, name: str, uid: str, **_: Any) -> dict[tuple[str, str], str]:
    """(namespace, name) -> uid of every AWSConnector: whose loop to wake when the winner of a conflict goes."""
    return {(str(namespace), name): uid}


@kopf.index(GROUP, VERSION, PLURAL)
async def by_resource(namespace: str | None, name: str, spec: Any, **_: Any) -> dict[str, str]:
    """Each stack, StackSet and connector a live AWSConnector's spec declares -> "namespace/name": adoption never
    takes over what another live object declares, whatever the resource's tags say (``aws_side.live_holder``)."""
    return {key: f"{namespace}/{name}" for key in resource_keys(str(namespace), name, spec)}


def target_of(body: Any, instance: str, indexes: Any = None, spec: dict[str, Any] | None = None) -> Target:
    """The object as a pass sees it (``spec``: another spec than the body's, the record's in a cleanup). With the
    indexes, it can tell which other AWSConnectors live."""
    meta = body["metadata"]
    declared = indexes["by_resource"] if indexes is not None else None
    return Target(
        namespace=meta["namespace"],
        name=meta["name"],
        uid=meta["uid"],
        generation=int(meta.get("generation", 1)),
        spec=AWSConnectorSpec.model_validate(dict(body["spec"]) if spec is None else spec),
        status=AWSConnectorStatus.model_validate(_status_without_kopf(body.get("status") or {})),
        annotations=dict(meta.get("annotations") or {}),
        instance=instance,
        holders=(lambda key: [str(h) for h in declared.get(key, [])])
        if declared is not None
        else Target.holders,
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
        annotations.get(ANNOTATION_ADOPT),
        meta.get("deletionTimestamp"),
        tuple(meta.get("finalizers") or ()),
    )


@kopf.on.event(GROUP, VERSION, PLURAL)
async def wake(body: Any, meta: Any, spec: Any, memo: Any, type: str | None, **indexes: Any) -> None:
    """Wake the object's loop when something the loop acts on changed (not on its own status writes), and the loops
    of the objects that lost its account to it when it goes; release at once an object whose cleanup is blocked when
    it is switched to ``deletionPolicy: Orphan``."""
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        return
    uid = meta.get("uid")
    signature = _signature(meta)
    if type == "DELETED":
        runtime.seen.pop(uid, None)
        runtime.ready.pop(uid, None)
        runtime.workers.forget(uid)
        runtime.deleting.discard(uid)
        runtime.blocked.pop(uid, None)
        runtime.deep_checked.pop(uid, None)
        _update_objects_gauge(runtime)
        metrics.forget_object(meta["namespace"], meta["name"], str(spec.get("aws", {}).get("accountId", "")))
        if uid not in runtime.cleaned and await asyncio.to_thread(
            abandon, runtime.kube, meta["namespace"], uid
        ):
            log.warning(
                "the object went without its cleanup (its finalizer was removed): its record is marked abandoned",
                extra={"object": f"{meta['namespace']}/{meta['name']}", "record": uid},
            )
        runtime.cleaned.discard(uid)
        # the conflict is over: the objects that lost the account to this one look again
        for _rank, ref in indexes["by_account"].get(onboarding_key(spec), []):
            loser_namespace, _slash, loser_name = str(ref).partition("/")
            for other in indexes["by_name"].get((loser_namespace, loser_name), []):
                if other != uid and other in runtime.wakeups:
                    runtime.wakeups[other].set()
    elif runtime.seen.get(uid) != signature:
        runtime.seen[uid] = signature
        event = runtime.wakeups.get(uid)
        if event is not None:
            event.set()
        if (
            uid in runtime.blocked
            and meta.get("deletionTimestamp")
            and spec.get("deletionPolicy") == "Orphan"
        ):
            namespace, name = meta["namespace"], meta["name"]
            runtime.events.record(
                namespace,
                name,
                uid,
                Event("Normal", "Orphaned", "cleanup was blocked; released with deletionPolicy Orphan"),
            )
            await asyncio.to_thread(release_held, runtime.kube, namespace, uid, dict(spec))
            runtime.cleaned.add(uid)
            await asyncio.to_thread(runtime.kube.remove_finalizer, namespace, name, FINALIZER)


def _update_objects_gauge(runtime: Runtime) -> None:
    counts = {"True": 0, "False": 0, "Unknown": 0}
    for state in runtime.ready.values():
        counts[state] = counts.get(state, 0) + 1
    for state, count in counts.items():
        metrics.OBJECTS.labels(state).set(count)


def _dump(status: AWSConnectorStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10)
async def reconcile_loop(body: Any, uid: str, stopped: Any, memo: Any, **kwargs: Any) -> None:
    runtime = _runtime(memo)
    wakeup = runtime.wakeups.setdefault(uid, asyncio.Event())
    try:
        while not stopped:
            wakeup.clear()
            delay = await _one_pass(runtime, body, kwargs)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
    finally:
        runtime.wakeups.pop(uid, None)


async def _one_pass(runtime: Runtime, body: Any, indexes: Any) -> float:
    meta = body["metadata"]
    if meta.get("deletionTimestamp") or meta.get("uid") in runtime.deleting:
        return runtime.settings.resync_seconds
    if FINALIZER not in (meta.get("finalizers") or []):
        # Kopf adds the finalizer first; until then a write could outlive an object deleted at once.
        return runtime.settings.in_progress_seconds
    forged = [key for key in PROGRESS.make_keys(CLEANUP_HANDLER) if key in (meta.get("annotations") or {})]
    if forged:
        # Cleanup's state on an object not being deleted was not written by Kopf: Kopf would believe it on delete
        # (a "done" would skip cleanup). The admission policy refuses it at create; this holds where that policy is
        # not installed. Taken off before the first cloud write; the pass runs on the event the removal causes.
        log.warning(
            "the object carried the cleanup handler's state; removed",
            extra={"object": f"{meta['namespace']}/{meta['name']}"},
        )
        await asyncio.to_thread(
            runtime.kube.remove_annotations, meta["namespace"], meta["name"], meta["uid"], forged
        )
        return runtime.settings.in_progress_seconds
    try:
        target = target_of(body, runtime.instance, indexes)
    except ValueError as exc:  # the CRD prevents this; a stale CRD might not
        log.error("invalid spec", extra={"object": f"{meta['namespace']}/{meta['name']}", "error": str(exc)})
        return runtime.settings.resync_seconds
    conflict = conflict_with(indexes["by_account"], body["spec"], target.namespace, target.name)
    try:
        return await runtime.workers.exclusive(
            target.uid,
            _pass,
            runtime,
            target,
            str(meta["resourceVersion"]),
            conflict,
            late=lambda: admission_of(
                target, indexes
            ),  # the grant as it is when the slot is free, not before
        )
    except StatusConflict:
        # The object changed again while a refused status write was retried (a person editing it, say): look again
        # soon, from a newer copy. Nothing is lost: a cloud write is made only after its record was written, and
        # the next pass writes the status again.
        log.warning("the object changed during the pass; looking again", extra={"object": target.key})
        runtime.failures[target.uid] = runtime.failures.get(target.uid, 0) + 1
        return runtime.backoff(target.uid)
    except Exception as exc:
        if api_server_unavailable(exc):
            # A control-plane upgrade, an overloaded or unreachable API server: an error to back off from, as
            # controller-runtime counts a reconcile that returns one, not a panic (those are bugs, and alert). No
            # cloud write was made without its record, and the next pass writes the status again.
            log.warning(
                "the Kubernetes API server did not answer; backing off",
                extra={"object": target.key, "error": one_line(exc)},
            )
            metrics.count_result("error")
        else:
            log.exception("reconcile failed unexpectedly", extra={"object": target.key})
            metrics.count_panic()
        runtime.failures[target.uid] = runtime.failures.get(target.uid, 0) + 1
        return runtime.backoff(target.uid)


def _pass(
    runtime: Runtime, target: Target, version: str, conflict: str | None, admission: Admission
) -> float:
    """One pass in a worker thread, under the object's lock: reconcile, then write status and Events. ``version``
    is the resourceVersion of the copy ``target`` was read from."""
    if target.uid in runtime.deleting:  # cleanup began while this pass waited for the lock
        return runtime.settings.resync_seconds
    started = time.monotonic()
    target = replace(target, deep=_deep_due(runtime, target))
    journal = WriteJournal(
        runtime.kube, target, version, admission.allowed_by, runtime.settings.clock_skew_seconds
    )
    if target.status.observed_generation != target.generation and not target.paused:
        target = replace(target, status=_announced(target))
        journal.announce(target.status, writes_ahead(target, conflict, admission))
    outcome = reconcile(target, runtime.clouds, runtime.settings, conflict, journal, admission)
    journal.finish(outcome.status)
    for event in outcome.events:
        runtime.events.record(target.namespace, target.name, target.uid, event)
    ready = conditions.get(outcome.status.conditions, "Ready")
    runtime.ready[target.uid] = ready.status if ready else "Unknown"
    _update_objects_gauge(runtime)
    metrics.set_ready(target.namespace, target.name, target.spec.aws.account_id, runtime.ready[target.uid])
    result = outcome.result
    metrics.count_result(result)
    fields = {
        "object": target.key,
        "result": result,
        "ready": ready.status if ready else "Unknown",
        "reason": ready.reason if ready else "",
        "duration": round(time.monotonic() - started, 3),
    }
    if result == "error":
        runtime.failures[target.uid] = runtime.failures.get(target.uid, 0) + 1
        delay = runtime.backoff(target.uid)
        log.warning("retryable error; backing off", extra={**fields, "delay": round(delay, 1)})
        return delay
    runtime.failures.pop(target.uid, None)
    runtime.forget_idle()
    if target.deep and ready is not None and ready.status == "True":
        runtime.deep_checked[target.uid] = time.monotonic()
    log.info("reconciled", extra={**fields, "deep": target.deep})
    return runtime.jittered(outcome.requeue_after)


def _deep_due(runtime: Runtime, target: Target) -> bool:
    """A deep pass (providers and health too) when nothing is known yet, something changed, a person asked, the
    object is not Ready, or deep_check_seconds have passed."""
    last = runtime.deep_checked.get(target.uid)
    ready = conditions.get(target.status.conditions, "Ready")
    return (
        last is None
        or time.monotonic() - last >= runtime.settings.deep_check_seconds
        or target.status.observed_generation != target.generation
        or target.reconcile_requested
        or ready is None
        or ready.status != "True"
    )


def _announced(target: Target) -> AWSConnectorStatus:
    """A new generation: the status that says so, written before any cloud call (Reconciling=True,
    observedGeneration)."""
    status = target.status.model_copy(deep=True)
    status.conditions = conditions.started(status.conditions, target.generation, now())
    status.observed_generation = target.generation
    return status


def _left_behind(status: AWSConnectorStatus) -> str:
    """What the last status says may be left in the clouds, for a blocked cleanup's message."""
    things = []
    if status.azure and status.azure.connector_id:
        things.append(f"security connector {status.azure.connector_id}")
    if status.aws and status.aws.stack_name:
        things.append(f"stack {status.aws.stack_name}")
    if status.aws and status.aws.oidc_provider:
        things.append(f"this object's use of identity provider {status.aws.oidc_provider.arn}")
    return ", ".join(things) or "whatever the operator wrote before its first status update"


def _finalize(runtime: Runtime, body: Any, admission_for: Any) -> Cleanup:
    """One step of cleanup in a worker thread (``reconcile/cleanup_step.py`` decides what it acts on)."""
    meta = body["metadata"]
    return cleanup_step(
        runtime.kube,
        runtime.clouds,
        meta["uid"],
        meta["namespace"],
        dict(body.get("spec") or {}),
        lambda spec: target_of(body, runtime.instance, spec=spec),
        admission_for,
        runtime.settings.in_progress_seconds,
        runtime.settings.clock_skew_seconds,
    )


@kopf.on.delete(GROUP, VERSION, PLURAL, id=CLEANUP_HANDLER)
async def cleanup(body: Any, memo: Any, **indexes: Any) -> None:
    runtime = _runtime(memo)
    try:
        await _cleanup(runtime, body, indexes)
    except kopf.TemporaryError:
        raise
    except Exception as exc:
        if not api_server_unavailable(exc):
            raise
        # A control-plane upgrade or an unreachable API server (a record, a Secret or the status could not be read or
        # written): an error to back off from, as in a pass, not a failure of the handler.
        uid = body["metadata"]["uid"]
        log.warning(
            "the Kubernetes API server did not answer during cleanup; backing off",
            extra={
                "object": f"{body['metadata']['namespace']}/{body['metadata']['name']}",
                "error": one_line(exc),
            },
        )
        runtime.failures[uid] = runtime.failures.get(uid, 0) + 1
        raise kopf.TemporaryError(
            "cleanup: the Kubernetes API server did not answer", delay=runtime.backoff(uid)
        ) from None


async def _cleanup(runtime: Runtime, body: Any, indexes: Any) -> None:
    meta = body["metadata"]
    uid, key = meta["uid"], f"{meta['namespace']}/{meta['name']}"
    runtime.deleting.add(uid)
    runtime.wakeups.get(uid, asyncio.Event()).set()
    started, grants = time.monotonic(), runtime.grants_version

    def admission_for(target: Target) -> Admission:
        return admission_of(target, indexes)

    try:
        result = await runtime.workers.exclusive(uid, _finalize, runtime, body, admission_for)
    except CloudError as exc:
        await _blocked(runtime, body, exc, grants)
        return  # not reached: _blocked raises
    except ValueError as exc:  # an object from before records whose spec the operator cannot read
        await _blocked(
            runtime, body, TerminalError("InvalidSpec", f"the spec cannot be read: {one_line(exc)}"), grants
        )
        return
    runtime.blocked.pop(uid, None)
    namespace, name = meta["namespace"], meta["name"]
    for event in result.events:
        runtime.events.record(namespace, name, uid, event)
    status = _status_of(body)
    if result.status is not None and _dump(status) != _dump(result.status):
        await asyncio.to_thread(runtime.kube.write_status, namespace, name, _dump(result.status))
    if not result.done:
        raise kopf.TemporaryError(result.message, delay=result.retry_after)
    runtime.failures.pop(uid, None)
    runtime.cleaned.add(uid)
    log.info(
        "cleaned up",
        extra={"object": key, "result": result.message, "duration": round(time.monotonic() - started, 3)},
    )


def _status_of(body: Any) -> AWSConnectorStatus:
    return AWSConnectorStatus.model_validate(_status_without_kopf(body.get("status") or {}))


async def _blocked(runtime: Runtime, body: Any, exc: CloudError, grants: int) -> None:
    """Cleanup could not reach a cloud. Retryable: back off. Otherwise (credentials broke after something was
    written, the grant was withdrawn, ownership is disputed): say what is left and the ways out, once, and look again
    on the resync interval, or at once when the grants changed while this attempt ran (``grants`` is the version it
    began with: a change since then found no blocked cleanup to wake)."""
    meta = body["metadata"]
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    runtime.failures[uid] = runtime.failures.get(uid, 0) + 1
    if isinstance(exc, RetryableError):
        raise kopf.TemporaryError(f"cleanup: {exc.message}", delay=runtime.backoff(uid))
    assert isinstance(exc, TerminalError)
    runtime.blocked[uid] = (namespace, name)
    status = _status_of(body)
    message = (
        f"cleanup is blocked: {exc.message}. Left in place: {_left_behind(status)}. Fix the cause (cleanup is "
        "retried), or set spec.deletionPolicy to Orphan to release the object and keep them."
    )
    status = status.model_copy(deep=True)
    verdict = Verdict("True", "CleanupBlocked", message)
    generation = int(meta.get("generation", 1))
    before = conditions.get(status.conditions, "Stalled")
    status.conditions = conditions.put(status.conditions, "Stalled", verdict, generation, now())
    status.observed_generation = generation  # the delete bumped it: this is what was seen of that generation
    if before is None or (before.status, before.reason, before.message) != (
        "True",
        "CleanupBlocked",
        message,
    ):
        await asyncio.to_thread(runtime.kube.write_status, namespace, name, _dump(status))
        runtime.events.record(namespace, name, uid, Event("Warning", "CleanupBlocked", message))
    log.warning("cleanup blocked", extra={"object": f"{namespace}/{name}", "reason": exc.reason})
    delay = 1.0 if runtime.grants_version != grants else runtime.jittered(runtime.settings.resync_seconds)
    raise kopf.TemporaryError(message, delay=delay)
