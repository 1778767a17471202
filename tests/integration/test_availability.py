"""Availability (issue 14): two replicas with leader election on a Lease, the leader SIGKILLed in the middle of
onboarding; and shards, each with its own namespaces and Lease. Real API server, moto, ARM emulator; each operator
its own process."""

import contextlib
import json
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from defender_operator.sandbox import Sandbox
from tests.support.clouds import aws_control
from tests.support.forwarder import forwarder
from tests.support.kube import apply, condition, get_object, kubectl, wait_for
from tests.support.onboarding import (
    account_of,
    connector,
    delete,
    manifest,
    paused_first,
    resumed_with_a_change,
    stacks_of,
)
from tests.support.operator import STACK_PENDING, OperatorProcess, start_operator, wait_condition, wait_gone

pytestmark = pytest.mark.integration

OBJECTS = 20


def elected(
    sandbox: Sandbox, state: Path, namespace: str, lease: str, *watched: str, **options: Any
) -> OperatorProcess:
    return start_operator(
        sandbox,
        state,
        namespaces=list(watched),
        wait_ready=False,
        **options,
        extra_env={
            "DEFENDER_OPERATOR_LEADER_ELECTION": "true",
            "DEFENDER_OPERATOR_LEASE_NAME": lease,
            "DEFENDER_OPERATOR_LEASE_NAMESPACE": namespace,
            "DEFENDER_OPERATOR_LEASE_DURATION_SECONDS": "4",
            "DEFENDER_OPERATOR_RENEW_DEADLINE_SECONDS": "3",
            "DEFENDER_OPERATOR_RETRY_PERIOD_SECONDS": "0.5",
        },
    )


@contextlib.contextmanager
def two_replicas(
    sandbox: Sandbox, kubeconfig: Path, namespace: str, tmp_path: Path
) -> Iterator[tuple[str, str, OperatorProcess, OperatorProcess]]:
    """Two replicas on a new Lease, watching ``namespace``: (the Lease, the leader's identity, the leader, the
    standby), both Ready; stopped afterwards."""
    lease = f"defender-operator-{uuid.uuid4().hex[:6]}"
    first = elected(sandbox, tmp_path / "a", namespace, lease, namespace)
    second = elected(sandbox, tmp_path / "b", namespace, lease, namespace)
    try:
        leader_id = wait_for(lambda: holder(kubeconfig, namespace, lease), 30, "a leader")
        leader, standby = (first, second) if leader_id in first.log() else (second, first)
        assert leader_id in leader.log() and leader_id not in standby.log()
        wait_for(leader.ready, 30, "the leader's /readyz")
        # Both ready (a rollout and a drain need the standby Ready too); the metric tells which one leads.
        wait_for(standby.ready, 30, "the standby's /readyz")
        yield lease, leader_id, leader, standby
    finally:
        first.stop()
        second.stop()


def holder(kubeconfig: Path, namespace: str, lease: str) -> str | None:
    out = kubectl(kubeconfig, "get", "lease", "-n", namespace, lease, "-o", "json")
    return json.loads(out.stdout)["spec"].get("holderIdentity") if out.returncode == 0 else None


def log_lines(operator: OperatorProcess) -> list[dict[str, Any]]:
    return [json.loads(line) for line in operator.log().splitlines() if line.startswith("{")]


def passes(operator: OperatorProcess) -> list[tuple[datetime, str]]:
    """(time, object) of every reconcile pass the process finished."""
    return [
        (datetime.fromisoformat(line["time"].replace("Z", "+00:00")), str(line["object"]))
        for line in log_lines(operator)
        if line["message"] in ("reconciled", "retryable error; backing off")
    ]


def reasons(kubeconfig: Path, namespace: str, manifests: list[dict[str, Any]]) -> set[str | None]:
    """The Ready reasons of these objects, read in one list call (so a poll is quick beside the clouds' timers)."""
    names = {m["metadata"]["name"] for m in manifests}
    listed = json.loads(
        kubectl(kubeconfig, "get", "awsconnector", "-n", namespace, "-o", "json", check=True).stdout
    )
    found = {obj["metadata"]["name"]: obj for obj in listed["items"] if obj["metadata"]["name"] in names}
    return {(condition(found.get(name), "Ready") or {}).get("reason") for name in names}


def ready(kubeconfig: Path, namespace: str, name: str) -> bool:
    cond = condition(get_object(kubeconfig, namespace, name), "Ready")
    return bool(cond and cond["status"] == "True")


def test_the_standby_takes_over_when_the_leader_is_killed(
    sandbox: Sandbox, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    with two_replicas(sandbox, kubeconfig, namespace, tmp_path) as (lease, leader_id, leader, standby):
        assert f'leader_election_master_status{{name="{lease}"}} 1.0' in leader.metrics()
        assert f'leader_election_master_status{{name="{lease}"}} 0.0' in standby.metrics()
        manifests = [manifest(namespace, f"acme-{i}") for i in range(OBJECTS)]
        done, pending = manifests[: OBJECTS // 2], manifests[OBJECTS // 2 :]
        assert apply(kubeconfig, done).returncode == 0
        wait_for(lambda: reasons(kubeconfig, namespace, done) == {"Onboarded"}, 90, "the first half Ready")
        # The second half's stacks take 20 s in CloudFormation: the leader dies with all of them in progress (either
        # reason is written after CreateStack answered; one quick list call tells, however busy the machine).
        aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 20})
        try:
            assert apply(kubeconfig, pending).returncode == 0
            wait_for(
                lambda: reasons(kubeconfig, namespace, pending) <= STACK_PENDING,
                60,
                "every stack of the second half to be creating",
            )
            leader.kill()  # SIGKILL: no release of the lease, no cleanup
            killed = datetime.now().astimezone()
        finally:
            aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 0})
        assert reasons(kubeconfig, namespace, pending) <= STACK_PENDING
        new_leader = wait_for(
            lambda: (h := holder(kubeconfig, namespace, lease)) != leader_id and h, 30, "a new leader"
        )
        assert new_leader in standby.log()
        wait_for(
            lambda: reasons(kubeconfig, namespace, manifests) == {"Onboarded"}, 120, "every object Ready"
        )
        for m in manifests:
            assert len(stacks_of(sandbox, account_of(m))) == 1
            assert connector(sandbox, m, m["metadata"]["name"]).status_code == 200
        # Never two at once: the standby made no pass before the leader died.
        standby_passes = passes(standby)
        assert standby_passes and min(t for t, _ in standby_passes) > killed
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "--all", "--wait=false", check=True)
        for m in manifests:
            wait_gone(kubeconfig, namespace, m["metadata"]["name"], timeout=120)


def test_a_leader_asked_to_stop_keeps_its_lease_until_its_last_pass_has_ended(
    sandbox: Sandbox, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """A rolling update SIGTERMs the leader while a pass waits on a slow CloudFormation answer. Kopf stops waiting
    for the pass's daemon after its cancellation timeout (10 s) and returns, but the pass goes on in its worker
    thread and will write when the answer comes: the Lease must stay the old leader's (renewed) until that thread
    has ended, and the standby take over only then. Released at Kopf's return, the standby led beside it."""
    with two_replicas(sandbox, kubeconfig, namespace, tmp_path) as (lease, leader_id, leader, _standby):
        # the answer to CreateStack comes 25 s late (within botocore's 30 s read timeout): the pass waits for it
        leader.inject_aws_fault(pathPattern="CreateStack", count=1, latency=25)
        m = manifest(namespace, "rolling")
        assert apply(kubeconfig, m).returncode == 0
        # a bound for a hang, not a speed (a busy machine)
        wait_for(lambda: leader.aws_faulted() == 1, 180, "the leader's CreateStack to be under way")
        assert leader.record is not None
        old = leader.record
        os.killpg(old.pid, signal.SIGTERM)  # the kubelet stops the pod
        # The pass writes its stack when the answer comes (25 s after it asked): the Lease leaves the old leader
        # only after that (the holder read first: if it has changed, the release happened before the stack read).
        wait_for(lambda: holder(kubeconfig, namespace, lease) != leader_id, 90, "the old leader to let go")
        assert stacks_of(sandbox, account_of(m)), "the Lease left a leader whose pass was still under way"
        wait_for(lambda: not old.alive(), 30, "the old leader to exit")
        assert "did not exit in time" in leader.log()  # Kopf did give the pass up (what this test is about)
        wait_for(
            lambda: holder(kubeconfig, namespace, lease) not in (None, leader_id), 30, "the standby to lead"
        )
        wait_for(lambda: ready(kubeconfig, namespace, "rolling"), 90, "the object Ready from the new leader")
        assert len(stacks_of(sandbox, account_of(m))) == 1
        delete(kubeconfig, namespace, "rolling")


def test_a_standby_stops_at_once_on_sigterm_even_as_a_containers_first_process(
    sandbox: Sandbox, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """In a container the operator is PID 1, and the kernel delivers PID 1 no signal it has no handler for. A standby
    waiting for the Lease (and a start-up) must handle SIGTERM itself, or every rollout and drain waits out the pod's
    grace period for it. The standby here runs as PID 1 of its own PID namespace (``unshare``), as in a pod."""
    lease = f"defender-operator-{uuid.uuid4().hex[:6]}"
    leader = elected(sandbox, tmp_path / "a", namespace, lease, namespace)
    standby = None
    try:
        wait_for(lambda: holder(kubeconfig, namespace, lease), 30, "a leader")
        standby = elected(
            sandbox, tmp_path / "b", namespace, lease, namespace, launcher=["unshare", "--pid", "--fork"]
        )
        wait_for(standby.ready, 30, "the standby's /readyz")  # it waits for the Lease
        assert standby.record is not None
        (first,) = _children(standby.record.pid)  # PID 1 in its namespace
        os.kill(first, signal.SIGTERM)  # the container runtime stops the pod's first process
        wait_for(lambda: not Path(f"/proc/{first}").exists(), 10, "the standby to stop on SIGTERM")
    finally:
        leader.stop()
        if standby is not None:
            standby.stop()


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_shards_split_the_namespaces_each_with_its_own_lease(
    sandbox: Sandbox, kubeconfig: Path, tmp_path: Path
) -> None:
    spaces = [f"shard-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    for space in spaces:
        kubectl(kubeconfig, "create", "namespace", space, check=True)
    shards = [
        elected(sandbox, tmp_path / f"shard{i}", space, f"shard-{i}-{uuid.uuid4().hex[:4]}", space)
        for i, space in enumerate(spaces)
    ]
    try:
        for shard in shards:
            wait_for(shard.ready, 30, "each shard to lead its own lease")
        manifests = [manifest(space, f"acme-{i}") for space in spaces for i in range(2)]
        assert apply(kubeconfig, manifests).returncode == 0
        for m in manifests:
            wait_for(  # a bound for a hang, not a speed: two operators' first passes on a busy machine
                lambda m=m: ready(kubeconfig, m["metadata"]["namespace"], m["metadata"]["name"]), 180, "Ready"
            )
        for shard, space in zip(shards, spaces, strict=True):
            own = {f"{space}/acme-0", f"{space}/acme-1"}
            # a pass logs its line just after it writes the status the wait above saw
            wait_for(
                lambda shard=shard, own=own: {o for _, o in passes(shard)} >= own, 30, "the passes' lines"
            )
            handled = {obj for _, obj in passes(shard)}
            assert handled == own, handled  # its own, and only its own
    finally:
        # cleaned up by the shards before they stop, whatever failed: objects left behind would be every later
        # module's operator's to reconcile
        for space in spaces:
            kubectl(kubeconfig, "delete", "awsc", "-n", space, "--all", "--wait=false")
        try:
            for space in spaces:
                wait_for(
                    lambda space=space: "acme" not in kubectl(kubeconfig, "get", "awsc", "-n", space).stdout,
                    90,
                    f"the objects of {space} to be cleaned up",
                )
        finally:
            for shard in shards:
                shard.stop()


def test_an_api_server_outage_is_an_error_to_back_off_from_not_a_panic(
    sandbox: Sandbox, kubeconfig: Path, namespace: str, tmp_path: Path
) -> None:
    """The operator loses the API server in the middle of a first pass (a control-plane upgrade; a partition): the
    pass makes the AWS writes its announcement recorded, cannot record its first Azure write, so it writes nothing
    to Azure, backs off with a warning and a counted error (no traceback, no panic, which would page someone), and
    onboards the object once the API server is back."""
    with forwarder(sandbox.control_plane.server) as link:
        cut_off = tmp_path / "kubeconfig"
        config = yaml.safe_load(sandbox.control_plane.kubeconfig.read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = link.url
        cut_off.write_text(yaml.safe_dump(config))
        operator = start_operator(sandbox, tmp_path / "operator", kubeconfig=cut_off, namespaces=[namespace])
        try:
            # The first pass waits 8 s in AWS: time enough to cut it off before it records its first Azure write.
            m = manifest(namespace)
            paused_first(kubeconfig, m)  # then a new generation, announced (a new object's pass is not)
            operator.inject_aws_fault(pathPattern="AssumeRole", latency=8, count=1)
            resumed_with_a_change(kubeconfig, namespace, "acme")
            announced = wait_condition(kubeconfig, namespace, "acme", "Reconciling", "True", timeout=15)
            assert announced["status"]["firstCloudWrite"]["aws"]  # the pass began, its AWS writes recorded
            link.cut()
            wait_for(
                lambda: "the Kubernetes API server did not answer; backing off" in operator.log(),
                30,
                "the pass to back off",
            )
            # Its first Azure write was never recorded, so it was never made.
            assert "azure" not in get_object(kubeconfig, namespace, "acme")["status"]["firstCloudWrite"]  # type: ignore[index]
            assert connector(sandbox, m).status_code == 404
            link.restore()
            wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=90)
            assert [s["StackStatus"] for s in stacks_of(sandbox, account_of(m))] == ["CREATE_COMPLETE"]
            assert connector(sandbox, m).status_code == 200
            assert "reconcile failed unexpectedly" not in operator.log()
            metrics = operator.metrics()
            assert 'controller_runtime_reconcile_panics_total{controller="awsconnector"} 0.0' in metrics
            assert 'controller_runtime_reconcile_errors_total{controller="awsconnector"} 0.0' not in metrics
            delete(kubeconfig, namespace, "acme")
        finally:
            operator.stop()
