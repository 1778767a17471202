"""Benchmark: how fast objects converge, what an idle object costs, and how memory grows with objects.

Runs the operator as a real process against a fresh sandbox (real kube-apiserver, moto, ARM emulator), like the
integration tests. Baselines are measured in the same run and printed beside the operator's figures, with ratios:
the direct client (bench/direct_client.py: the ideal client, no operator, at the operator's 8 workers) onboarding one
and ``--objects`` other accounts, and the same client making every cloud call of the operator's first pass; and for
memory, the operator with no object and a no-op Kopf operator (bench/noop_kopf.py: one idle daemon per object) over
the same objects. ``--rounds`` rounds of ``--objects`` new objects each, every round between two measures of the
direct clients; the figure is the median of the rounds' ratios, and every round is printed.

    .venv/bin/python -m bench.converge [--objects 20] [--rounds 3] [--idle-seconds 60]

Results go into docs/performance.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException
from tests.conftest import TEST_POLICY
from tests.support.clouds import arm_control, arm_requests, aws_client
from tests.support.kube import api_client, apply, kubectl, wait_for
from tests.support.manifests import base_manifest
from tests.support.operator import OperatorProcess, start_operator

from bench.direct_client import onboard_all
from bench.sandbox import bench_sandbox, operator_state


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
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
        return rss_mib(process.pid)
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    args = parser.parse_args()
    with bench_sandbox() as box:
        kubeconfig = box.control_plane.kubeconfig
        operator = operator_with_defaults(box, "bench-operator-")
        assert operator.record is not None
        time.sleep(2)
        memory_empty = rss_mib(operator.record.pid)
        bench_namespace(kubeconfig)

        # Rounds of ``--objects`` new objects, each between two measures of both direct clients on accounts of their
        # own: D S, round 1, S D, round 2, D S, ... Each round's baseline is the mean of the measures on either side
        # of it, because this machine's speed drifts by a fifth within minutes (in one run of the single-round
        # version the ideal client took 38.6 s before the operator and 28.8 s four minutes after it), and each round
        # is a "--objects at once" measure of its own; the figure is the median of the rounds' ratios, with every
        # round printed. Later rounds run beside the earlier rounds' objects, in sync and idle, as in a cluster.
        def onboard(first: int, same_calls: bool = False) -> float:
            account, prefix = (600000000000, "same") if same_calls else (500000000000, "direct")
            manifests = [manifest("direct", i, account, prefix) for i in range(first, first + args.objects)]
            return onboard_all(box, manifests, operator.aws_proxy, same_calls=same_calls)

        def baselines(first: int, direct_first: bool) -> tuple[float, float]:
            """(ideal client, client making the same calls), each onboarding ``--objects`` new accounts."""
            if direct_first:
                direct = onboard(first)
                return direct, onboard(first, same_calls=True)
            same = onboard(first, same_calls=True)
            return onboard(first), same

        warm_emulators(box, operator.aws_proxy)
        direct_one = onboard_all(box, [manifest("direct", 0, 500000000000, "direct")], operator.aws_proxy)
        measures = [baselines(1, direct_first=True)]
        baseline = converge(kubeconfig, "bench", range(0, 1))
        rounds: list[dict[str, Any]] = []
        memory_first_round = 0.0
        for r in range(args.rounds):
            first = 1 + r * args.objects
            many = converge(kubeconfig, "bench", range(first, first + args.objects))
            if r == 0:
                memory_first_round = rss_mib(operator.record.pid)
            measures.append(baselines(1 + (r + 1) * args.objects, direct_first=r % 2 == 1))
            (direct_before, same_before), (direct_after, same_after) = measures[r], measures[r + 1]
            direct_many, same_many = (direct_before + direct_after) / 2, (same_before + same_after) / 2
            rounds.append(
                {
                    "operator_s": round(many, 2),
                    "direct_client_s": round(direct_many, 2),
                    "direct_client_before_and_after_s": [round(direct_before, 2), round(direct_after, 2)],
                    "ratio_to_direct_client": round(many / direct_many, 3),
                    "direct_client_same_calls_s": round(same_many, 2),
                    "direct_client_same_calls_before_and_after_s": [
                        round(same_before, 2),
                        round(same_after, 2),
                    ],
                    "ratio_to_direct_client_same_calls": round(many / same_many, 3),
                }
            )
            print(json.dumps({"round": r + 1, **rounds[-1]}), flush=True)
        objects = args.objects * args.rounds + 1
        memory_full = rss_mib(operator.record.pid)

        # Idle cost: every object is Ready; count the calls and the passes of an operator that resyncs often (8 s,
        # the tests' interval, or slower for many objects: at most 25 passes a second, which 8 workers keep up with),
        # once it has made its first pass over every object (a new process checks everything once).
        operator.stop()
        resync = max(8, objects // 25)
        operator = start_operator(
            box,
            operator_state(box, "bench-operator-idle-"),
            extra_env={"DEFENDER_OPERATOR_RESYNC_SECONDS": str(resync)},
        )
        wait_for(
            lambda: operator.log().count('"reconciled"') >= objects, 600, "a first pass over every object"
        )
        operator.reset_aws_operations()
        arm_control(box, "/_sandbox/requests", method="DELETE")
        passes_before = operator.log().count('"reconciled"')
        time.sleep(args.idle_seconds)
        aws_ops = operator.aws_operations()
        arm = arm_requests(box)
        passes = operator.log().count('"reconciled"') - passes_before
        # AssumeRole changes nothing in the account; REST-JSON services (EKS) are counted by method and path.
        reads = ("Describe", "Get", "List", "AssumeRole", "GET ")
        aws_writes = sum(n for op, n in aws_ops.items() if not op.startswith(reads))
        arm_writes = sum(1 for r in arm if r["method"] != "GET")
        arm_durations = [r["seconds"] for r in arm]

        operator.stop()
        kopf_memory = noop_kopf_rss(box, objects, Path(tempfile.mkdtemp(prefix="bench-kopf-")) / "kopf.log")
        ratios = [r["ratio_to_direct_client"] for r in rounds]

        def per_pass(calls: float) -> float | None:
            return round(calls / passes, 2) if passes else None  # None: --idle-seconds too short for a pass

        results = {
            "objects": objects,
            "converge_one_s": round(baseline, 2),
            "direct_client_one_s": round(direct_one, 2),
            "converge_one_minus_direct_s": round(baseline - direct_one, 2),
            "rounds": rounds,
            f"converge_{args.objects}_s_median": statistics.median(r["operator_s"] for r in rounds),
            "converge_ratio_to_direct_client_median": statistics.median(ratios),
            "converge_ratio_to_direct_client_range": [min(ratios), max(ratios)],
            "converge_ratio_to_direct_client_same_calls_median": statistics.median(
                r["ratio_to_direct_client_same_calls"] for r in rounds
            ),
            "idle_resync_s": resync,
            "idle_passes": passes,
            "aws_calls_per_pass": per_pass(sum(aws_ops.values())),
            "arm_calls_per_pass": per_pass(len(arm)),
            "aws_writes_idle": aws_writes,
            "arm_writes_idle": arm_writes,
            "aws_calls_per_object_hour_at_300s_resync": per_pass(sum(aws_ops.values()) * 3600 / 300),
            "arm_calls_per_object_hour_at_300s_resync": per_pass(len(arm) * 3600 / 300),
            "arm_median_request_ms": round(statistics.median(arm_durations) * 1000, 1)
            if arm_durations
            else None,
            "rss_empty_mib": round(memory_empty, 1),
            "rss_after_round_1_mib": round(memory_first_round, 1),
            f"rss_{objects}_objects_mib": round(memory_full, 1),
            "rss_per_object_mib": round((memory_full - memory_empty) / objects, 2),
            f"noop_kopf_rss_{objects}_objects_mib": round(kopf_memory, 1),
            "rss_ratio_to_noop_kopf": round(memory_full / kopf_memory, 2),
            "aws_operations_idle": aws_ops,
        }
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
