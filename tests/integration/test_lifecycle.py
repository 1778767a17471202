"""Production lifecycle (issue 27) on a control loop: install, upgrade, roll out, drain and uninstall the chart as a
cluster does it, on a fresh control plane of its own (no CRDs beforehand, as a first install meets it) with
kube-controller-manager, kube-scheduler and kwok's simulated nodes. No container runs: the operator processes run
outside, one per pod (POD_NAME), started, probed and stopped by the tests' kubelet (tests/support/kubelet.py), so a
pod is Ready when its process's /readyz says so, and a rollout, `helm --wait` and the PodDisruptionBudget wait on
the operator's own readiness."""

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.api.names import SECRET_FINALIZER_PREFIX
from defender_operator.sandbox import Sandbox, binaries, controlplane, processes
from defender_operator.sandbox.controlplane import ControlPlane
from tests.support.kube import apply, kubectl, list_objects, wait_for
from tests.support.kubelet import PROBED, Kubelet
from tests.support.onboarding import manifest, own_secrets, tenant_secrets
from tests.support.operator import wait_condition
from tests.support.paths import REPO

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "defender-operator"
RELEASE, NAMESPACE = "defender-operator", "defender-operator"
# The chart as released before issue 27 (commit c0aa31e), packaged (`helm package`) so that a clone without that
# history (a shallow one) upgrades from it too.
PREVIOUS = REPO / "tests" / "integration" / "charts" / "defender-operator-0.1.0-c0aa31e.tgz"
NODES = ("node-a", "node-b", "node-c")
PODS_PROBED = (
    "--set-json",
    f"podAnnotations={json.dumps(PROBED)}",
)  # the tests' kubelet runs and probes them


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    state = tmp_path_factory.mktemp("lifecycle")
    plane = controlplane.start(state)
    try:
        for node in NODES:
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node, "labels": {"kubernetes.io/hostname": node}},
            }
            kubectl(plane.kubeconfig, "apply", "-f", "-", stdin=json.dumps(body), check=True)
        wait_for(lambda: ready_nodes(plane.kubeconfig) == len(NODES), 60, "the simulated nodes to be Ready")
        yield plane
    finally:
        processes.stop_recorded(state)


@pytest.fixture
def kubelet(sandbox: Sandbox, cluster: ControlPlane, tmp_path: Path) -> Iterator[Kubelet]:
    running = Kubelet(
        cluster.kubeconfig, NAMESPACE, lambda pod: start_for_pod(sandbox, cluster, tmp_path, pod)
    )
    try:
        yield running
    finally:
        running.close()


def ready_nodes(kubeconfig: Path) -> int:
    nodes = json.loads(kubectl(kubeconfig, "get", "nodes", "-o", "json", check=True).stdout)["items"]
    return sum(
        any(c["type"] == "Ready" and c["status"] == "True" for c in n.get("status", {}).get("conditions", []))
        for n in nodes
    )


def helm(kubeconfig: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.helm()), "--kubeconfig", str(kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pods(kubeconfig: Path) -> list[dict[str, Any]]:
    found = kubectl(
        kubeconfig,
        "get",
        "pods",
        "-n",
        NAMESPACE,
        "-l",
        "app.kubernetes.io/name=defender-operator",
        "-o",
        "json",
    )
    items: list[dict[str, Any]] = json.loads(found.stdout)["items"] if found.returncode == 0 else []
    return [p for p in items if not p["metadata"].get("deletionTimestamp")]


def rolled_out(kubeconfig: Path) -> None:
    status = kubectl(
        kubeconfig, "rollout", "status", "deployment", RELEASE, "-n", NAMESPACE, "--timeout=300s", timeout=330
    )
    assert status.returncode == 0, status.stdout + status.stderr


def test_a_first_install_with_policies_settles_and_the_uninstall_procedure_leaves_nothing(
    cluster: ControlPlane, kubelet: Kubelet
) -> None:
    kubeconfig = cluster.kubeconfig
    policies = {"payments": {"namespaces": {"names": ["payments"]}, "aws": {"accountIds": ["111122223333"]}}}
    installed = helm(
        kubeconfig, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", "--wait",
        "--timeout", "180s", "--set-json", f"onboardingPolicies={json.dumps(policies)}", *PODS_PROBED,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr  # in one step: helm/helm#9395 would refuse the policy
    assert kubectl(kubeconfig, "get", "clusteronboardingpolicy", "payments").returncode == 0
    running = pods(kubeconfig)
    assert len(running) == 2 and len({p["spec"]["nodeName"] for p in running}) == 2, (
        "both replicas on one node"
    )
    # Ready from their own /readyz: the leader's and the standby's (readiness is not leadership)
    assert {p["metadata"]["name"] for p in running} == {n for n, c in kubelet.containers.items() if c.ready}
    # An object onboarded with its namespace's own Secrets, which the operator holds while cleanup may need them
    tenant = f"tenant-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", tenant, check=True)
    tenant_secrets(kubeconfig, tenant)
    assert apply(kubeconfig, own_secrets(manifest(tenant, name="uninstalled"))).returncode == 0
    wait_condition(kubeconfig, tenant, "uninstalled", "Ready", "True", timeout=120)
    assert any(
        f.startswith(SECRET_FINALIZER_PREFIX) for f in secret_finalizers(kubeconfig, tenant, "aws-keys")
    )
    # The documented uninstall (docs/operations.md, "Uninstall"): every AWSConnector deleted while the operator
    # runs (its cleanup done, its Secrets let go, its record gone), then the release, the policies made from
    # values, the CRDs; nothing is left stuck.
    kubectl(kubeconfig, "delete", "awsc", "--all", "-A", "--wait=false", check=True)
    wait_for(lambda: not list_objects(kubeconfig, tenant), 120, "every AWSConnector to go")
    for secret in ("aws-keys", "azure-app"):
        assert not secret_finalizers(kubeconfig, tenant, secret)
    records = kubectl(kubeconfig, "get", "onboardingrecords", "-o", "name", check=True).stdout
    assert not records.strip(), records
    assert helm(kubeconfig, "uninstall", RELEASE, "-n", NAMESPACE, "--wait").returncode == 0
    kubectl(
        kubeconfig,
        "delete",
        "clusteronboardingpolicy",
        "-l",
        f"app.kubernetes.io/instance={RELEASE}",
        check=True,
    )
    crds = [f"{p}.defender-operator.io" for p in
            ("awsconnectors", "clusteronboardingpolicies", "effectiveonboardingpolicies", "onboardingrecords")]  # fmt: skip
    kubectl(kubeconfig, "delete", "crd", *crds, "--timeout=60s", check=True)
    left = kubectl(kubeconfig, "get", "crd", "-o", "name", check=True).stdout
    assert "defender-operator.io" not in left
    wait_for(lambda: not pods(kubeconfig), 60, "the pods to go")
    kubectl(
        kubeconfig, "delete", "namespace", tenant, "--timeout=60s", check=True
    )  # nothing holds its Secrets


def secret_finalizers(kubeconfig: Path, namespace: str, name: str) -> list[str]:
    found = kubectl(kubeconfig, "get", "secret", name, "-n", namespace, "-o", "json", check=True).stdout
    return list(json.loads(found)["metadata"].get("finalizers", []))


def test_an_upgrade_from_the_previous_chart_a_rollout_restart_and_a_drain_of_the_leaders_node_complete(
    cluster: ControlPlane, kubelet: Kubelet
) -> None:
    kubeconfig = cluster.kubeconfig
    old = helm(
        kubeconfig, "install", RELEASE, str(PREVIOUS), "-n", NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "180s", *PODS_PROBED,
    )  # fmt: skip
    assert old.returncode == 0, old.stderr
    # Each new pod is Ready only once its process says so, while the old leader still holds the Lease: a
    # standby that waited for the Lease would never be Ready, and the rollout (maxUnavailable 0) would stall.
    upgraded = helm(
        kubeconfig,
        "upgrade",
        RELEASE,
        str(CHART),
        "-n",
        NAMESPACE,
        "--wait",
        "--timeout",
        "180s",
        *PODS_PROBED,
    )
    assert upgraded.returncode == 0, upgraded.stderr
    rolled_out(kubeconfig)
    kubectl(kubeconfig, "rollout", "restart", "deployment", RELEASE, "-n", NAMESPACE, check=True)
    rolled_out(kubeconfig)
    running = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods(kubeconfig)}
    assert len(running) == 2
    # the old pods' last leader released the Lease on its way out; a new pod's process takes it
    leader_pod = wait_for(
        lambda: next((p for p in running if (lease_holder(kubeconfig) or "").startswith(f"{p}_")), None),
        60,
        "a new pod to lead",
    )
    try:
        # The PodDisruptionBudget lets the leader's pod go only while the standby is Ready; the evicted pod's
        # process gets SIGTERM from the kubelet and releases the Lease as it exits.
        drained = kubectl(
            kubeconfig, "drain", running[leader_pod], "--ignore-daemonsets", "--delete-emptydir-data",
            "--timeout=300s", timeout=330,
        )  # fmt: skip
        assert drained.returncode == 0, drained.stderr

        # Another replica leads: the standby, or the replacement the ReplicaSet made on another node, whichever
        # asks first once the old leader released the Lease (as in a cluster)
        def new_leader() -> str | None:
            holder = (lease_holder(kubeconfig) or "").rsplit("_", 1)[0]
            live = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods(kubeconfig)}
            return holder if holder in live and live[holder] != running[leader_pod] else None

        wait_for(new_leader, 60, "another replica to lead")
        rolled_out(kubeconfig)  # the ReplicaSet put a replacement on another node, Ready as a standby
        assert all(p["spec"]["nodeName"] != running[leader_pod] for p in pods(kubeconfig))
    finally:
        kubectl(kubeconfig, "uncordon", running[leader_pod])


def start_for_pod(
    sandbox: Sandbox, cluster: ControlPlane, tmp_path: Path, pod: str
) -> tuple[processes.Recorded, int]:
    """The operator as pod ``pod`` runs it, and the port of its /readyz."""
    state = tmp_path / pod
    state.mkdir(exist_ok=True)
    probe_port = processes.free_port()
    env = {
        **sandbox.env(),
        "KUBECONFIG": str(cluster.kubeconfig),
        "POD_NAME": pod,
        "POD_NAMESPACE": NAMESPACE,
        "DEFENDER_OPERATOR_LEADER_ELECTION": "true",
        "DEFENDER_OPERATOR_LEASE_NAME": RELEASE,
        "DEFENDER_OPERATOR_LEASE_DURATION_SECONDS": "6",
        "DEFENDER_OPERATOR_RENEW_DEADLINE_SECONDS": "4",
        "DEFENDER_OPERATOR_RETRY_PERIOD_SECONDS": "1",
        "DEFENDER_OPERATOR_METRICS_PORT": str(processes.free_port()),
        "DEFENDER_OPERATOR_PROBE_PORT": str(probe_port),
    }
    argv = [sys.executable, "-m", "defender_operator.cli", "run"]
    return processes.start(state, "operator", argv, env=env), probe_port


def lease_holder(kubeconfig: Path) -> str | None:
    found = kubectl(
        kubeconfig, "get", "lease", RELEASE, "-n", NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}"
    )
    return found.stdout.strip() or None if found.returncode == 0 else None
