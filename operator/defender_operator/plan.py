"""``defender-operator plan -f manifest.yaml``: what a reconcile would change in AWS and Azure, without changing it.

It runs the operator's own reconcile pass with adapters that read for real and describe their writes instead of
making them (like ``terraform plan``). When the object exists in the cluster its status is used, so the plan knows
what the operator created before; secrets it references are read from the cluster.
"""

import argparse
import json
import sys
from dataclasses import dataclass, field
from typing import Any, cast

from kubernetes.client.exceptions import ApiException

from .api.manifest import Manifest
from .api.names import GROUP, PLURAL, VERSION
from .api.status import AWSConnectorStatus
from .credentials import CredentialFactory
from .errors import CloudError
from .kube import Kube, load_config
from .reconcile.clouds import Clouds
from .reconcile.engine import reconcile
from .reconcile.model import Target
from .settings import settings_from


class NoCluster(Exception):
    """The cluster could not be reached, and the plan was not asked to do without it."""


def _cluster(args: argparse.Namespace) -> Kube | None:
    """The cluster to read the objects' status and Secrets from: the kubeconfig and context given, else as kubectl
    finds them; None only with ``--no-cluster`` (a plan without the cluster cannot know what the operator created)."""
    if getattr(args, "no_cluster", False):
        return None
    try:
        api = load_config(getattr(args, "kubeconfig", None), getattr(args, "context", None))
    except Exception as exc:
        raise NoCluster(
            f"no cluster to read the objects from ({_first_line(exc)}); give --kubeconfig/--context, or --no-cluster "
            "to plan against the clouds alone"
        ) from None
    return Kube(api)


def _cluster_instance(kube: Kube | None) -> str:
    """The operator's default instance (the cluster's id), so the plan sees ownership as the operator does."""
    try:
        return f"cluster-{kube.cluster_id()}" if kube is not None else "default"
    except Exception:  # not readable: ownership checks in the plan may then name this cluster's own resources
        return "default"


def _no_secrets(namespace: str, name: str) -> dict[str, str]:
    raise KeyError(name)


NO_CHANGES, FAILED, CHANGES = 0, 1, 2
_RESULTS = {NO_CHANGES: "no-changes", FAILED: "failed", CHANGES: "changes"}


@dataclass
class Planned:
    """One object's plan, as printed (text) or returned (``-o json``)."""

    object: str
    code: int = NO_CHANGES
    changes: list[str] = field(default_factory=list)
    then: str | None = None
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "result": _RESULTS[self.code],
            "changes": self.changes,
            "then": self.then,
            "error": self.error,
        }

    def print_text(self) -> None:
        print(f"{self.object}:")
        for line in self.changes:
            print(f"  ~ {line}")
        if self.error is not None:
            print(f"  cannot plan: {self.error}", file=sys.stderr)
        elif self.code == NO_CHANGES:
            print("  no changes: AWS and Azure match the manifest")
        elif self.then:
            print(f"  then: {self.then}")


def plan(args: argparse.Namespace) -> int:
    """Exit codes, as ``terraform plan -detailed-exitcode``: 1 when it could not plan (a cloud or the cluster could
    not be reached, the credentials fail, a problem a person must fix); with ``--detailed-exitcode`` 2 when
    something would change and 0 when nothing would; without it, 0 in both cases (a usage error is 64, never 2).
    Errors are one line each; ``-o json`` prints one document: ``{"objects": [...]}``."""
    from .cli import load_valid_manifests

    manifests = load_valid_manifests(args.filename)
    if manifests is None:
        return FAILED
    try:
        kube = _cluster(args)
        results = [_plan_one(manifest, kube) for manifest in manifests]
    except Exception as exc:  # the cluster or a cloud failed in a way the adapters do not classify
        print(f"cannot plan: {exc if isinstance(exc, NoCluster) else _first_line(exc)}", file=sys.stderr)
        return FAILED
    if getattr(args, "output", "text") == "json":
        print(json.dumps({"objects": [r.as_json() for r in results]}, indent=2))
    else:
        for result in results:
            result.print_text()
    codes = {r.code for r in results}
    if FAILED in codes:
        return FAILED
    return CHANGES if args.detailed_exitcode and CHANGES in codes else NO_CHANGES


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _plan_one(manifest: Manifest, kube: Kube | None) -> Planned:
    assert manifest.spec is not None
    settings = settings_from(None)
    instance = settings.instance or _cluster_instance(kube)
    status, generation, uid, read_secret = AWSConnectorStatus(), 1, "planned", _no_secrets
    if kube is not None:
        read_secret = kube.read_secret
        live = _live(kube, manifest)
        if live is not None:
            status = AWSConnectorStatus.model_validate(live.get("status") or {})
            generation = int(live["metadata"].get("generation", 1))
            uid = str(live["metadata"]["uid"])  # part of the owner mark the operator writes
    result = Planned(manifest.key)
    clouds = Clouds(settings, CredentialFactory(settings, read_secret), planned=result.changes)
    target = Target(manifest.namespace, manifest.name, uid, generation, manifest.spec, status, {}, instance)
    try:
        outcome = reconcile(target, clouds, settings)
    except CloudError as exc:
        result.code, result.error = FAILED, exc.message
        return result
    ready = next(c for c in outcome.status.conditions if c.type == "Ready")
    stalled = next((c for c in outcome.status.conditions if c.type == "Stalled" and c.status == "True"), None)
    if outcome.result == "error" or stalled is not None:
        failed = stalled or ready
        result.code, result.error = FAILED, f"{failed.reason}: {failed.message}"
    elif result.changes or ready.status != "True":
        result.code = CHANGES
        result.then = ready.message if ready.status != "True" else None
    return result


def _live(kube: Kube, manifest: Manifest) -> dict[str, Any] | None:
    """The object as the cluster has it, or None when it does not exist there (yet)."""
    try:
        return cast(
            dict[str, Any],
            kube.custom.get_namespaced_custom_object(
                GROUP, VERSION, manifest.namespace, PLURAL, manifest.name
            ),
        )
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
