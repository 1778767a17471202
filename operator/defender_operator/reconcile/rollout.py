"""The rollout of a new IAM catalog to the fleet: batches of a bounded size, a pause between them, canaries first, a
halt when an update to it fails.

A new operator release, or a new catalog file, changes what Microsoft's roles and permissions render to, and so the
template of every stack and StackSet at once. Updating them all in the first minutes after a restart would make a
wrong catalog (a role Microsoft renamed, a permission an account's SCPs deny) fail everywhere at once. Instead, a pass
that would write an object's AWS side with a newer catalog than the one it was written with (its spec unchanged)
first asks the rollout for a place, and reads and writes nothing until its batch starts. A spec change is not held:
the user's change goes out with the catalog in use, as it would on any pass.

The durable state is each object's ``status.catalog`` (the version its AWS side matched; the one an update under way
writes, recorded before that update): the operator's index of it is the fleet (``Fleet``), so a restart resumes where
the last process stopped, and a failed update (the object Stalled for the write itself, ``WRITE_FAILURES``, while
its status says it was upgrading) halts the rollout in every process until that object succeeds, leaves, or the
admin tolerates it (``catalogRolloutToleratedFailures``). Only the batch and the pause live in memory
(``CatalogRollout``).
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..api.status import AWSConnectorStatus, CatalogStatus
from ..render.catalog import catalog_version
from ..render.cloudformation import member_template, stack_template
from ..render.document import Rendered
from . import conditions, role_names
from .conditions import Verdict
from .model import Target
from .tenancy import named_for

# Stalled reasons that say the catalog's write itself failed: the update was refused or rolled back. Any other stall
# (a refusal by policy, a conflict, credentials gone) is not the catalog's doing: the object leaves the rollout.
WRITE_FAILURES = frozenset({"StackUpdateFailed", "StackFailed", "StackOutputsMissing", "AWSAccessDenied"})


@dataclass(frozen=True)
class Standing:
    """What one object's status says about the catalog, as the operator's index keeps it."""

    key: str  # namespace/name
    version: str | None
    upgrading: str | None
    ready: bool
    stalled: bool
    paused: bool = False
    terraform: bool = False  # the user applies its roles: never in the rollout
    # out of the rollout for good: deletion cannot be undone, and may be blocked for long
    deleting: bool = False


def standing_of(
    key: str, status: Mapping[str, Any] | None, terraform: bool = False, deleting: bool = False
) -> Standing:
    """The index's entry for an object, from its raw status (``stalled``: for a reason of ``WRITE_FAILURES``)."""
    status = status or {}
    found = status.get("catalog") or {}
    conditions_ = {c.get("type"): c for c in status.get("conditions") or []}
    stalled = conditions_.get("Stalled") or {}
    return Standing(
        key,
        found.get("version"),
        found.get("upgrading"),
        ready=(conditions_.get("Ready") or {}).get("status") == "True",
        stalled=stalled.get("status") == "True" and stalled.get("reason") in WRITE_FAILURES,
        paused=(conditions_.get("Paused") or {}).get("status") == "True",
        terraform=terraform,
        deleting=deleting,
    )


class Canaries:
    """The ``catalogRolloutCanaries`` setting: namespaces and namespace/name objects that go first."""

    def __init__(self, setting: str) -> None:
        entries = [e for e in setting.split(",") if e]
        self.namespaces = {e for e in entries if "/" not in e}
        self.objects = {e for e in entries if "/" in e}

    def __contains__(self, key: str) -> bool:
        return key in self.objects or key.partition("/")[0] in self.namespaces


@dataclass(frozen=True)
class Fleet:
    """Where the fleet stands with the catalog in use, from every object's status."""

    in_flight: frozenset[str]  # uids whose update to this catalog is under way
    failed: tuple[str, ...]  # namespace/name of objects whose update to this catalog failed
    canaries_pending: tuple[str, ...]  # canaries Ready with an older catalog


def fleet_of(standings: Iterable[tuple[str, Standing]], version: str, canaries: Canaries) -> Fleet:
    in_flight, failed, pending = set(), [], []
    for uid, s in standings:
        if s.paused or s.deleting or s.terraform:  # left the rollout (paused, being deleted), or never in it
            continue
        if s.upgrading == version:
            if s.stalled:
                failed.append(s.key)
            else:
                in_flight.add(uid)
        if s.key in canaries and s.version != version and (s.ready or s.upgrading == version):
            pending.append(s.key)
    return Fleet(frozenset(in_flight), tuple(sorted(failed)), tuple(sorted(pending)))


@dataclass(frozen=True)
class Hold:
    """Not now: why (for ``status.catalog.waiting``), and when to ask again (None: when the rollout wakes it)."""

    message: str
    retry_after: float | None = None


def _own_stack(target: Target) -> bool:
    """Whether the operator writes the object's own stack: not from a delegated administrator, whose management
    account's stack its administrators deploy (the member StackSet is then all the operator writes)."""
    return target.spec.aws.delegated_administrator is None


def written_before(target: Target) -> bool:
    """Whether the operator has written the object's AWS side with some catalog (its status records the template):
    the stack, or from a delegated administrator the member StackSet."""
    status = target.status
    if not _own_stack(target):
        return status.organization is not None and status.organization.template_hash is not None
    return status.aws is not None and status.aws.template_hash is not None


def catalog_changes(target: Target) -> bool:
    """Whether writing the object's AWS side now would change what an older catalog put there: a stack (and member
    StackSet) template other than the one its status records, for a spec the status has already seen."""
    status = target.status
    if status.catalog is not None and status.catalog.version == catalog_version():
        return False  # the common case, decided without rendering
    if not written_before(target) or target.spec.deployment.method == "Terraform":
        return False
    names = role_names.resolve(target.spec, status)  # as the AWS side renders it
    target = replace(target, spec=role_names.with_names(target.spec, names))
    written_stack = status.aws.template_hash if status.aws is not None else None
    if _own_stack(target) and Rendered(stack_template(target.spec)).sha256 != written_stack:
        return True
    org = status.organization
    return (
        target.spec.aws.organization is not None
        and org is not None
        and org.template_hash is not None
        and Rendered(member_template(target.spec)).sha256 != org.template_hash
    )


def written(target: Target, status: AWSConnectorStatus) -> bool:
    """Whether the pass left the object's AWS side matching the catalog in use: the stack (and the member StackSet,
    with no operation of it under way) carries this catalog's templates."""
    if status.catalog is not None and status.catalog.version == catalog_version():
        return True
    aws = status.aws
    if _own_stack(target) and (
        aws is None or aws.template_hash != Rendered(stack_template(target.spec)).sha256
    ):
        return False
    if target.spec.aws.organization is None:
        return True
    org = status.organization
    return (
        org is not None
        and org.operation_id is None
        and org.template_hash == Rendered(member_template(target.spec)).sha256
    )


def catalog_after(
    target: Target, status: AWSConnectorStatus, aws_ready: bool, stalled: Verdict | None
) -> CatalogStatus | None:
    """``status.catalog`` at the end of a pass (``target`` with its role names resolved): the catalog in use once the
    AWS side matches it; an update under way dropped when the pass stalled for a cause that is not the write's (the
    object leaves the rollout and takes the catalog whenever it recovers); no longer waiting, since it ran."""
    found = status.catalog
    if aws_ready and stalled is None and written(target, status):
        return CatalogStatus(version=catalog_version())
    if found is None:
        return None
    if stalled is not None and stalled.reason not in WRITE_FAILURES:
        found = found.model_copy(update={"upgrading": None})
    return found.model_copy(update={"waiting": None})


def upgrading(status: CatalogStatus | None) -> CatalogStatus:
    """The status of an object the rollout admitted: its update now writes the catalog in use."""
    return CatalogStatus(version=status.version if status else None, upgrading=catalog_version())


def waiting(status: CatalogStatus | None, hold: Hold) -> CatalogStatus:
    found = status or CatalogStatus()
    return found.model_copy(update={"waiting": hold.message})


@dataclass
class CatalogRollout:
    """The batch and the pause, shared by the passes (worker threads) of one process."""

    batch: int
    pause_seconds: float
    canaries: Canaries
    tolerated_failures: int = 0
    clock: Callable[[], float] = time.monotonic
    halted: bool = False  # at the last decision
    _in_flight: set[str] = field(default_factory=set)  # admitted by this process, not yet done
    _finished: set[str] = field(default_factory=set)  # done in this process (the index may not show it yet)
    _gone: set[str] = field(default_factory=set)  # deleted (a fleet read before may still show them)
    _failed: dict[str, str] = field(default_factory=dict)  # uid -> key, failed in this process
    _joined: int = 0  # places taken in the batch under way
    _next_batch: float = 0.0  # the pause: no batch starts before this (clock)
    _waiting: dict[str, None] = field(default_factory=dict)  # uids held, in order
    _wakes: list[tuple[str, float]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, uid: str, key: str, fleet: Fleet) -> Hold | None:
        """A place in the batch under way (or a new one) for the object's update, or why not."""
        version = catalog_version()
        with self._lock:
            failed = sorted({*fleet.failed, *self._failed.values()})
            self.halted = len(failed) > self.tolerated_failures
            if key in failed:
                return None  # its own update failed: trying it again is how the halt ends
            if self.halted:
                return self._hold(
                    uid,
                    f"the rollout of catalog {version} is halted: updating {named_for(failed[0], key)} to it failed (see "
                    "its Stalled condition); it resumes once that object is Ready, paused or deleted",
                )
            if key not in self.canaries and fleet.canaries_pending:
                pending = ", ".join(named_for(k, key) for k in fleet.canaries_pending[:3])
                return self._hold(uid, f"waiting for the canaries to run catalog {version} first: {pending}")
            # updates the statuses say are under way (a process before this one started them) are this batch's
            self._in_flight |= fleet.in_flight - self._finished - self._gone
            self._joined = max(self._joined, len(self._in_flight))
            if uid in self._in_flight:
                return None
            message = f"waiting for its turn in the rollout of catalog {version}"
            now = self.clock()
            if now < self._next_batch:
                return self._hold(uid, message, retry_after=self._next_batch - now)
            if self._joined >= self.batch:
                return self._hold(uid, message)
            self._joined += 1
            self._in_flight.add(uid)
            self._waiting.pop(uid, None)
            return None

    def _hold(self, uid: str, message: str, retry_after: float | None = None) -> Hold:
        self._waiting[uid] = None
        return Hold(message, retry_after)

    def settled(self, uid: str, key: str, before: CatalogStatus | None, status: AWSConnectorStatus) -> None:
        """After a pass of an object whose update was under way: done, failed, left the rollout, or still going."""
        version = catalog_version()
        after = status.catalog
        stalled = conditions.get(status.conditions, "Stalled")
        paused = conditions.get(status.conditions, "Paused")
        with self._lock:
            # a pass that ended after its object's deletion began: the object left the rollout then
            if uid in self._gone:
                return
            was = (
                uid in self._in_flight
                or uid in self._failed
                or (before is not None and before.upgrading == version)
            )
            if not was:
                return
            done = after is not None and after.version == version and after.upgrading is None
            under_way = after is not None and after.upgrading == version
            write_failed = (
                stalled is not None and stalled.status == "True" and stalled.reason in WRITE_FAILURES
            )
            if paused is not None and paused.status == "True":  # a person took it out, failed or not
                self._leave(uid, False)
            elif write_failed and under_way:
                self._in_flight.discard(uid)
                self._failed[uid] = key
            elif done or not under_way:
                self._leave(uid, done)

    def forget(self, uid: str) -> None:
        """The object is gone."""
        with self._lock:
            self._gone.add(uid)
            self._waiting.pop(uid, None)
            self._leave(uid, False)

    def _leave(self, uid: str, done: bool) -> None:
        """Done, or out of the rollout: its place is given back, and a halt it caused is over."""
        self._in_flight.discard(uid)
        if done:
            self._finished.add(uid)
        halt_over = self._failed.pop(uid, None) is not None and len(self._failed) <= self.tolerated_failures
        if halt_over:
            self.halted = False
        if not self._close_if_done() and halt_over:
            self._wake(self.clock())

    def _close_if_done(self) -> bool:
        """End the batch if all of it is done: the pause begins, and the next ones are woken when it ends."""
        if self._in_flight or not self._joined:
            return False
        self._joined = 0
        self._next_batch = self.clock() + self.pause_seconds
        self._wake(self._next_batch)
        return True

    def _wake(self, at: float) -> None:
        for uid in list(self._waiting)[: self.batch]:
            self._waiting.pop(uid)
            self._wakes.append((uid, at))

    def take_wakes(self) -> list[tuple[str, float]]:
        """The held objects to wake, and when (clock): the first of them once a batch is done and the pause over."""
        with self._lock:
            wakes, self._wakes = self._wakes, []
        return wakes
