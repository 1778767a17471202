"""One step of an AWSConnector's cleanup, decided from the operator's record, not from the object.

What a cleanup acts on is domain logic, kept out of the Kopf layer: ``deletionPolicy: Orphan`` is read before
anything is parsed (nothing stands between a delete and Orphan); the spec acted on is the one the record says was
last reconciled, whatever was patched into the object after ``deletionTimestamp``; the grant is checked again now,
so the operator's identities are used only while a policy still allows that spec, and member accounts only where
that policy's accounts reach; the Secrets held for the object and its record go once cleanup is done.
"""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..api.record import OnboardingRecordSpec
from ..api.status import FirstCloudWrite
from ..errors import RetryableError, TerminalError
from ..kube import Kube, one_line
from .clouds import Clouds
from .deletion import Cleanup, finalize
from .journal import CleanupLedger, RecordBook, release_held
from .model import Event, Target
from .tenancy import Admission


def cleanup_step(
    kube: Kube,
    clouds: Clouds,
    uid: str,
    namespace: str,
    live_spec: dict[str, Any],
    target_for: Callable[[dict[str, Any] | None], Target],
    admission_for: Callable[[Target, str | None, bool], Admission],
    in_progress_seconds: float,
    skew_seconds: float,
) -> Cleanup:
    """``target_for(spec)``: the object as a pass sees it with ``spec`` (None: its own spec, for an object from
    before records). ``admission_for(target, allowed_by, namespace_gone)``: the grant as it is now (``allowed_by``:
    the policy the record says allowed the last write; ``namespace_gone``: a read found the namespace gone, the
    object left in it: kubernetes/kubernetes#127977)."""
    live_policy = live_spec.get("deletionPolicy", "Delete")
    if live_policy == "Orphan":
        release_held(kube, namespace, uid, live_spec)
        return Cleanup(
            True,
            "deletionPolicy Orphan",
            events=[Event("Normal", "Orphaned", "left the stack and the connector in place")],
        )
    found = kube.read_record(uid)
    record = OnboardingRecordSpec.model_validate(found[0]) if found is not None else None
    if record is not None:
        target = target_for({**record.connector, "deletionPolicy": live_policy})
        target = replace(
            target, status=target.status.model_copy(update={"first_cloud_write": record.written.model_copy()})
        )
    else:  # nothing recorded, or an object from before records: its own spec, under the same grant
        target = target_for(None)
    written = target.status.first_cloud_write
    gone = _namespace_gone(kube, namespace)
    if written is not None and (written.aws or written.azure) and target.spec.deletion_policy == "Delete":
        admission = admission_for(target, record.allowed_by if record is not None else None, gone)
        if admission.refusal:
            raise TerminalError("NotAllowedByPolicy", admission.refusal)
        member_allowed = admission.allows_account
    else:
        member_allowed = Admission(None).allows_account
    ledger = CleanupLedger(kube, target, record, skew_seconds)
    result = finalize(target, clouds, in_progress_seconds, ledger, member_allowed=member_allowed)
    if not result.done:
        return replace(result, namespace_gone=gone)
    if not gone:
        release_held(kube, target.namespace, target.uid, live_spec, record)
        return result
    # In a namespace that is gone the finalizer cannot come off: the object stays until a namespace of its name is
    # made again, and so does its record, with no write left in it. The cleanup that ends the object then acts on
    # the record's spec (not on one patched in since, by the new namespace's tenant), needs no grant, and finds
    # nothing to do.
    if record is not None and (record.written.aws or record.written.azure):
        RecordBook(kube, target, skew_seconds).change(
            lambda r: r.model_copy(update={"written": FirstCloudWrite()})
        )
    return Cleanup(
        False,
        "cleaned up; the object goes once a namespace of its name is made again",
        in_progress_seconds,
        result.events,
        namespace_gone=True,
        parked=True,
    )


def _namespace_gone(kube: Kube, namespace: str) -> bool:
    """Whether the namespace is gone, read now (not from a cache): the grant cannot be decided without it."""
    try:
        return not kube.namespace_exists(namespace)
    except Exception as exc:
        raise RetryableError(
            "NamespaceUnreadable", f"namespace {namespace} could not be read: {one_line(exc)}"
        ) from exc
