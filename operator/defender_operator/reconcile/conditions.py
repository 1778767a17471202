"""Conditions in the metav1.Condition shape, following kstatus.

``Ready`` sums up AWSReady and AzureReady. ``Reconciling`` is True while the operator works towards the current
generation; ``Stalled`` is True only for problems a person must fix (kstatus then reports Failed, and Flux and Argo
CD show the object as failed/degraded at once). lastTransitionTime changes only when a condition's status changes.
"""

from dataclasses import dataclass

from ..api.status import Condition


@dataclass(frozen=True)
class Verdict:
    """The outcome of one side (AWS, Azure, health) in one pass."""

    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


def put(
    conditions: list[Condition], type_: str, verdict: Verdict, generation: int, now: str
) -> list[Condition]:
    """``conditions`` with ``type_`` set to ``verdict``; the transition time is kept when the status is unchanged."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed = previous is None or previous.status != verdict.status
    updated = Condition(
        type=type_,
        status=verdict.status,
        reason=verdict.reason,
        message=verdict.message[:32768],
        observed_generation=generation,
        last_transition_time=now if changed or previous is None else previous.last_transition_time,
    )
    return [c for c in conditions if c.type != type_] + [updated]


def get(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


ORDER = (
    "Ready",
    "Reconciling",
    "Stalled",
    "Paused",
    "AWSReady",
    "AzureReady",
    "Healthy",
    "MembersReady",
    "Prerequisites",
)


def ordered(conditions: list[Condition]) -> list[Condition]:
    """A stable order, so a status without changes is written byte for byte as before."""
    return sorted(conditions, key=lambda c: ORDER.index(c.type) if c.type in ORDER else len(ORDER))


def summarize(
    conditions: list[Condition],
    aws: Verdict,
    azure: Verdict,
    stalled: Verdict | None,
    generation: int,
    now: str,
) -> list[Condition]:
    """Ready, Reconciling and Stalled from the per-side verdicts (kstatus semantics)."""
    ready = aws.status == "True" and azure.status == "True"
    if stalled is not None:
        ready_verdict = Verdict("False", stalled.reason, stalled.message)
    elif ready:
        ready_verdict = Verdict("True", "Onboarded", "AWS roles and the Defender connector are in place")
    else:
        pending = aws if aws.status != "True" else azure
        ready_verdict = Verdict("False", pending.reason, pending.message)
    out = put(conditions, "AWSReady", aws, generation, now)
    out = put(out, "AzureReady", azure, generation, now)
    out = put(out, "Ready", ready_verdict, generation, now)
    out = put(
        out,
        "Stalled",
        Verdict("True", stalled.reason, stalled.message) if stalled else Verdict("False", "NoError"),
        generation,
        now,
    )
    reconciling = (
        Verdict("True", ready_verdict.reason, ready_verdict.message)
        if not ready and stalled is None
        else Verdict("False", "Idle")
    )
    return ordered(put(out, "Reconciling", reconciling, generation, now))


def paused(conditions: list[Condition], generation: int, now: str) -> list[Condition]:
    """A paused object: observed, deliberately not acted on. Paused=True (Argo CD shows Suspended), Reconciling and
    Stalled False (kstatus reads it as Current, not stuck); Ready keeps what was last seen."""
    out = put(conditions, "Paused", Verdict("True", "Paused", PAUSED_MESSAGE), generation, now)
    out = put(out, "Reconciling", Verdict("False", "Paused", PAUSED_MESSAGE), generation, now)
    out = put(out, "Stalled", Verdict("False", "NoError"), generation, now)
    return ordered(out)


def started(conditions: list[Condition], generation: int, now: str) -> list[Condition]:
    """What the operator writes as soon as it sees a new generation, before any cloud call: Reconciling=True and
    Ready=Unknown, so kstatus, Flux and Argo CD do not read an old or empty status as the new generation's result."""
    message = f"working on generation {generation}"
    out = put(conditions, "Reconciling", Verdict("True", "Progressing", message), generation, now)
    out = put(out, "Ready", Verdict("Unknown", "Progressing", message), generation, now)
    return ordered([c for c in out if c.type != "Paused"])


PAUSED_MESSAGE = "the annotation defender-operator.io/paused is set: AWS and Azure are left as they are"


def members(conditions: list[Condition], verdict: Verdict, generation: int, now: str) -> list[Condition]:
    """MembersReady for a management account: the member StackSet's state, beside Ready (which says whether the
    management account itself is onboarded). While instances are being deployed Reconciling is True (kstatus:
    InProgress); failing members leave Ready as it is and show here (kstatus: Current, so a failure in one member
    account does not make the whole onboarding look stuck)."""
    out = put(conditions, "MembersReady", verdict, generation, now)
    if verdict.reason in ("StackSetDeploying", "StackSetUpdating"):
        out = put(out, "Reconciling", Verdict("True", verdict.reason, verdict.message), generation, now)
    return ordered(out)
