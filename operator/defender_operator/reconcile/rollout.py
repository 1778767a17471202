"""The rollout of a new IAM catalog to the fleet: batches of a bounded size, a pause between them, canaries first, a
halt at the first failure.

A new operator release, or a new catalog file, changes what Microsoft's roles and permissions render to, and so the
template of every stack and StackSet at once. Updating them all in the first minutes after a restart would make a
wrong catalog (a role Microsoft renamed, a permission an account's SCPs deny) fail everywhere at once. Instead, an
object that is Ready with an older catalog and whose spec has not changed asks the rollout for a place before its
pass writes its AWS side; it is written when its batch starts, and waits, unrepaired, until then. A spec change is not
held: the user's change goes out with the catalog in use, as it would on any pass.

The durable state is each object's ``status.catalog`` (the version its AWS side matched, the one an update in
progress writes): the operator's index of it is the fleet (``Fleet``), so a restart resumes where the last process
stopped, and a failed update (the object Stalled while its status says it was upgrading) halts the rollout in every
process until that object succeeds. Only the batch and the pause live in memory (``CatalogRollout``).
"""

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..api.status import AWSConnectorStatus, CatalogStatus
from ..render.catalog import catalog_version
from ..render.cloudformation import member_template, stack_template
from ..render.document import Rendered
from . import conditions
from .model import Target


@dataclass(frozen=True)
class Standing:
    """What one object's status says about the catalog, as the operator's index keeps it."""

    key: str  # namespace/name
    version: str | None
    upgrading: str | None
    ready: bool
    stalled: bool
    paused: bool = False


def standing_of(key: str, status: Mapping[str, Any] | None) -> Standing:
    """The index's entry for an object, from its raw status."""
    status = status or {}
    found = status.get("catalog") or {}
    states = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
    return Standing(
        key,
        found.get("version"),
        found.get("upgrading"),
        ready=states.get("Ready") == "True",
        stalled=states.get("Stalled") == "True",
        paused=states.get("Paused") == "True",
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
        if s.paused:  # left the rollout: a person paused it (the way out of a halt it caused, too)
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


def catalog_changes(target: Target) -> bool:
    """Whether writing the object's AWS side now would change what an older catalog put there: a stack (and member
    StackSet) template other than the one its status records, for a spec the status has already seen. ``target``
    has its role names resolved, as the AWS side renders it."""
    status = target.status
    if status.catalog is not None and status.catalog.version == catalog_version():
        return False  # the common case, decided without rendering
    if status.aws is None or status.aws.template_hash is None:
        return False
    if Rendered(stack_template(target.spec)).sha256 != status.aws.template_hash:
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
    if aws is None or aws.template_hash != Rendered(stack_template(target.spec)).sha256:
        return False
    if target.spec.aws.organization is None:
        return True
    org = status.organization
    return (
        org is not None
        and org.operation_id is None
        and org.template_hash == Rendered(member_template(target.spec)).sha256
    )


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
    clock: Callable[[], float] = time.monotonic
    halted: bool = False  # at the last decision
    _in_flight: set[str] = field(default_factory=set)  # admitted by this process, not yet done
    _finished: set[str] = field(default_factory=set)  # done in this process (the index may not show it yet)
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
            failed = sorted({*(k for k in fleet.failed), *self._failed.values()})
            self.halted = bool(failed)
            if failed:
                return self._hold(
                    uid,
                    f"the rollout of catalog {version} is halted: updating {failed[0]} to it failed (see its "
                    "Stalled condition); it resumes once that object is Ready",
                )
            if key not in self.canaries and fleet.canaries_pending:
                return self._hold(
                    uid,
                    f"waiting for the canaries to run catalog {version} first: {', '.join(fleet.canaries_pending[:3])}",
                )
            # updates the statuses say are under way (a process before this one started them) are this batch's
            self._in_flight |= fleet.in_flight - self._finished
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
        """After a pass of an object whose update was under way: done, failed, or still going."""
        version = catalog_version()
        was = (
            uid in self._in_flight
            or uid in self._failed
            or (before is not None and before.upgrading == version)
        )
        if not was:
            return
        after = status.catalog
        stalled = conditions.get(status.conditions, "Stalled")
        paused = conditions.get(status.conditions, "Paused")
        with self._lock:
            done = after is not None and after.version == version and after.upgrading is None
            if done or (paused is not None and paused.status == "True"):  # done, or left the rollout
                self._in_flight.discard(uid)
                if done:
                    self._finished.add(uid)
                halt_over = self._failed.pop(uid, None) is not None and not self._failed
                if not self._close_if_done() and halt_over:
                    self._wake(self.clock())
            elif stalled is not None and stalled.status == "True":
                self._in_flight.discard(uid)
                self._failed[uid] = key

    def forget(self, uid: str) -> None:
        """The object is gone."""
        with self._lock:
            self._waiting.pop(uid, None)
            self._failed.pop(uid, None)
            if uid in self._in_flight:
                self._in_flight.discard(uid)
                self._close_if_done()

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
