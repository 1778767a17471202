"""``defender-operator plan -f manifest.yaml``: what a reconcile would change in AWS and Azure, without changing it.

It runs the operator's own reconcile pass with adapters that read for real and describe their writes instead of
making them (like ``terraform plan``). When the object exists in the cluster its status is used, so the plan knows
what the operator created before; secrets it references are read from the cluster.
"""

import argparse
import sys
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


def _cluster() -> Kube | None:
    try:
        return Kube(load_config())
    except Exception:  # no cluster configured: plan against the clouds alone
        return None


def _cluster_instance(kube: Kube | None) -> str:
    """The operator's default instance (the cluster's id), so the plan sees ownership as the operator does."""
    try:
        return f"cluster-{kube.cluster_id()}" if kube is not None else "default"
    except Exception:  # not readable: ownership checks in the plan may then name this cluster's own resources
        return "default"


def _no_secrets(namespace: str, name: str) -> dict[str, str]:
    raise KeyError(name)


NO_CHANGES, FAILED, CHANGES = 0, 1, 2


def plan(args: argparse.Namespace) -> int:
    """Exit codes, as ``terraform plan -detailed-exitcode``: 1 when it could not plan (a cloud or the cluster could
    not be reached, the credentials fail, a problem a person must fix); with ``--detailed-exitcode`` 2 when
    something would change and 0 when nothing would; without it, 0 in both cases. Errors are one line each."""
    from .cli import load_valid_manifests

    manifests = load_valid_manifests(args.filename)
    if manifests is None:
        return FAILED
    try:
        results = [_plan_one(manifest) for manifest in manifests]
    except Exception as exc:  # the cluster or a cloud failed in a way the adapters do not classify
        print(f"cannot plan: {_first_line(exc)}", file=sys.stderr)
        return FAILED
    if FAILED in results:
        return FAILED
    return CHANGES if args.detailed_exitcode and CHANGES in results else NO_CHANGES


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _plan_one(manifest: Manifest) -> int:
    assert manifest.spec is not None
    settings = settings_from(None)
    kube = _cluster()
    instance = settings.instance or _cluster_instance(kube)
    status, generation, uid, read_secret = AWSConnectorStatus(), 1, "planned", _no_secrets
    if kube is not None:
        read_secret = kube.read_secret
        live = _live(kube, manifest)
        if live is not None:
            status = AWSConnectorStatus.model_validate(live.get("status") or {})
            generation = int(live["metadata"].get("generation", 1))
            uid = str(live["metadata"]["uid"])  # part of the owner mark the operator writes
    planned: list[str] = []
    clouds = Clouds(settings, CredentialFactory(settings, read_secret), planned=planned)
    target = Target(manifest.namespace, manifest.name, uid, generation, manifest.spec, status, {}, instance)
    print(f"{manifest.key}:")
    try:
        outcome = reconcile(target, clouds, settings)
    except CloudError as exc:
        print(f"  cannot plan: {exc.message}", file=sys.stderr)
        return FAILED
    for line in planned:
        print(f"  ~ {line}")
    ready = next(c for c in outcome.status.conditions if c.type == "Ready")
    stalled = next((c for c in outcome.status.conditions if c.type == "Stalled" and c.status == "True"), None)
    if outcome.result == "error" or stalled is not None:
        failed = stalled or ready
        print(f"  cannot plan: {failed.reason}: {failed.message}", file=sys.stderr)
        return FAILED
    if not planned and ready.status == "True":
        print("  no changes: AWS and Azure match the manifest")
        return NO_CHANGES
    if ready.status != "True":
        print(f"  then: {ready.message}")
    return CHANGES


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
