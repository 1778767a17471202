"""``defender-operator plan -f manifest.yaml``: what a reconcile would change in AWS and Azure, without changing it.

It runs the operator's own reconcile pass with adapters that read for real and describe their writes instead of
making them (like ``terraform plan``). When the object exists in the cluster its status is used, so the plan knows
what the operator created before; secrets it references are read from the cluster.
"""

import argparse
import sys
from typing import Any, cast

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


def plan(args: argparse.Namespace) -> int:
    from .cli import load_valid_manifests

    manifests = load_valid_manifests(args.filename)
    if manifests is None:
        return 1
    settings = settings_from(None)
    kube = _cluster()
    instance = settings.instance or _cluster_instance(kube)
    for manifest in manifests:
        assert manifest.spec is not None
        status = AWSConnectorStatus()
        generation, uid = 1, "planned"
        read_secret = _no_secrets
        if kube is not None:
            read_secret = kube.read_secret
            try:
                live = cast(
                    dict[str, Any],
                    kube.custom.get_namespaced_custom_object(
                        GROUP, VERSION, manifest.namespace, PLURAL, manifest.name
                    ),
                )
                status = AWSConnectorStatus.model_validate(live.get("status") or {})
                generation = int(live["metadata"].get("generation", 1))
                uid = str(live["metadata"]["uid"])  # part of the owner mark the operator writes
            except Exception:  # not created yet (or not readable): plan from scratch
                pass
        planned: list[str] = []
        clouds = Clouds(settings, CredentialFactory(settings, read_secret), planned=planned)
        target = Target(
            manifest.namespace, manifest.name, uid, generation, manifest.spec, status, {}, instance
        )
        print(f"{manifest.namespace}/{manifest.name}:")
        try:
            outcome = reconcile(target, clouds, settings)
        except CloudError as exc:
            print(f"  cannot plan: {exc.message}", file=sys.stderr)
            return 1
        for line in planned:
            print(f"  ~ {line}")
        stalled = next(
            (c for c in outcome.status.conditions if c.type == "Stalled" and c.status == "True"), None
        )
        if stalled:
            print(f"  ! {stalled.reason}: {stalled.message}")
        ready = next(c for c in outcome.status.conditions if c.type == "Ready")
        if not planned and ready.status == "True":
            print("  no changes: AWS and Azure match the manifest")
        elif ready.status != "True" and not stalled:
            print(f"  then: {ready.message}")
    return 0
