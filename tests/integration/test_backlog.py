"""An operator that starts over a backlog (objects applied before it runs: a first install after GitOps, a restore, a
restart after an outage) converges within the memory limit it is given, without being killed and restarted.

The backlog and the limit are sized against the operator before Kopf's connections were bounded
(``kube_session.py``): over 300 objects it peaked at 278 MiB in bench.backlog (one TLS connection per object at
start-up, 256 KiB of buffer each), and under this limit the out-of-memory killer ends it with 14 of 300 objects
Ready; it now peaks at 192-199 MiB (docs/performance.md, "A backlog").
"""

import contextlib
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from defender_operator.sandbox import Sandbox
from tests.support.kube import api_client, kubectl, wait_for
from tests.support.manifests import base_manifest
from tests.support.memory import memory_limit, peak_mib
from tests.support.operator import start_operator

BACKLOG = 300
LIMIT_MIB = 250  # 25% above the peak measured here (199 MiB)
SUBSCRIPTION = (
    "b4c1b4c1-0000-4000-8000-000000000300"  # its own, so no other test's listing sees these connectors
)
WHERE = ("defender-operator.io", "v1alpha1")


def _manifest(namespace: str, index: int) -> dict[str, Any]:
    account = str(730000000000 + index)
    m = base_manifest(f"backlog-{index}", namespace, account)
    m["spec"]["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{account}:role/onboarding"}
    m["spec"]["azure"]["subscriptionId"] = SUBSCRIPTION
    return m


def _ready(obj: dict[str, Any]) -> bool:
    conditions = obj.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def test_an_operator_started_over_a_backlog_converges_within_its_memory_limit(
    sandbox: Sandbox, kubeconfig: Path, tmp_path: Path
) -> None:
    namespace = f"backlog-{uuid.uuid4().hex[:8]}"
    kubectl(kubeconfig, "create", "namespace", namespace, check=True)
    api = client.CustomObjectsApi(api_client(kubeconfig))
    try:
        for i in range(BACKLOG):
            api.create_namespaced_custom_object(*WHERE, namespace, "awsconnectors", _manifest(namespace, i))
        with memory_limit(LIMIT_MIB) as limit:
            operator = start_operator(
                sandbox,
                tmp_path / "operator",
                namespaces=[namespace],
                launcher=limit.launcher(),
                wait_ready=False,
            )
            assert operator.record is not None
            try:
                deadline = time.monotonic() + 600
                ready = 0
                while ready < BACKLOG:
                    assert operator.record.alive(), (
                        f"the operator died with {ready} of {BACKLOG} objects Ready (out-of-memory kills in its "
                        f"{LIMIT_MIB} MiB cgroup: {limit.killed()}); its log ends: {operator.log()[-2000:]}"
                    )
                    assert time.monotonic() < deadline, f"{ready} of {BACKLOG} objects Ready after 600 s"
                    listing = api.list_namespaced_custom_object(*WHERE, namespace, "awsconnectors")
                    ready = sum(1 for obj in listing["items"] if _ready(obj))
                    time.sleep(1)
                peak = peak_mib(operator.record.pid)
                print(f"peak resident memory over {BACKLOG} objects: {peak:.0f} MiB (limit {LIMIT_MIB} MiB)")
                assert peak < LIMIT_MIB, (
                    f"peak resident memory {peak:.0f} MiB, over the {LIMIT_MIB} MiB limit"
                )
                assert limit.killed() == 0 and operator.record.alive()  # the same process all along
            finally:
                operator.stop()
    finally:
        _clear(api, namespace, kubeconfig)


def _clear(api: client.CustomObjectsApi, namespace: str, kubeconfig: Path) -> None:
    """No later test's operator (they watch every namespace) should find 300 objects to look after: with no operator
    running, their finalizers go, then the objects, their (cluster-scoped) records and the namespace. Their clouds'
    resources stay, in accounts and a subscription no other test uses."""
    for obj in api.list_namespaced_custom_object(*WHERE, namespace, "awsconnectors")["items"]:
        name, uid = obj["metadata"]["name"], obj["metadata"]["uid"]
        api.patch_namespaced_custom_object(
            *WHERE, namespace, "awsconnectors", name, {"metadata": {"finalizers": None}}
        )
        with contextlib.suppress(ApiException):  # an object whose first pass wrote nothing has no record
            api.patch_cluster_custom_object(
                *WHERE, "onboardingrecords", uid, {"metadata": {"finalizers": None}}
            )
            api.delete_cluster_custom_object(*WHERE, "onboardingrecords", uid)
    # gone before the next module's operator starts (the namespace controller would take its time)
    api.delete_collection_namespaced_custom_object(*WHERE, namespace, "awsconnectors")
    wait_for(
        lambda: not api.list_namespaced_custom_object(*WHERE, namespace, "awsconnectors")["items"],
        120,
        "the backlog's objects to go",
    )
    kubectl(kubeconfig, "delete", "namespace", namespace, "--wait=false", check=True)
