"""The Kopf layer for deletion: the ``on.delete`` handler, so Kopf keeps the project's finalizer until cleanup is
done; one step at a time in the object's worker slot (``reconcile/cleanup_step.py`` decides what it acts on), and a
blocked cleanup says what is left and the ways out."""

import asyncio
import logging
import time
from typing import Any

import kopf

from ..api.names import (
    GROUP,
    PLURAL,
    VERSION,
)
from ..api.status import AWSConnectorStatus
from ..errors import CloudError, RetryableError, TerminalError
from ..kube import api_server_unavailable, namespace_gone, one_line
from ..reconcile import conditions
from ..reconcile.cleanup_step import cleanup_step
from ..reconcile.conditions import Verdict
from ..reconcile.deletion import Cleanup
from ..reconcile.engine import now
from ..reconcile.model import Event, Target
from ..reconcile.tenancy import Admission, admit_in_views, admit_left_behind
from .indexes import indexes_of
from .objects import dump_status, status_without_kopf, target_of
from .runtime import CLEANUP_HANDLER, Runtime, runtime_of
from .tenancy import label_views, rule_views

log = logging.getLogger("defender_operator")

# how long a cleanup takes its own steps while the object's namespace is gone (Kopf can keep no retry then)
LEFT_BEHIND_CLEANUP_SECONDS = 1800.0


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


def _finalize(
    runtime: Runtime, body: Any, admission_for: Any, seen: dict[str, Any], views: dict[str, Any]
) -> Cleanup:
    """One step of cleanup in a worker thread (``reconcile/cleanup_step.py`` decides what it acts on), from the status
    the object has now: the handler's body is the one of the event the deletion brought, and a pass that held the
    object's lock until now may have written since, above all withdrawn a first write it had announced and not made
    (a status that still claimed it would have cleanup sign in with credentials that never worked, and stay blocked).
    ``seen["body"]`` is left holding that body, for what the handler writes after. ``views``: the grant's views, taken
    on the event loop once the worker slot was held."""
    seen["views"] = views
    meta = body["metadata"]
    live = runtime.kube.live_status(meta["namespace"], meta["name"], meta["uid"])
    current = {**body, "status": live[0]} if live is not None else body
    if "progress" in seen:  # a namespace that is gone takes no status: the last step's, carried here
        current = {**current, "status": seen["progress"]}
    seen["body"] = current
    return cleanup_step(
        runtime.kube,
        runtime.clouds,
        meta["uid"],
        meta["namespace"],
        dict(current.get("spec") or {}),
        lambda spec: target_of(current, runtime.instance, spec=spec),
        admission_for,
        runtime.settings.in_progress_seconds,
        runtime.settings.clock_skew_seconds,
    )


@kopf.on.delete(GROUP, VERSION, PLURAL, id=CLEANUP_HANDLER)
async def cleanup(body: Any, memo: Any, **indexes: Any) -> None:
    runtime = runtime_of(memo)
    try:
        await _cleanup(runtime, body, indexes_of(indexes))
    except kopf.TemporaryError:
        raise
    except Exception as exc:
        namespace = body["metadata"]["namespace"]
        if namespace_gone(exc, namespace):
            # Finalized without this object (kubernetes/kubernetes#127977): nothing of it can change until a
            # namespace of its name exists again, which touches it (handlers/tenancy.py: _touch_left_behind)
            log.warning(
                "cleanup: the object's namespace is gone; it ends once a namespace of its name is made again",
                extra={"object": f"{namespace}/{body['metadata']['name']}"},
            )
            raise kopf.TemporaryError(
                "cleanup: the object's namespace is gone", delay=runtime.settings.resync_seconds
            ) from None
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
    # Out of the catalog rollout for good: its place in a batch is given back now, not when the object is gone (a
    # cleanup blocked by credentials its tenant broke would otherwise hold the batch open for as long as it lasts).
    runtime.rollout.forget(uid)
    started, grants = time.monotonic(), runtime.grants_version

    def admission_for(target: Target, allowed_by: str | None, namespace_gone: bool) -> Admission:
        views = seen["views"]
        if not namespace_gone:
            return admit_in_views(
                target.spec, target.namespace, views["labels"], views["rules"], adopt=target.adopt
            )
        # No labels are left to select it by: a selector that matches none (DoesNotExist, NotIn, {}) would allow it,
        # one that never selected the namespace too. Only the policy that allowed the last write decides.
        seen["namespace_gone"] = True
        return admit_left_behind(target.spec, target.namespace, views["rules"], allowed_by, target.adopt)

    def views_now() -> dict[str, Any]:
        """The grant's views, taken on the event loop, where Kopf changes its indexes (a worker thread could meet
        them mid-change), once the worker slot is held (a pass may hold the object's lock for minutes)."""
        return {
            "rules": rule_views(runtime, indexes),
            "labels": label_views(runtime, indexes, meta["namespace"]),
        }

    seen: dict[str, Any] = {"body": body}
    left_behind_until = time.monotonic() + LEFT_BEHIND_CLEANUP_SECONDS
    gone_seen = False  # a step of this call found the namespace gone: Kopf can keep no retry of an error then
    while True:
        seen["namespace_gone"] = False
        try:
            try:
                result = await runtime.workers.exclusive(
                    uid, _finalize, runtime, body, admission_for, seen, late=views_now
                )
            finally:
                gone_seen = gone_seen or seen["namespace_gone"]
                if seen["namespace_gone"]:
                    # While the namespace is gone Kopf can neither keep a retry nor take the finalizer off: the
                    # object is touched when a namespace of its name is made again (tenancy._touch_left_behind)
                    runtime.left_behind.add(meta["namespace"])
        except Exception as exc:
            passing = isinstance(exc, RetryableError) or api_server_unavailable(exc)
            if passing and gone_seen and time.monotonic() < left_behind_until:
                runtime.failures[uid] = runtime.failures.get(uid, 0) + 1
                await asyncio.sleep(runtime.backoff(uid))
                continue
            if isinstance(exc, CloudError):
                await _blocked(runtime, seen["body"], exc, grants)
            if isinstance(exc, ValueError):  # an object from before records whose spec cannot be read
                invalid = TerminalError("InvalidSpec", f"the spec cannot be read: {one_line(exc)}")
                await _blocked(runtime, seen["body"], invalid, grants)
            raise  # _blocked raises: reached for the others (an API server that did not answer, in cleanup())
        if result.namespace_gone:
            gone_seen = True
            runtime.left_behind.add(meta["namespace"])
        if result.parked:
            # Done in the clouds; the finalizer cannot come off until the namespace is made again, when the object
            # is touched and this handler, run once more, finds nothing to do and lets it go.
            runtime.blocked.pop(uid, None)
            log.info(
                "cleaned up; the object goes once a namespace of its name is made again",
                extra={"object": key, "duration": round(time.monotonic() - started, 3)},
            )
            raise kopf.TemporaryError(result.message, delay=runtime.jittered(runtime.settings.resync_seconds))
        if result.done or not result.namespace_gone or time.monotonic() >= left_behind_until:
            break
        # Kopf could keep no retry (nor post an Event) for an object whose namespace is gone: this handler takes the
        # steps itself, so that what the object made is gone from the clouds whether or not the namespace comes back
        log.info("cleanup goes on while its namespace is gone", extra={"object": key, "step": result.message})
        if result.status is not None:
            seen["progress"] = dump_status(result.status)
        await asyncio.sleep(max(result.retry_after, runtime.settings.in_progress_seconds))
    runtime.blocked.pop(uid, None)
    namespace, name = meta["namespace"], meta["name"]
    for event in result.events:
        runtime.events.record(namespace, name, uid, event)
    status = _status_of(seen["body"])
    if result.status is not None and dump_status(status) != dump_status(result.status):
        await runtime.workers.call(
            runtime.kube.write_status, namespace, name, dump_status(result.status), uid=uid
        )
    if not result.done:
        raise kopf.TemporaryError(result.message, delay=result.retry_after)
    runtime.failures.pop(uid, None)
    runtime.cleaned.add(uid)
    log.info(
        "cleaned up",
        extra={"object": key, "result": result.message, "duration": round(time.monotonic() - started, 3)},
    )


def _status_of(body: Any) -> AWSConnectorStatus:
    return AWSConnectorStatus.model_validate(status_without_kopf(body.get("status") or {}))


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
        await runtime.workers.call(runtime.kube.write_status, namespace, name, dump_status(status), uid=uid)
        runtime.events.record(namespace, name, uid, Event("Warning", "CleanupBlocked", message))
    log.warning("cleanup blocked", extra={"object": f"{namespace}/{name}", "reason": exc.reason})
    delay = 1.0 if runtime.grants_version != grants else runtime.jittered(runtime.settings.resync_seconds)
    raise kopf.TemporaryError(message, delay=delay)
