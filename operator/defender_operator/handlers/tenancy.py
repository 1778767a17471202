"""The Kopf layer for tenancy: the ClusterOnboardingPolicies and the namespaces' labels, indexed for the passes and
cleanups that decide the grant from them, and folded into the admission policy's parameter; a change of what they
grant wakes the objects it concerns and their blocked cleanups (``reconcile/tenancy.py`` decides the grant)."""

import asyncio
import itertools
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import kopf
from pydantic import ValidationError

from ..api.names import (
    ANNOTATION_DELETION_GRACE,
    ANNOTATION_TOUCHED,
    EFFECTIVE_PLURAL,
    GROUP,
    POLICY_PLURAL,
    VERSION,
)
from ..api.policy import (
    ClusterOnboardingPolicySpec,
    EffectiveOnboardingPolicySpec,
    EffectiveRule,
    effective_rule,
)
from ..kube import Kube, api_server_unavailable, one_line
from ..reconcile.model import Target
from ..reconcile.tenancy import Admission, admit_in_views
from .indexes import indexes_of
from .runtime import CLEANUP_HANDLER, PROGRESS, Runtime

log = logging.getLogger("defender_operator")


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
async def policy_changed(
    name: str, spec: Any, meta: Any, type: str | None, memo: Any, **indexes: Any
) -> None:
    """A policy changed: rewrite the admission policy's parameter; when the grants changed, let every object look
    again at once, blocked cleanups too (a grant given back lets them go on). Whether they changed is read from the
    index the passes decide from, not from the parameter: a fold lists every policy afresh and may show a second
    change before the index has it, and the event that brings it would then find nothing new to wake.

    A deleted policy annotated ``deletion-grace: "true"`` still grants for ``policy_grace_seconds`` unless one of its
    name comes back: Helm replaces the chart's policies (hooks with ``before-hook-creation``, which the chart
    annotates so) by deleting and creating them on every upgrade, which would otherwise take their grants away for a
    moment, every object they cover Stalled and Ready again, and a create in that moment refused. Any other policy's
    deletion ends its grants at once, as an administrator revoking one expects."""
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        return
    indexes = indexes_of(indexes)
    grace = runtime.settings.policy_grace_seconds
    replaced = (meta.get("annotations") or {}).get(ANNOTATION_DELETION_GRACE) == "true"
    # Kopf handles each policy object's events in order, but two objects of one name (the one Helm deleted, the one
    # it created) in any order: a deletion seen after its successor is live keeps nothing
    # the grace runs from when a fold's list first showed it gone, if one did before its event came (the watch may
    # have been behind for minutes, _relist: its grace is over then, not started again)
    now = time.monotonic()
    gone_since = runtime.vanished.pop(name, now) if type == "DELETED" else now
    until = min(gone_since, now) + grace
    if type == "DELETED" and replaced and until > now and name not in indexes["policies"]:
        rule = effective_rule(name, ClusterOnboardingPolicySpec.model_validate(dict(spec or {})))
        runtime.departed[name] = (rule, until)
        task = asyncio.create_task(_grace_over(runtime, name, until - now, indexes))
        runtime.tasks.add(task)
        task.add_done_callback(runtime.tasks.discard)
    else:  # it came back, never went, or went for good (an unannotated deletion)
        runtime.departed.pop(name, None)
    await _refold_from_handler(runtime, indexes)


@kopf.on.event(GROUP, VERSION, EFFECTIVE_PLURAL)
async def parameter_seen(memo: Any, **indexes: Any) -> None:
    """The admission policy's parameter as the API server has it, on Kopf's first listing (which comes once every
    index is filled) and on any change, this process's writes and a hand edit alike: folded again from the
    policies, and written only where it differs. A policy deleted after start-up's fold and before Kopf first listed
    the policies has no event in this process, and when it was the last one no other policy's event folds it away:
    the parameter went on admitting its grants (campaign seed 14000)."""
    runtime = getattr(memo, "runtime", None)
    if runtime is not None:
        indexes = indexes_of(indexes)
        if not runtime.relisting:
            runtime.relisting = [
                asyncio.create_task(_relist(runtime, indexes)),
                asyncio.create_task(_relist_labels(runtime, indexes)),
            ]
        await _refold_from_handler(runtime, indexes)


async def _refold_from_handler(runtime: Runtime, indexes: Any) -> None:
    """A fold for a watch event. An API server that is away (restarting, overloaded) is no error of the handler's:
    the relist folds again within ``policy_relist_seconds`` (Kopf would log the exception as an error and drop the
    event: an event handler is not retried; campaign seeds 44081 and 44102, an API-server restart)."""
    try:
        await _refold(runtime, indexes)
    except Exception as exc:
        if not api_server_unavailable(exc):
            raise
        log.warning(
            "the policies could not be folded, the API server is away; they are listed again shortly",
            extra={"error": one_line(exc), "delay": runtime.settings.policy_relist_seconds},
        )


async def _relist(runtime: Runtime, indexes: Any) -> None:
    """Fold the policies again every ``policy_relist_seconds``, listed afresh. A watch can go silent without ending:
    after an API server restart its watch caches stalled for minutes while lists still answered (campaign seed
    40011, the sandbox's kube-apiserver 1.37 on etcd 3.5), and Kopf's watch of the policies then brought neither the
    deletion of a policy nor anything else; objects went on using a grant that was gone. The list is a consistent
    read, answered from etcd when the cache lags, so a fold sees the policies as they are (``rule_views``)."""
    while True:
        await asyncio.sleep(runtime.settings.policy_relist_seconds)
        try:
            await _refold(runtime, indexes)
        except Exception as exc:  # the API server is away: the next interval tries again
            log.warning("the policies could not be listed again", extra={"error": one_line(exc)})


async def _relist_labels(runtime: Runtime, indexes: Any) -> None:
    """List the namespaces' labels every ``policy_relist_seconds`` (``label_views``): their watch stalls as the
    policies' does, keeping a label an admin took off. Apart from the policies' relist, so a slow list of many
    namespaces never holds a policy's withdrawal back."""
    while True:
        await asyncio.sleep(runtime.settings.policy_relist_seconds)
        try:
            await _relist_namespaces(runtime, indexes)
        except Exception as exc:
            log.warning("the namespaces could not be listed again", extra={"error": one_line(exc)})


async def _relist_namespaces(runtime: Runtime, indexes: Any) -> set[str]:
    """Keep the namespaces' labels as a fresh list shows them, beside the watch's index; the objects of a namespace
    whose listed labels select other policies than before (the last list's, or the index's when it is new to the
    lists) look again at once. Returns those namespaces. A caller that waited while a list began after it asked
    takes that list, and its failure too (a bulk relabel, one event per namespace, costs a list or two, not one
    each, and a failing API server no queue of them)."""
    asked = runtime.labels_lists  # the lists begun before this call
    async with runtime.labels_listing:  # two lists at once could keep the older one
        if runtime.labels_lists > asked:
            return set()
        runtime.labels_lists += 1
        listed = await runtime.workers.call(runtime.kube.list_namespace_labels)
        before, runtime.listed_labels = runtime.listed_labels or {}, listed
    rules = [rule for view in rule_views(runtime, indexes) for rule in view]
    changed = set()
    for name, labels in listed.items():  # this list's own dict: a namespace's deletion edits the next one's
        earlier = before[name] if name in before else _indexed_labels(indexes, name)
        if earlier != labels and _selecting(rules, name, earlier) != _selecting(rules, name, labels):
            changed.add(name)
    if changed:
        await _grants_changed(runtime, indexes, changed)
    await _sweep_left_behind(runtime, indexes, listed)
    return changed


async def _sweep_left_behind(runtime: Runtime, indexes: Any, listed: dict[str, dict[str, str]]) -> None:
    """Objects whose namespace a fresh list does not have: deleted without them (kubernetes/kubernetes#127977) while
    this process did not see it go (it started after, or its watch was away): dealt with as a deletion seen
    (``_left_behind_in``). And the objects being deleted of a namespace that went without them and is listed again:
    touched, if the namespace's return was not seen (``_touch_left_behind``)."""
    strays = {
        standing.key.split("/", 1)[0]
        for standings in indexes["by_catalog"].values()
        for standing in standings
    }
    for namespace in sorted(strays - set(listed)):
        await _left_behind_in(runtime, indexes, namespace)
    for namespace in sorted(runtime.left_behind & set(listed)):
        if await _touch_left_behind(runtime, indexes, namespace):
            runtime.left_behind.discard(namespace)


async def _left_behind_in(runtime: Runtime, indexes: Any, namespace: str) -> None:
    """The namespace's watch or list says it went; objects of it are still there if the namespace controller
    finalized it without them (its discovery did not list this API, right after an API-server restart:
    kubernetes/kubernetes#127977). Whether it is gone is read again, after the objects are taken from the index: the
    watch may be minutes late, and a namespace made again since holds the new namespace's objects, never to be
    deleted here; an object the index had before a read that finds no namespace is one it left (no object can be
    made in a namespace that does not exist)."""
    left = _left_in(indexes, namespace)
    alive = [(uid, key) for uid, key, deleting in left if not deleting]
    if not left or (namespace in runtime.left_behind and not alive):
        return
    try:
        if await runtime.workers.call(runtime.kube.namespace_exists, namespace):
            return
    except Exception as exc:  # the next list looks again
        log.warning("a namespace could not be read", extra={"namespace": namespace, "error": one_line(exc)})
        return
    runtime.left_behind.add(namespace)
    runtime.namespace_labels.pop(namespace, None)  # one made again of its name is new to this process
    await _delete_left_behind(runtime, namespace, alive)


async def _grace_over(runtime: Runtime, name: str, grace: float, indexes: Any) -> None:
    """A deleted policy's grace is over: unless it came back, or went again later (that deletion has its own
    grace), its grants end now. No event follows to fold them away, so a fold that fails is tried again until the
    parameter no longer admits what the operator refuses."""
    await asyncio.sleep(grace)
    departed = runtime.departed.get(name)
    if departed is None or departed[1] > time.monotonic():
        return
    del runtime.departed[name]
    for attempt in itertools.count():
        try:
            await _refold(runtime, indexes)
            return
        except Exception as exc:
            delay = min(
                runtime.settings.backoff_max_seconds, runtime.settings.backoff_base_seconds * 2**attempt
            )
            log.warning(
                "the admission policy parameter could not be updated after a policy's grace; trying again",
                extra={"policy": name, "error": one_line(exc), "delay": delay},
            )
            await asyncio.sleep(delay)


async def _refold(runtime: Runtime, indexes: Any) -> None:
    """Rewrite the admission policy's parameter, and wake what the grants concern when they changed."""
    async with runtime.folding:  # two folds at once could write the older list last
        listed = await runtime.workers.call(listed_rules, runtime.kube)
        _note_vanished(runtime, listed)
        runtime.listed = listed
        await runtime.workers.call(sync_effective_policy, runtime.kube, departed_rules(runtime), listed)
    grants = tuple(
        tuple(sorted(rule.model_dump_json() for rule in view)) for view in rule_views(runtime, indexes)
    )
    if grants == runtime.grants_seen:  # a policy's metadata, or a re-list: the grants are the same
        return
    runtime.grants_seen = grants
    await _grants_changed(runtime, indexes)


def departed_rules(runtime: Runtime) -> list[EffectiveRule]:
    """The rules of policies deleted less than ``policy_grace_seconds`` ago (that did not come back)."""
    now = time.monotonic()
    # a copy first: cleanup decides its grant in a worker thread while the event loop may change the dict
    return [rule for rule, until in list(runtime.departed.values()) if until > now]


def _note_vanished(runtime: Runtime, listed: list[EffectiveRule]) -> None:
    """When each policy the previous list had first went missing from a list (a deletion's grace runs from then)."""
    names = {rule.policy for rule in listed}
    for rule in runtime.listed or []:
        if rule.policy not in names:
            runtime.vanished.setdefault(rule.policy, time.monotonic())
    for name in names:
        runtime.vanished.pop(name, None)


def rule_views(runtime: Runtime, indexes: Any) -> list[list[EffectiveRule]]:
    """The rules the grants are decided from, in two views: every policy in the watch's index, and every policy in
    the last fold's list (once there is one), each with the departed ones still in grace. A grant holds where both
    views have it (``reconcile.tenancy.narrower``): neither is always the newer. The watch may have gone silent
    (``_relist``), and Kopf keeps in its index a policy deleted while its watch was away; the list is as old as the
    last fold, which every policy event makes at once."""
    views = [[rule for entries in indexes["policies"].values() for rule in entries]]
    if runtime.listed is not None:
        views.append(list(runtime.listed))
    departed = departed_rules(runtime)
    return [_with_departed(view, departed) for view in views]


def _with_departed(view: list[EffectiveRule], departed: list[EffectiveRule]) -> list[EffectiveRule]:
    """A view's rules, and the departed ones still in grace whose policy is not back in it."""
    live = {rule.policy for rule in view}
    return view + [rule for rule in departed if rule.policy not in live]


@kopf.on.event("", "v1", "namespaces")
async def namespace_relabelled(name: str, labels: Any, type: str | None, memo: Any, **indexes: Any) -> None:
    """A namespace's labels decide which policies select it: when a label change makes other policies select it, its
    objects look again at once (a grant a label gives or takes applies now, not at their next resync), blocked
    cleanups there too. Labels that change no policy's selection (a GitOps tool's, Pod Security's) wake nothing, nor
    does a namespace seen for the first time (at start, or new: nothing lives in it yet). The labels are kept, not
    the selection: a policy changed since would make a kept selection stale. A namespace deleted with objects still
    in it, and one made again where such objects wait, are kubernetes/kubernetes#127977's: ``_delete_left_behind``,
    ``_touch_left_behind``."""
    runtime = getattr(memo, "runtime", None)
    if runtime is None:
        return
    indexes = indexes_of(indexes)
    if type == "DELETED":
        runtime.namespace_labels.pop(name, None)
        if runtime.listed_labels is not None and name in runtime.listed_labels:
            # one made again of its name is newer than the last list (a copy: a list's wakes may still read it)
            runtime.listed_labels = {k: v for k, v in runtime.listed_labels.items() if k != name}
        await _left_behind_in(runtime, indexes, name)
        return
    now, before = dict(labels or {}), runtime.namespace_labels.get(name)
    runtime.namespace_labels[name] = now
    if before is None:
        # new to this process: at its start nothing needs waking (the first passes are to come), nor in a new
        # namespace; but one the watch brings late (it stalled) may have objects a list woke, refused then by the
        # index that did not have it yet
        lived = runtime.listed_labels is not None and any(ns == name for ns, _ in indexes["by_name"])
        if lived:
            await _grants_changed(runtime, indexes, {name})
        if (lived or name in runtime.left_behind) and await _touch_left_behind(runtime, indexes, name):
            runtime.left_behind.discard(name)
        return
    if before == now:
        return
    rules = [rule for view in rule_views(runtime, indexes) for rule in view]
    if _selecting(rules, name, before) != _selecting(rules, name, now):
        woken: set[str] = set()
        if runtime.listed_labels is not None:  # the list must show it too (label_views): listed again now
            try:
                woken = await _relist_namespaces(runtime, indexes)
            except Exception as exc:  # the next interval lists them again
                log.warning("the namespaces could not be listed again", extra={"error": one_line(exc)})
        if name not in woken:
            await _grants_changed(runtime, indexes, {name})


def _left_in(indexes: Any, namespace: str) -> list[tuple[str, str, bool]]:
    """(uid, namespace/name, being deleted) of the objects of ``namespace``, as the index has them."""
    return [
        (uid, standing.key, standing.deleting)
        for uid, standings in indexes["by_catalog"].items()
        for standing in standings
        if standing.key.startswith(f"{namespace}/")
    ]


async def _delete_left_behind(runtime: Runtime, namespace: str, left: list[tuple[str, str]]) -> None:
    """The namespace is gone and these objects of it are not even being deleted: the namespace controller, whose
    discovery did not list this API (right after an API-server restart), finalized it without touching them. Its
    deletion asked for theirs: they are deleted now (only a deletion passes for an object whose namespace is gone),
    so their cleanup runs; their finalizers come off once a namespace of that name exists again
    (``_touch_left_behind``). An index that lags a namespace deleted the usual way only names objects gone already,
    which the deletion's precondition leaves alone."""
    for uid, key in left:
        try:
            if await runtime.workers.call(runtime.kube.delete_object, namespace, key.split("/", 1)[1], uid):
                log.warning(
                    "its namespace was deleted without it; deleted, as the namespace's deletion asked",
                    extra={"object": key},
                )
        except Exception as exc:  # its loop meets it again: objects._without_finalizer, or a refused write
            log.warning(
                "an object its namespace's deletion left could not be deleted",
                extra={"object": key, "error": one_line(exc)},
            )


async def _touch_left_behind(runtime: Runtime, indexes: Any, namespace: str) -> bool:
    """A namespace (new to this process, or listed again) that holds objects being deleted was made again under the
    name of one the namespace controller finalized without them (kubernetes/kubernetes#127977, right after an API-server restart).
    While it was gone the API server refused every change of them, Kopf's removal of the finalizer after cleanup too,
    and Kopf tries again only on an object's next event, which the namespace's return does not bring: a touch is that
    event, and cleanup ends. (An object not being deleted has its loop: ``objects._without_finalizer``.)"""
    left = [(uid, key) for uid, key, deleting in _left_in(indexes, namespace) if deleting]
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    done = True
    for uid, key in left:
        try:
            touched = await runtime.workers.call(
                runtime.kube.touch, namespace, key.split("/", 1)[1], uid, ANNOTATION_TOUCHED, stamp
            )
        except Exception as exc:  # the next list of the namespaces tries again
            log.warning(
                "an object left in a namespace made again could not be touched",
                extra={"object": key, "error": one_line(exc)},
            )
            done = False
            continue
        if touched:
            log.info(
                "its namespace was made again while it was being deleted; touched, so its cleanup ends",
                extra={"object": key},
            )
    return done


def _selecting(rules: list[EffectiveRule], namespace: str, labels: dict[str, str]) -> set[str]:
    """The policies whose namespace selector selects the namespace with these labels."""
    return {rule.policy for rule in rules if rule.namespaces.selects(namespace, labels)}


def _indexed_labels(indexes: Any, namespace: str) -> dict[str, str]:
    return next(iter(indexes["namespace_labels"].get(namespace, [])), {})


def label_views(runtime: Runtime, indexes: Any, namespace: str) -> list[dict[str, str]]:
    """The namespace's labels the grants are decided from: the watch's index, and the last list's when they differ
    (``_relist_labels``: either can be the older). A namespace the last list did not have is newer than it: the index
    alone (an object outlives its namespace only where the namespace controller missed it, kubernetes/kubernetes#127977,
    and it is not onboarded there: ``objects._without_finalizer``)."""
    indexed = _indexed_labels(indexes, namespace)
    listed = (runtime.listed_labels or {}).get(namespace)
    return [indexed] if listed is None or listed == indexed else [indexed, listed]


async def _grants_changed(runtime: Runtime, indexes: Any, only: set[str] | None = None) -> None:
    """What the grants allow may have changed for the objects (of the namespaces ``only``, or all): their loops
    look again at once, and their cleanups a grant blocked try again."""
    runtime.grants_version += 1
    if only is None:
        woken = list(runtime.wakeups)
    else:
        woken = [
            uid for (namespace, _), uids in indexes["by_name"].items() if namespace in only for uid in uids
        ]
    for uid in woken:
        if uid in runtime.wakeups:
            runtime.wakeups[uid].set()
    # the blocked cleanups this process saw and those its status names (blocked before a restart)
    blocked = {**dict(runtime.blocked), **_first_of(indexes["cleanup_blocked"])}
    for uid, (namespace, name) in blocked.items():
        if only is not None and namespace not in only:
            continue
        try:
            await runtime.workers.call(retry_cleanup_now, runtime.kube, uid, namespace, name)
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


def listed_rules(kube: Kube) -> list[EffectiveRule]:
    """Every policy's rule, read afresh (a consistent list), not from the index. A policy the model refuses grants
    nothing (its own index entry fails the same way), and keeps no other policy from being folded."""
    rules = []
    for policy in kube.list_policies():
        name = policy["metadata"]["name"]
        try:
            rules.append(
                effective_rule(name, ClusterOnboardingPolicySpec.model_validate(policy.get("spec") or {}))
            )
        except ValidationError as exc:
            log.warning(
                "a ClusterOnboardingPolicy is not valid; it grants nothing",
                extra={"policy": name, "error": one_line(exc)},
            )
    return rules


def sync_effective_policy(
    kube: Kube, departed: Sequence[EffectiveRule] = (), listed: list[EffectiveRule] | None = None
) -> bool:
    """The EffectiveOnboardingPolicy ``effective``: every policy's rule (``listed``, or read afresh: never from the
    index, so the parameter never lags behind a policy that was just written), and the rules of policies deleted
    but still in their grace (``departed``) unless a policy of the same name is back."""
    listed = listed_rules(kube) if listed is None else listed
    names = {rule.policy for rule in listed}
    rules = sorted([*listed, *(r for r in departed if r.policy not in names)], key=lambda r: r.policy)
    # without nulls, as the API server stores it (it drops them): a null kept would make every sync a change
    spec = EffectiveOnboardingPolicySpec(rules=rules).model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    if kube.ensure_effective_policy(spec):
        log.info("admission policy parameter updated", extra={"policies": len(rules)})
        return True
    return False


def admission_of(runtime: Runtime, target: Target, indexes: Any) -> Admission:
    """The grant, decided now where both views of the policies (``rule_views``) and of the namespace's labels
    (``label_views``) allow it (on the event loop, which updates them)."""
    return admit_in_views(
        target.spec,
        target.namespace,
        label_views(runtime, indexes, target.namespace),
        rule_views(runtime, indexes),
        adopt=target.adopt,
    )
