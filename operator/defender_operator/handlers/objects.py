"""The Kopf layer for AWSConnectors: the event handler that wakes an object's loop when something it acts on changed,
and the daemon that runs the loop, one pass at a time in a worker slot (``reconcile/engine.py`` decides what a pass
does). What they look up about the other objects is in ``indexes.py``."""

import asyncio
import contextlib
import logging
import math
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import kopf

from .. import metrics
from ..api.names import (
    ANNOTATION_ADOPT,
    ANNOTATION_PAUSED,
    ANNOTATION_RECONCILE_REQUESTED_AT,
    FINALIZER,
    GROUP,
    PLURAL,
    VERSION,
)
from ..api.spec import AWSConnectorSpec
from ..api.status import AWSConnectorStatus
from ..kube import FinalizerChange, ObjectGone, StatusConflict, api_server_unavailable, one_line
from ..reconcile import conditions
from ..reconcile.claims import (
    Ticket,
    claims_of,
    conflict_among,
    conflict_with,
    onboarding_key,
)
from ..reconcile.deletion import ORPHANED, released_by_orphan
from ..reconcile.engine import now, reconcile, writes_ahead
from ..reconcile.journal import WriteJournal, abandon, release_held
from ..reconcile.model import Target
from ..reconcile.rollout import (
    Fleet,
    catalog_changes,
    fleet_of,
    upgrading,
    waiting,
    written_before,
)
from ..reconcile.tenancy import Admission
from ..render.catalog import catalog_version
from .indexes import indexes_of
from .runtime import CLEANUP_HANDLER, PROGRESS, Runtime, runtime_of
from .tenancy import admission_of

log = logging.getLogger("defender_operator")


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
        status=AWSConnectorStatus.model_validate(status_without_kopf(body.get("status") or {})),
        annotations=dict(meta.get("annotations") or {}),
        instance=instance,
        holders=(lambda key: [str(h) for h in declared.get(key, [])])
        if declared is not None
        else Target.holders,
    )


def status_without_kopf(status: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(status).items() if k in AWSConnectorStatus.model_fields or k in _ALIASES}


# deep passes in a row, with backoff, after EKS failed for a reason that passes; then the deep check's interval
EKS_RETRIES = 5
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
        if uid in runtime.wakeups:
            # Its loop still runs: Kopf stops an object's daemon when it sees the deletion begin, and an object can
            # go with no deletion seen (a delete that raced the finalizer's addition, kubernetes/kubernetes#110521;
            # its finalizer removed by hand, then deleted, between two watch events). Ended here, or it would pass
            # for ever over the last copy, making records for the gone object (the campaign's seed 62200).
            runtime.gone.add(uid)
            runtime.wakeups[uid].set()
        runtime.seen.pop(uid, None)
        runtime.ready.pop(uid, None)
        runtime.workers.forget(uid)
        runtime.deleting.discard(uid)
        runtime.blocked.pop(uid, None)
        runtime.deep_checked.pop(uid, None)
        runtime.eks_retries.pop(uid, None)
        runtime.catalogs.pop(uid, None)
        runtime.rollout.forget(uid)
        runtime.claims.forget(uid)
        _update_objects_gauge(runtime)
        metrics.forget_object(meta["namespace"], meta["name"], str(spec.get("aws", {}).get("accountId", "")))
        if uid not in runtime.cleaned and await runtime.workers.call(
            abandon, runtime.kube, meta["namespace"], uid
        ):
            log.warning(
                "the object went without its cleanup (its finalizer removed, or a delete raced its addition): "
                "its record is marked abandoned",
                extra={"object": f"{meta['namespace']}/{meta['name']}", "record": uid},
            )
        runtime.cleaned.discard(uid)
        # the conflict is over: the objects that lost the account to this one look again
        parts = indexes_of(indexes)
        for claim in parts["by_account"].get(onboarding_key(spec), []):
            loser_namespace, _slash, loser_name = claim.ref.partition("/")
            for other in parts["by_name"].get((loser_namespace, loser_name), []):
                if other != uid and other in runtime.wakeups:
                    runtime.wakeups[other].set()
    elif runtime.seen.get(uid) != signature:
        runtime.seen[uid] = signature
        event = runtime.wakeups.get(uid)
        if event is not None:
            event.set()
        if released_by_orphan(uid in runtime.blocked, bool(meta.get("deletionTimestamp")), spec):
            namespace, name = meta["namespace"], meta["name"]
            runtime.events.record(namespace, name, uid, ORPHANED)
            await runtime.workers.call(release_held, runtime.kube, namespace, uid, dict(spec))
            runtime.cleaned.add(uid)
            removed = await runtime.workers.call(
                runtime.kube.remove_finalizer, namespace, name, uid, FINALIZER
            )
            if (
                removed is FinalizerChange.NAMESPACE_GONE
            ):  # refused: nothing changes an object in a namespace gone
                log.warning(
                    "released, but its namespace is gone with it left in it: its finalizer stays until a namespace "
                    "of that name is made again and the object is changed",
                    extra={"object": f"{namespace}/{name}"},
                )


def _update_objects_gauge(runtime: Runtime) -> None:
    counts = {"True": 0, "False": 0, "Unknown": 0}
    for state in runtime.ready.values():
        counts[state] = counts.get(state, 0) + 1
    for state, count in counts.items():
        metrics.OBJECTS.labels(state).set(count)
    current = catalog_version()
    catalogs = Counter(runtime.catalogs.values())
    for version in {*runtime.catalogs_seen, *catalogs}:
        label = version or "none"
        metrics.CATALOGS.labels(label, str(version == current).lower()).set(catalogs.get(version, 0))
    runtime.catalogs_seen |= set(catalogs)


def dump_status(status: AWSConnectorStatus) -> dict[str, Any]:
    return status.model_dump(by_alias=True, mode="json", exclude_none=True)


@kopf.daemon(GROUP, VERSION, PLURAL, id="reconcile", cancellation_timeout=10)
async def reconcile_loop(body: Any, uid: str, stopped: Any, memo: Any, **kwargs: Any) -> None:
    runtime = runtime_of(memo)
    wakeup = runtime.wakeups.setdefault(uid, asyncio.Event())
    indexes = indexes_of(kwargs)  # live: Kopf keeps them current for the loop's whole life
    try:
        while not stopped and uid not in runtime.gone:
            wakeup.clear()
            delay = await _one_pass(runtime, body, indexes)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wakeup.wait(), timeout=delay)
        if uid in runtime.gone:
            log.info(
                "the object is gone with no deletion seen; its loop ends",
                extra={"object": f"{body['metadata']['namespace']}/{body['metadata']['name']}"},
            )
    finally:
        runtime.wakeups.pop(uid, None)
        runtime.gone.discard(uid)
        runtime.unfinalized.discard(uid)


async def _one_pass(runtime: Runtime, body: Any, indexes: Any) -> float:
    try:
        return await _one_pass_of(runtime, body, indexes)
    finally:
        _wake_held(runtime)


def _wake_held(runtime: Runtime) -> None:
    """Wake the objects the catalog rollout held, each when its turn comes (a pass just ended a batch or a halt)."""
    loop, now = asyncio.get_running_loop(), time.monotonic()
    for uid, at in runtime.rollout.take_wakes():
        event = runtime.wakeups.get(uid)
        if event is not None:
            loop.call_later(max(0.0, at - now), event.set)


def _fleet(runtime: Runtime, target: Target, indexes: Any) -> Fleet | None:
    """The fleet's standing with the catalog, for a pass the rollout may hold (None for any other: most passes need
    not look at every object)."""
    found = target.status.catalog
    if (found is not None and found.version == catalog_version()) or not _may_wait(target):
        return None
    return fleet_of(
        ((str(uid), standing) for uid, standings in indexes["by_catalog"].items() for standing in standings),
        catalog_version(),
        runtime.rollout.canaries,
    )


def _may_wait(target: Target) -> bool:
    """A pass the catalog rollout may hold: one that would write an object's AWS side as it was (no new generation,
    which goes out at once, as the user asked), whether the object is Ready or not (the batch is a bound)."""
    return (
        target.status.observed_generation == target.generation
        and not target.paused
        and target.spec.deployment.method != "Terraform"
        and written_before(target)
    )


async def _without_finalizer(runtime: Runtime, meta: Any) -> float:
    """Kopf puts the finalizer on first, and a pass writes nothing until then (a write could outlive an object deleted
    at once). Kopf does it on the object's first event and tries again only on its next one, which may never come:
    right after an API-server restart, the namespace controller may not find this API in discovery and finalize a
    namespace being deleted with the object still in it (kubernetes/kubernetes#127977; campaign seed 64033). The API
    server then refuses every change of an object whose namespace does not exist, Kopf's patch too, and the object
    stays in etcd, to come back with no event if a namespace of that name is made again. So a pass that finds the
    finalizer still missing on an object it already saw without one puts it on itself; refused because the namespace
    is gone, it deletes the object, as the namespace's deletion asked (only a deletion passes then), which leaves
    nothing: nothing was written for an object without the finalizer."""
    uid, namespace, name = meta["uid"], meta["namespace"], meta["name"]
    key = f"{namespace}/{name}"
    if uid not in runtime.unfinalized:
        runtime.unfinalized.add(uid)  # seen once without it: Kopf's patch may still be on its way
        return runtime.settings.in_progress_seconds
    try:
        outcome = await runtime.workers.call(runtime.kube.add_finalizer, namespace, name, uid, FINALIZER)
        if outcome is FinalizerChange.NAMESPACE_GONE:
            await runtime.workers.call(runtime.kube.delete_object, namespace, name, uid)
            log.warning(
                "the object's namespace is gone with the object left in it; deleted, as the namespace's deletion "
                "asked (nothing had been written for it)",
                extra={"object": key},
            )
            return runtime.settings.resync_seconds
    except Exception as exc:
        if api_server_unavailable(exc):
            return runtime.settings.in_progress_seconds
        # refused (with watchNamespaces, a Role gone with its namespace): looked at again on the resync interval
        log.warning("the finalizer could not be put on", extra={"object": key, "error": one_line(exc)})
        return runtime.settings.resync_seconds
    if outcome is FinalizerChange.DONE:
        log.info(
            "the finalizer was still missing a pass after the object was seen; put on", extra={"object": key}
        )
    return runtime.settings.in_progress_seconds


async def _one_pass_of(runtime: Runtime, body: Any, indexes: Any) -> float:
    meta = body["metadata"]
    if meta.get("deletionTimestamp") or meta.get("uid") in runtime.deleting:
        return runtime.settings.resync_seconds
    if FINALIZER not in (meta.get("finalizers") or []):
        return await _without_finalizer(runtime, meta)
    runtime.unfinalized.discard(meta["uid"])
    forged = [key for key in PROGRESS.make_keys(CLEANUP_HANDLER) if key in (meta.get("annotations") or {})]
    if forged:
        # Cleanup's state on an object not being deleted was not written by Kopf: Kopf would believe it on delete
        # (a "done" would skip cleanup). The admission policy refuses it at create; this holds where that policy is
        # not installed. Taken off before the first cloud write; the pass runs on the event the removal causes.
        log.warning(
            "the object carried the cleanup handler's state; removed",
            extra={"object": f"{meta['namespace']}/{meta['name']}"},
        )
        await runtime.workers.call(
            runtime.kube.remove_annotations, meta["namespace"], meta["name"], meta["uid"], forged
        )
        return runtime.settings.in_progress_seconds
    try:
        target = target_of(body, runtime.instance, indexes)
    except ValueError as exc:  # the CRD prevents this; a stale CRD might not
        log.error("invalid spec", extra={"object": f"{meta['namespace']}/{meta['name']}", "error": str(exc)})
        return runtime.settings.resync_seconds
    key = onboarding_key(body["spec"])
    conflict = conflict_with(
        indexes["by_account"],
        body["spec"],
        target.uid,
        datetime.now(UTC),
        runtime.settings.claim_grace_seconds,
    )
    try:
        delay = await runtime.workers.exclusive(
            target.uid,
            _pass,
            runtime,
            target,
            str(meta["resourceVersion"]),
            conflict.holder if conflict is not None else None,
            # the grant (and the fleet, for an object the catalog rollout may hold, and the claims of the objects
            # that wrote for its onboarding) as they are when the slot is free, not before; read on the event loop,
            # which is what changes the indexes
            late=lambda: (
                admission_of(runtime, target, indexes),
                _fleet(runtime, target, indexes),
                Ticket(runtime.claims, key, target.uid, target.key, claims_of(indexes["by_account"], key)),
            ),
        )
        if target.uid not in indexes["by_name"].get((target.namespace, target.name), []):
            runtime.claims.forget(
                target.uid
            )  # gone while the pass ran: what it took in the claim book goes too
        if conflict is not None and conflict.lapses_in is not None:
            return min(delay, conflict.lapses_in + 1)  # look again when the holder's claim lapses
        return delay
    except ObjectGone:
        # Deleted while the pass ran (its finalizer removed by hand, say), before the write the pass was about to
        # make: not made, and a record the pass made for it alone went again (``WriteJournal._record``).
        log.info("the object went while its pass ran; it wrote nothing more", extra={"object": target.key})
        runtime.claims.forget(target.uid)
        return runtime.settings.resync_seconds
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
    runtime: Runtime,
    target: Target,
    version: str,
    conflict: str | None,
    late: tuple[Admission, Fleet | None, Ticket],
) -> float:
    """One pass in a worker thread, under the object's lock: reconcile, then write status and Events. ``version``
    is the resourceVersion of the copy ``target`` was read from."""
    if (
        target.uid in runtime.deleting or target.uid in runtime.gone
    ):  # cleanup began, or it went, during the wait
        return runtime.settings.resync_seconds
    admission, fleet, ticket = late
    started = time.monotonic()
    target = replace(target, deep=_deep_due(runtime, target))
    journal = WriteJournal(
        runtime.kube, target, version, admission.allowed_by, runtime.settings.clock_skew_seconds, ticket
    )
    try:
        if conflict is not None and journal.restore_unshown_write():
            # Ranked behind another by its status, which lost its write (a kill before its first pass's result): its
            # record says it wrote, so it ranks as an object that did, as every other object's book already counts it.
            claims = [replace(c, written=True) if c.uid == target.uid else c for c in ticket.others]
            found = conflict_among(
                claims, target.uid, datetime.now(UTC), runtime.settings.claim_grace_seconds
            )
            conflict = found.holder if found is not None else None
        before = target.status.catalog
        if fleet is not None and not conflict and not admission.refusal and catalog_changes(target):
            hold = runtime.rollout.admit(target.uid, target.key, fleet)
            metrics.ROLLOUT_HALTED.set(1 if runtime.rollout.halted else 0)
            status = target.status.model_copy(deep=True)
            status.catalog = waiting(before, hold) if hold is not None else upgrading(before)
            # written before anything is read or written in a cloud: over this copy only (a held pass read nothing), and
            # an update it admits is counted by the next process even if this one dies right after making it
            journal.checkpoint(status)
            if hold is not None:
                log.info("waiting for its turn in the catalog rollout", extra={"object": target.key})
                return runtime.jittered(hold.retry_after or runtime.settings.resync_seconds)
            target = replace(target, status=status)
        if (
            target.status.observed_generation != target.generation
            and not target.paused
            and not journal.unannounced  # a new object: its first status is its first pass's result
        ):
            target = replace(target, status=_announced(target))
            # Another object asks for the same onboarding: its first write is recorded at the write, after the
            # sign-in, not ahead, so an object whose credentials never work never ranks, even for a moment, as one that
            # wrote (nor takes the claim book from the object that can write).
            ahead = () if ticket.contested() else writes_ahead(target, conflict, admission)
            journal.announce(target.status, ahead)
        outcome = reconcile(target, runtime.clouds, runtime.settings, conflict, journal, admission)
        journal.finish(outcome.status)
        runtime.rollout.settled(target.uid, target.key, before, outcome.status)
        metrics.ROLLOUT_HALTED.set(1 if runtime.rollout.halted else 0)
        runtime.catalogs[target.uid] = outcome.status.catalog.version if outcome.status.catalog else None
        for event in outcome.events:
            runtime.events.record(target.namespace, target.name, target.uid, event)
        ready = conditions.get(outcome.status.conditions, "Ready")
        runtime.ready[target.uid] = ready.status if ready else "Unknown"
        _update_objects_gauge(runtime)
        metrics.set_ready(
            target.namespace, target.name, target.spec.aws.account_id, runtime.ready[target.uid]
        )
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
        delay = runtime.jittered(outcome.requeue_after)
        if journal.refused:  # another object was about to write: look again soon, it may not have
            delay = min(delay, runtime.settings.in_progress_seconds)
        return min(delay, _eks_retry_after(runtime, target, outcome.eks_retry))
    finally:
        journal.settle()  # a claim this pass took and recorded no write with is given back, however it ended


def _eks_retry_after(runtime: Runtime, target: Target, failed: bool) -> float:
    """After a deep pass: how soon the next should come for EKS, which failed in it for a reason that passes
    (``failed``). With backoff, EKS_RETRIES times in a row; then on the deep check's interval, as for a refusal: EKS
    throttling an account for long gets no more calls from the operator than before."""
    if not target.deep:
        return math.inf
    if not failed:
        runtime.eks_retries.pop(target.uid, None)
        return math.inf
    tries = runtime.eks_retries[target.uid] = runtime.eks_retries.get(target.uid, 0) + 1
    return math.inf if tries > EKS_RETRIES else runtime.backoff_delay(tries)


def _deep_due(runtime: Runtime, target: Target) -> bool:
    """A deep pass (providers and health too) when nothing is known yet, something changed, a person asked, the
    object is not Ready, EKS failed on the last deep pass for a reason that passes (a few times, with backoff: the
    campaign's seed 68051), or deep_check_seconds have passed."""
    last = runtime.deep_checked.get(target.uid)
    ready = conditions.get(target.status.conditions, "Ready")
    return (
        last is None
        or time.monotonic() - last >= runtime.settings.deep_check_seconds
        or target.status.observed_generation != target.generation
        or target.reconcile_requested
        or 0 < runtime.eks_retries.get(target.uid, 0) <= EKS_RETRIES
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
