"""Who may onboard an AWS account into a subscription when several AWSConnectors ask for the same one.

Azure allows one connector per AWS account and subscription, so of several objects naming the same pair only one
acts; the others are Stalled with ``ConnectorConflict``. Two parts decide it:

- **The rank** says who tries. Lowest first: an object that has written to a cloud before one that has not (so a
  newcomer never displaces the object whose stack and connector exist, even when both were created in the same
  second, creationTimestamp's resolution), then the older, then the uid as the tie-break. An object that has written
  nothing, is not Ready and is older than the claim grace has **lapsed**: it no longer keeps the others waiting
  (any tenant can create an object for any account with a Secret of its own that never works; without the lapse,
  the first such object would hold the account from the team granted it for as long as it exists). An object never
  counts itself lapsed, so it goes on trying as well; several may then try at once.
- **The book** says who writes. Before a write while its OnboardingRecord shows none, an object takes the onboarding
  in the book, an in-process compare-and-set (the operator acts only while it leads, so one process decides): a second object is
  refused there, whatever its view of the rank was. The book knows this process's claims; the claims of objects
  that wrote before it started are in their status, which the caller passes in from its index, or, for a write
  whose status was not written (a new object's first pass shows its writes only in its result, which a kill or a
  failure can lose), in their record, which the journal reads for the onboarding's other objects whose status says
  they wrote nothing. Such an object, ranked behind another by the index, asks its own record too, and ranks as one
  that wrote if it has the write.

Pure but for the book's lock: the Kopf layer keeps the index these functions read.
"""

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .tenancy import named_for


def onboarding_key(spec: Mapping[str, Any]) -> str:
    """What Azure allows only once: one connector per AWS account and subscription (a subscription id in any case:
    Azure compares them without it)."""
    return f"{spec.get('aws', {}).get('accountId', '')}/{str(spec.get('azure', {}).get('subscriptionId', '')).lower()}"


@dataclass(frozen=True)
class Claim:
    """One object's claim on its onboarding, as the index holds it."""

    uid: str
    ref: str  # "namespace/name"
    created: str  # creationTimestamp, RFC 3339 to the second
    written: bool  # status.firstCloudWrite has a cloud
    ready: bool  # Ready=True


def claim_of(
    namespace: str | None, name: str, meta: Mapping[str, Any], status: Mapping[str, Any] | None
) -> Claim:
    status = status or {}
    ready = any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )
    return Claim(
        uid=str(meta.get("uid")),
        ref=f"{namespace}/{name}",
        created=str(meta.get("creationTimestamp")),
        written=any((status.get("firstCloudWrite") or {}).values()),
        ready=ready,
    )


@dataclass(frozen=True)
class Conflict:
    """The object with the strongest claim, and in how many seconds its claim lapses (None: it never does)."""

    holder: str
    lapses_in: float | None


def conflict_message(holder: str, asking: str, account: str, subscription: str) -> str:
    """The Stalled message of an object that loses (``asking``: its "namespace/name")."""
    return (
        f"{named_for(holder, asking)} already onboards AWS account {account} into subscription {subscription}; "
        "nothing is written for this object"
    )


def _age(claim: Claim, at: datetime) -> float:
    return (at - datetime.fromisoformat(claim.created.replace("Z", "+00:00"))).total_seconds()


def _may_lapse(claim: Claim) -> bool:
    return not claim.written and not claim.ready


WROTE, WAITING, LAPSED = 0, 1, 2  # a claim's tier in the rank, strongest first


def _rank(claim: Claim, asking: str, at: datetime, grace: float) -> tuple[int, str, str]:
    if claim.written:
        tier = WROTE
    elif claim.uid != asking and _may_lapse(claim) and _age(claim, at) >= grace:
        tier = LAPSED
    else:
        tier = WAITING
    return tier, claim.created, claim.uid


def conflict_with(
    index: Mapping[str, Iterable[Claim]], spec: Mapping[str, Any], uid: str, at: datetime, grace: float
) -> Conflict | None:
    """The object with the strongest claim on the same account and subscription, if it is not this one (see the
    module's docstring)."""
    return conflict_among(list(index.get(onboarding_key(spec), [])), uid, at, grace)


def conflict_among(claims: list[Claim], uid: str, at: datetime, grace: float) -> Conflict | None:
    """:func:`conflict_with` over one onboarding's claims."""
    if not claims:
        return None
    first = min(claims, key=lambda c: _rank(c, uid, at, grace))
    if first.uid == uid or _rank(first, uid, at, grace)[0] == LAPSED:
        return None  # first, or only lapsed claims ahead (this object is not in the index yet, say)
    lapses_in = max(0.0, grace - _age(first, at)) if _may_lapse(first) else None
    return Conflict(first.ref, lapses_in)


def claims_of(index: Mapping[str, Iterable[Claim]], key: str) -> tuple[Claim, ...]:
    """Every object's claim on an onboarding, as the index has them: what a ticket checks besides the book."""
    return tuple(index.get(key, []))


class ClaimBook:
    """Onboarding -> (uid, ref) of the object of this process that is about to write, or has written, for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[str, tuple[str, str]] = {}

    def take(self, key: str, uid: str, ref: str, written: Iterable[tuple[str, str]]) -> str | None:
        """Take the onboarding for ``uid`` unless another object holds it, here or by ``written`` (its status):
        None when taken (or already held), else the holder's ref."""
        with self._lock:
            holder = self._holders.get(key)
            if holder is not None and holder[0] != uid:
                return holder[1]
            others = [other for other in written if other[0] != uid]
            if others:
                return others[0][1]
            self._holders[key] = (uid, ref)
            return None

    def release(self, key: str, uid: str) -> None:
        """The pass that took it recorded no write (it stopped first, or the clouds refused every write): the object
        holds nothing again."""
        with self._lock:
            if self._holders.get(key, ("", ""))[0] == uid:
                del self._holders[key]

    def forget(self, uid: str) -> None:
        """The object is gone."""
        with self._lock:
            for key in [key for key, holder in self._holders.items() if holder[0] == uid]:
                del self._holders[key]


@dataclass(frozen=True)
class Ticket:
    """One object's way to take, and give back, its onboarding in the book during a pass. ``others``: the claims of
    the onboarding's objects as the index had them when the pass got its worker slot."""

    book: ClaimBook
    key: str
    uid: str
    ref: str
    others: tuple[Claim, ...]

    def take(self) -> str | None:
        written = [(c.uid, c.ref) for c in self.others if c.written]
        return self.book.take(self.key, self.uid, self.ref, written)

    def contested(self) -> bool:
        """Another object asks for the same onboarding."""
        return any(c.uid != self.uid for c in self.others)

    def unwritten(self) -> list[Claim]:
        """The other objects whose status says they wrote nothing: one of them may still have a write in its
        OnboardingRecord, made by a process that died before its status said so (the caller reads their records)."""
        return [c for c in self.others if c.uid != self.uid and not c.written]

    def release(self) -> None:
        self.book.release(self.key, self.uid)
