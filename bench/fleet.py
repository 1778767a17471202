"""What the benchmarks share: the bench's objects and their namespace, waiting until they are Ready, the emulators
warmed before any measure, the operator with its own defaults, and the memory figures (the process's RSS, the no-op
Kopf operator's over as many objects)."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from tests.conftest import TEST_POLICY
from tests.support.clouds import aws_client
from tests.support.kube import api_client, apply, kubectl, wait_for
from tests.support.manifests import base_manifest
from tests.support.operator import OperatorProcess, start_operator

from bench.sandbox import operator_state


def status_mib(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of /proc/<pid>/status (``VmRSS``, ``VmHWM``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


def manifest(
    namespace: str, index: int, first_account: int = 400000000000, prefix: str = "acct"
) -> dict[str, Any]:
    account = str(first_account + index)
    m = base_manifest(f"{prefix}-{index}", namespace, account)
    m["spec"]["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{account}:role/onboarding"}
    m["spec"]["azure"]["resourceGroup"] = "bench"
    return m


def is_ready(obj: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in obj.get("status", {}).get("conditions", [])
    )


def converge(kubeconfig: Path, namespace: str, indices: range) -> float:
    """Seconds from creating the objects (one API request each, as ``kubectl apply`` makes) until a watch has seen
    every one of them Ready: no kubectl start-up or polling interval in the figure, as none is in the direct
    client's."""
    api = client.CustomObjectsApi(api_client(kubeconfig))
    where = ("defender-operator.io", "v1alpha1", namespace, "awsconnectors")
    version = api.list_namespaced_custom_object(*where)["metadata"]["resourceVersion"]
    started = time.monotonic()
    for i in indices:
        api.create_namespaced_custom_object(*where, manifest(namespace, i))
    wait_all_ready(api, namespace, {f"acct-{i}" for i in indices}, version)
    return time.monotonic() - started


def wait_all_ready(api: client.CustomObjectsApi, namespace: str, names: set[str], version: str) -> None:
    """Until a watch from ``version`` has seen every object of ``names`` Ready (at most 900 s)."""
    where = ("defender-operator.io", "v1alpha1", namespace, "awsconnectors")
    pending = set(names)
    started = time.monotonic()
    while pending and time.monotonic() - started < 900:
        stream = watch.Watch()
        try:
            for event in stream.stream(
                api.list_namespaced_custom_object, *where, resource_version=version, timeout_seconds=60
            ):
                obj = event["object"]
                version = obj["metadata"]["resourceVersion"]
                if is_ready(obj):
                    pending.discard(obj["metadata"]["name"])
                if not pending:
                    stream.stop()
                    break
        except ApiException as exc:
            if exc.status != 410:
                raise
            # The version left the API server's watch window (many writes, or etcd's compaction every 5 minutes):
            # list again and watch from there, as an informer does.
            listing = api.list_namespaced_custom_object(*where)
            pending -= {o["metadata"]["name"] for o in listing["items"] if is_ready(o)}
            version = listing["metadata"]["resourceVersion"]
    assert not pending, f"not Ready after 900 s: {sorted(pending)[:5]}"


def warm_emulators(box: Any, aws_endpoint: str) -> None:
    """The emulators load a service's models on its first request (moto does); make those requests before any
    measure, so neither the direct client nor the operator pays for them."""
    aws_client(box, "cloudformation", aws_endpoint).list_stacks()
    aws_client(box, "iam", aws_endpoint).list_open_id_connect_providers()
    aws_client(box, "eks", aws_endpoint).list_clusters()


def noop_kopf_rss(box: Any, objects: int, log: Path) -> float:
    """RSS of the no-op Kopf operator once it holds a daemon for each of ``objects`` objects."""
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "kopf", "run", str(Path(__file__).with_name("noop_kopf.py")), "--all-namespaces",
             "--standalone", "--quiet"],
            env={**os.environ, **box.env()}, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: log.read_text().count("daemon ") >= objects, 300, "a daemon per object")
        time.sleep(2)
        return status_mib(process.pid)
    finally:
        process.terminate()
        process.wait(30)


def operator_with_defaults(box: Any, prefix: str) -> OperatorProcess:
    """The operator with its own defaults (resync every 300 s), as users run it, for convergence and memory: the
    tests' 8 s resync would add passes over objects already Ready, which no deployment makes that often, while
    later objects converge."""
    return start_operator(
        box, operator_state(box, prefix), extra_env={"DEFENDER_OPERATOR_RESYNC_SECONDS": "300"}
    )


def bench_namespace(kubeconfig: Path) -> None:
    """Namespace ``bench``, and the grant its objects need: they use the operator's identity (roleArn), which a
    cluster admin grants (docs/tenancy.md)."""
    kubectl(kubeconfig, "create", "namespace", "bench", check=True)
    apply(kubeconfig, TEST_POLICY)
    wait_for(lambda: "sandbox-tests" in kubectl(kubeconfig, "get", "effectiveonboardingpolicy", "effective",
             "-o", "jsonpath={.spec.rules[*].policy}").stdout, 30, "the grant")  # fmt: skip
