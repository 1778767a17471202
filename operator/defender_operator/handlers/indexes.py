"""What the handlers look up about the other AWSConnectors, in one Kopf index with five parts.

The parts: the claims on each onboarding (``by_account``), the uid of each name (``by_name``), the resources each spec
declares (``by_resource``), where each object stands with the IAM catalog (``by_catalog``) and the cleanups blocked
(``cleanup_blocked``). They are one Kopf index, not five, because Kopf runs every index handler on every watch event
of every object, and its own machinery costs more than what a handler here does: five handlers that do nothing take
0.70 ms of CPU per event, one 0.17 ms, and this one index, five parts computed, 0.38 ms (``python -m bench.indexing``,
docs/performance.md, "A backlog"). That is work on the event loop between an operator's start and its first pass
over a backlog (Kopf runs no handler until every listed object is indexed) and beside its first passes (every
object's finalizer and first status come back as events).

A part reads like an index of its own (``indexes_of``): a mapping of its keys to the values of every object that has
the key. Kopf keeps the index current: an object's entries are replaced on each of its events and dropped when it
goes. A part that fails for an object (a spec only a stale CRD lets through) fails the handler: Kopf logs it and keeps
the object's earlier entries in every part, so a claim or a declared resource is never dropped because a spec could
not be read (another object would then see no conflict, and could adopt what this one declares). Five handlers kept
the other parts current meanwhile; one keeps them as they were, which touches only that object (its name, its
catalog standing and its blocked cleanup wait for a spec that can be read; with such a spec it writes nothing in
either cloud, as ``target_of`` cannot read it either)."""

from collections.abc import Callable, Hashable, Iterator, Mapping
from typing import Any

import kopf

from ..api.names import GROUP, PLURAL, VERSION
from ..reconcile.claims import Claim, claim_of, onboarding_key
from ..reconcile.model import resource_keys
from ..reconcile.rollout import Standing, standing_of

INDEX = "awsconnectors"  # the index's handler id, which is also the name Kopf gives it among the handlers' arguments


def by_account(namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any) -> dict[str, Claim]:
    """AWS account and subscription -> the claim of every object onboarding it."""
    return {onboarding_key(spec): claim_of(namespace, name, meta, status)}


def by_name(
    namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any
) -> dict[tuple[str, str], str]:
    """(namespace, name) -> uid of every AWSConnector: whose loop to wake when the winner of a conflict goes."""
    return {(namespace, name): uid}


def by_resource(namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any) -> dict[str, str]:
    """Each stack, StackSet and connector a live AWSConnector's spec declares -> "namespace/name": adoption never
    takes over what another live object declares, whatever the resource's tags say (``aws_side.live_holder``)."""
    return {key: f"{namespace}/{name}" for key in resource_keys(namespace, name, spec)}


def by_catalog(namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any) -> dict[str, Standing]:
    """uid -> where the object stands with the IAM catalog (its status.catalog, Ready, Stalled, being deleted): the
    fleet the catalog rollout decides from, whichever process wrote those statuses."""
    terraform = (spec.get("deployment") or {}).get("method") == "Terraform"
    deleting = bool(meta.get("deletionTimestamp"))
    return {uid: standing_of(f"{namespace}/{name}", status, terraform, deleting)}


def cleanup_blocked(
    namespace: str, name: str, uid: str, meta: Any, spec: Any, status: Any
) -> dict[str, tuple[str, str]]:
    """uid -> (namespace, name) of every object whose status says its cleanup is blocked: the ones a change of the
    grants tries again, whichever process saw them blocked. An object that is not (or no longer) blocked has no entry
    (the index's entries of an object are replaced on each of its events)."""
    if not meta.get("deletionTimestamp"):  # the common case, decided without reading the status
        return {}
    stalled = [c for c in (status or {}).get("conditions") or [] if c.get("type") == "Stalled"]
    if not stalled or stalled[0].get("reason") != "CleanupBlocked":
        return {}
    return {uid: (namespace, name)}


Part = Callable[[str, str, str, Any, Any, Any], Mapping[Any, Any]]
PARTS: dict[str, Part] = {
    "by_account": by_account,
    "by_name": by_name,
    "by_resource": by_resource,
    "by_catalog": by_catalog,
    "cleanup_blocked": cleanup_blocked,
}


# ``async`` only so that Kopf calls it on its event loop: it runs a plain function in a thread pool, one hop per watch
# event, which costs more than the few dictionary lookups it does.
@kopf.index(GROUP, VERSION, PLURAL, id=INDEX)
async def awsconnectors(
    namespace: str | None, name: str, uid: str, meta: Any, spec: Any, status: Any, **_: Any
) -> dict[tuple[str, Hashable], Any]:
    """(part, key) -> value, for every part of the object."""
    return {
        (part, key): value
        for part, compute in PARTS.items()
        for key, value in compute(str(namespace), name, uid, meta, spec, status or {}).items()
    }


class IndexPart(Mapping[Hashable, Any]):
    """One part of the index, read as an index of its own: key -> the values of every object with that key. A live
    view: it reads Kopf's index as it is at each lookup. Lookups by key cost what Kopf's do; listing a part walks
    the whole index."""

    def __init__(self, index: Mapping[tuple[str, Hashable], Any], part: str) -> None:
        self._index = index
        self._part = part

    def __getitem__(self, key: Hashable) -> Any:
        return self._index[(self._part, key)]

    def get(self, key: Hashable, default: Any = None) -> Any:
        return self._index.get((self._part, key), default)

    def __contains__(self, key: object) -> bool:
        return (self._part, key) in self._index

    def __iter__(self) -> Iterator[Hashable]:
        return (key for part, key in self._index if part == self._part)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def indexes_of(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The indexes among a handler's arguments, with the parts of the AWSConnectors' index by their own names."""
    index = kwargs[INDEX]
    return {**kwargs, **{part: IndexPart(index, part) for part in PARTS}}
