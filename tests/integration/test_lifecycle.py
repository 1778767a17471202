"""Production lifecycle (issue 27) on a control loop: install, upgrade, roll out, drain and uninstall the chart as a
cluster does it, on a fresh control plane of its own (no CRDs beforehand, as a first install meets it) with
kube-controller-manager, kube-scheduler and kwok's simulated nodes. No container runs: kwok makes a scheduled pod
run and be Ready; the operator processes run outside, as everywhere in these tests, one per pod (POD_NAME), and
act as their pods would (the test stops a process when its pod is evicted)."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.sandbox import Sandbox, binaries, controlplane, processes
from defender_operator.sandbox.controlplane import ControlPlane
from tests.support.kube import kubectl, wait_for
from tests.support.paths import REPO

pytestmark = pytest.mark.integration

CHART = REPO / "charts" / "defender-operator"
RELEASE, NAMESPACE = "defender-operator", "defender-operator"
PREVIOUS = "c0aa31e"  # the chart as released before issue 27 (git history; docs/development.md)
NODES = ("node-a", "node-b", "node-c")


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


def previous_chart(tmp_path: Path) -> Path:
    """The chart as it was at PREVIOUS, from the repository's own history."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", PREVIOUS, "charts/defender-operator"],
        capture_output=True,
        check=False,
    )
    assert archive.returncode == 0, (
        f"git archive {PREVIOUS}: {archive.stderr.decode()} (a full clone is needed)"
    )
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "charts" / "defender-operator"


def test_a_first_install_with_policies_settles_and_the_uninstall_procedure_leaves_nothing(
    cluster: ControlPlane,
) -> None:
    kubeconfig = cluster.kubeconfig
    policies = {"payments": {"namespaces": {"names": ["payments"]}, "aws": {"accountIds": ["111122223333"]}}}
    installed = helm(
        kubeconfig, "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", "--wait",
        "--timeout", "180s", "--set-json", f"onboardingPolicies={json.dumps(policies)}",
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr  # in one step: helm/helm#9395 would refuse the policy
    assert kubectl(kubeconfig, "get", "clusteronboardingpolicy", "payments").returncode == 0
    running = pods(kubeconfig)
    assert len(running) == 2 and len({p["spec"]["nodeName"] for p in running}) == 2, (
        "both replicas on one node"
    )
    # The documented uninstall (docs/operations.md, "Uninstall"): no AWSConnector is left, then the release, the
    # policies made from values, the CRDs.
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


def test_an_upgrade_from_the_previous_chart_a_rollout_restart_and_a_drain_of_the_leaders_node_complete(
    sandbox: Sandbox, cluster: ControlPlane, tmp_path: Path
) -> None:
    kubeconfig = cluster.kubeconfig
    old = helm(
        kubeconfig, "install", RELEASE, str(previous_chart(tmp_path)), "-n", NAMESPACE, "--create-namespace",
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    assert old.returncode == 0, old.stderr
    upgraded = helm(
        kubeconfig, "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, "--wait", "--timeout", "180s"
    )
    assert upgraded.returncode == 0, upgraded.stderr
    rolled_out(kubeconfig)
    kubectl(kubeconfig, "rollout", "restart", "deployment", RELEASE, "-n", NAMESPACE, check=True)
    rolled_out(kubeconfig)
    # One operator process per pod, as the kubelet would run them; they elect a leader on the chart's Lease.
    running = {p["metadata"]["name"]: p["spec"]["nodeName"] for p in pods(kubeconfig)}
    assert len(running) == 2
    operators = {name: start_for_pod(sandbox, cluster, tmp_path, name) for name in running}
    try:
        holder = wait_for(lambda: lease_holder(kubeconfig), 60, "a leader")
        leader_pod = holder.rsplit("_", 1)[0]
        assert leader_pod in running
        drained = kubectl(
            kubeconfig, "drain", running[leader_pod], "--ignore-daemonsets", "--delete-emptydir-data",
            "--timeout=300s", timeout=330,
        )  # fmt: skip
        assert drained.returncode == 0, drained.stderr  # the PodDisruptionBudget allows it
        # The evicted pod's process gets SIGTERM, as from its kubelet: it releases the Lease as it exits.
        os.killpg(operators[leader_pod].pid, signal.SIGTERM)
        standby = next(name for name in running if name != leader_pod)
        wait_for(
            lambda: (lease_holder(kubeconfig) or "").startswith(f"{standby}_"), 30, "the standby to take over"
        )
        rolled_out(kubeconfig)  # the ReplicaSet put a replacement on another node
        assert all(p["spec"]["nodeName"] != running[leader_pod] for p in pods(kubeconfig))
    finally:
        for record in operators.values():
            if record.alive():
                os.killpg(record.pid, signal.SIGKILL)
        kubectl(kubeconfig, "uncordon", running[leader_pod])


def start_for_pod(sandbox: Sandbox, cluster: ControlPlane, tmp_path: Path, pod: str) -> processes.Recorded:
    state = tmp_path / pod
    state.mkdir()
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
        "DEFENDER_OPERATOR_PROBE_PORT": str(processes.free_port()),
    }
    return processes.start(state, "operator", [sys.executable, "-m", "defender_operator.cli", "run"], env=env)


def lease_holder(kubeconfig: Path) -> str | None:
    found = kubectl(
        kubeconfig, "get", "lease", RELEASE, "-n", NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}"
    )
    return found.stdout.strip() or None if found.returncode == 0 else None
