"""Benchmark: how fast objects converge, what an idle object costs, and how memory grows with objects.

Runs the operator as a real process against a fresh sandbox (real kube-apiserver, moto, ARM emulator), like the
integration tests. Baselines are measured in the same run and printed beside the operator's figures, with ratios:
the direct client (bench/direct_client.py: the ideal client, no operator, at the operator's 8 workers) onboarding one
and ``--objects`` other accounts, and the same client making every cloud call of the operator's first pass; and for
memory, the operator with no object and a no-op Kopf operator (bench/noop_kopf.py: one idle daemon per object) over
the same objects. ``--rounds`` rounds of ``--objects`` new objects each, every round between two measures of the
direct clients; the figure is the median of the rounds' ratios, and every round is printed.

``--scenario backlog`` measures the other common start instead, objects that exist before the operator runs
(bench/backlog.py, beside the same ideal client), and ``--scenario both`` one after the other, each on a sandbox of
its own, each printed with its baselines.

    .venv/bin/python -m bench.converge [--objects 20] [--rounds 3] [--idle-seconds 60] [--scenario running]

Results go into docs/performance.md.
"""

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.clouds import arm_control, arm_requests
from tests.support.kube import wait_for
from tests.support.operator import start_operator

from bench.backlog import backlog_figures, backlog_goals
from bench.direct_client import onboard_all
from bench.fleet import (
    bench_namespace,
    converge,
    manifest,
    noop_kopf_rss,
    operator_with_defaults,
    status_mib,
    warm_emulators,
)
from bench.sandbox import bench_sandbox, operator_state

SCENARIOS = ("running", "backlog", "both")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument(
        "--scenario",
        choices=SCENARIOS,
        default="running",
        help="objects created while the operator runs, objects that exist before it starts, or one after the other",
    )
    args = parser.parse_args()
    if args.scenario != "backlog":
        print(json.dumps(running_figures(args.objects, args.rounds, args.idle_seconds), indent=2), flush=True)
    if args.scenario != "running":
        figures = backlog_figures(args.objects)
        print(json.dumps({**figures, "goals": backlog_goals(figures)}, indent=2))


def running_figures(objects_per_round: int, round_count: int, idle_seconds: float) -> dict[str, Any]:
    """The objects created while the operator runs: ``round_count`` rounds of ``objects_per_round`` new objects
    beside the direct clients, then what idle objects cost, then memory beside the no-op Kopf operator."""
    with bench_sandbox() as box:
        kubeconfig = box.control_plane.kubeconfig
        operator = operator_with_defaults(box, "bench-operator-")
        assert operator.record is not None
        time.sleep(2)
        memory_empty = status_mib(operator.record.pid)
        bench_namespace(kubeconfig)

        # Rounds of ``--objects`` new objects, each between two measures of both direct clients on accounts of their
        # own: D S, round 1, S D, round 2, D S, ... Each round's baseline is the mean of the measures on either side
        # of it, because this machine's speed drifts by a fifth within minutes (in one run of the single-round
        # version the ideal client took 38.6 s before the operator and 28.8 s four minutes after it), and each round
        # is a "--objects at once" measure of its own; the figure is the median of the rounds' ratios, with every
        # round printed. Later rounds run beside the earlier rounds' objects, in sync and idle, as in a cluster.
        def onboard(first: int, same_calls: bool = False) -> float:
            account, prefix = (600000000000, "same") if same_calls else (500000000000, "direct")
            manifests = [
                manifest("direct", i, account, prefix) for i in range(first, first + objects_per_round)
            ]
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
        for r in range(round_count):
            first = 1 + r * objects_per_round
            many = converge(kubeconfig, "bench", range(first, first + objects_per_round))
            if r == 0:
                memory_first_round = status_mib(operator.record.pid)
            measures.append(baselines(1 + (r + 1) * objects_per_round, direct_first=r % 2 == 1))
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
        objects = objects_per_round * round_count + 1
        memory_full = status_mib(operator.record.pid)

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
        time.sleep(idle_seconds)
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

        results: dict[str, Any] = {
            "objects": objects,
            "converge_one_s": round(baseline, 2),
            "direct_client_one_s": round(direct_one, 2),
            "converge_one_minus_direct_s": round(baseline - direct_one, 2),
            "rounds": rounds,
            f"converge_{objects_per_round}_s_median": statistics.median(r["operator_s"] for r in rounds),
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
        return results


if __name__ == "__main__":
    main()
