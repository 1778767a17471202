"""``python -m bench.chaos --seed S --schedules N [--steps K] [--hours H] [--replicas R] [--lanes L] [--shrink]
[--weight OP=W]``: a campaign on its own sandbox, the operator as R replicas in leader election (default 2, as the
chart runs it). ``--weight`` (repeatable) aims a campaign at some operations (e.g. ``create_organization=6``); a
seed's schedule depends on the weights, so a campaign is reproduced with the same ones.

Schedule i uses seed S+i. Every schedule is printed as a step list with its verdict; a failing one is shrunk (with
``--shrink``) and written out as a regression case under tests/integration/chaos_cases/, which the test suite
replays. The summary counts schedules, steps, operations by kind and violations. It stops by itself after N
schedules or H hours, whichever comes first.

``--lanes L`` runs the campaign as L processes at once, each with its own sandbox and operators, the seeds dealt
among them (:mod:`.lanes`): a schedule mostly waits on the operator and the clouds, so lanes multiply what an hour
covers on a machine with cores to spare; the summary is the lanes' together.
"""

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.kube import wait_for
from tests.support.operator import start_operator

from bench.sandbox import bench_sandbox, operator_state

from .lanes import LANE_SANDBOX, run_lanes
from .replicas import LEASE_ENV, PACE_ENV
from .runner import Runner
from .schedule import WEIGHTS, Step, describe, generate, to_json
from .shrink import shrink

CASES = Path(__file__).resolve().parents[2] / "tests" / "integration" / "chaos_cases"


@dataclass(frozen=True)
class Failure:
    """A schedule that broke an invariant, and where its (shrunk) regression case was written."""

    seed: int
    violations: list[str]
    case: Path


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos")
    parser.add_argument("--seed", type=int, default=random.randrange(1_000_000))
    parser.add_argument("--schedules", type=int, default=10)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--hours", type=float, default=12.0, help="stop after this long, whatever is left")
    parser.add_argument(
        "--shrink", action="store_true", help="shrink a failing schedule into a regression case"
    )
    parser.add_argument("--summary", help="also write the summary as JSON here")
    parser.add_argument(
        "--weight",
        action="append",
        default=[],
        metavar="OP=W",
        help="another weight for an operation (schedule.WEIGHTS), to aim the campaign at it",
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="operator processes; more than one: leader election on a Lease",
    )
    parser.add_argument(
        "--lanes", type=int, default=1, help="schedules run at once, each lane on its own sandbox"
    )
    parser.add_argument(
        "--lane", type=int, help=argparse.SUPPRESS
    )  # a lane's process: its seeds, its sandbox
    args = parser.parse_args()
    weights = {op: float(w) for op, _, w in (item.partition("=") for item in args.weight)}
    if unknown := set(weights) - set(WEIGHTS):
        parser.error(f"--weight: no such operation {sorted(unknown)}; they are {sorted(WEIGHTS)}")
    if args.lanes < 1:
        parser.error("--lanes: at least 1")
    seeds = [args.seed + i for i in range(args.schedules)]
    if args.lanes > 1 and args.lane is None:
        summary = {
            "firstSeed": args.seed,
            "weights": weights,
            **run_lanes(sys.argv[1:], args.seed, args.lanes),
        }
    else:
        lane = 0 if args.lane is None else args.lane
        mine = seeds[lane :: args.lanes]
        name = "bench-sandbox" if args.lane is None else LANE_SANDBOX.format(lane=args.lane)
        summary = campaign(mine, args.steps, args.hours, args.replicas, args.shrink, weights, name)
        summary = {"firstSeed": args.seed, "weights": weights, **summary}
    if args.lane is None:
        print(json.dumps(summary, indent=1))
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary, indent=1) + "\n")
    return 1 if summary["violations"] or summary.get("lanesFailed") else 0


def campaign(
    seeds: list[int],
    step_count: int,
    hours: float,
    replicas: int,
    shrinking: bool,
    weights: dict[str, float],
    sandbox: str,
) -> dict[str, Any]:
    """Run the schedules of ``seeds`` in turn on one sandbox, until done or ``hours`` have passed; their summary."""
    deadline = time.monotonic() + hours * 3600
    totals: dict[str, int] = {}
    seconds: dict[str, float] = {}
    failures: list[Failure] = []
    done = steps_run = 0
    with bench_sandbox(sandbox) as box:
        env = {
            "DEFENDER_OPERATOR_RESYNC_SECONDS": "8",
            "DEFENDER_OPERATOR_IN_PROGRESS_SECONDS": "1",
            **PACE_ENV,
        }
        if replicas > 1:
            lease = {"DEFENDER_OPERATOR_LEASE_NAME": f"chaos-{uuid.uuid4().hex[:6]}"}
            env |= {**LEASE_ENV, **lease, "DEFENDER_OPERATOR_LEASE_NAMESPACE": "default"}
        operators = [
            start_operator(
                box, operator_state(box, f"chaos-{i}-"), arm_proxy=True, wait_ready=False, extra_env=env
            )
            for i in range(replicas)
        ]
        for operator in operators:  # Ready whether or not it leads (readiness is not leadership)
            wait_for(operator.ready, 60, "an operator replica's /readyz")
        runner = Runner(box, box.control_plane.kubeconfig, *operators)
        for seed in seeds:
            if time.monotonic() > deadline:
                break
            steps = generate(seed, step_count, weights)
            try:
                outcome = runner.run(seed, steps)
            except (
                Exception
            ):  # the harness gave up waiting (or broke): keep what the operators said, then stop
                print(f"--- seed {seed}: the harness failed\n{describe(steps)}", flush=True)
                _keep_logs(seed, operators, box)
                raise
            done, steps_run = done + 1, steps_run + len(steps)
            for op, n in outcome.counts.items():
                totals[op] = totals.get(op, 0) + n
            for phase, spent in outcome.phases.items():
                seconds[phase] = seconds.get(phase, 0.0) + spent
            verdict = "ok" if not outcome.violations else f"{len(outcome.violations)} VIOLATIONS"
            spent = ", ".join(
                f"{k} {v:.0f}" for k, v in sorted(outcome.phases.items(), key=lambda kv: -kv[1])
            )
            print(
                f"--- seed {seed}: {verdict} ({outcome.seconds:.0f}s: {spent})\n{describe(steps)}", flush=True
            )
            for violation in outcome.violations:
                print(f"    ! {violation}", flush=True)
            if outcome.violations:
                _keep_logs(
                    seed, operators, box
                )  # the lane's sandbox, its logs with it, goes when the run ends
                kept = steps
                if shrinking:

                    def still_fails(candidate: list[Step], seed: int = seed) -> bool:
                        return bool(runner.run(seed, candidate).violations)

                    kept = shrink(steps, still_fails)
                    print(f"    shrunk to {len(kept)} steps:\n{describe(kept)}", flush=True)
                CASES.mkdir(parents=True, exist_ok=True)
                case = CASES / f"seed-{seed}.json"
                case.write_text(
                    json.dumps(
                        {"seed": seed, "violations": outcome.violations, "steps": to_json(kept)}, indent=1
                    )
                    + "\n"
                )
                failures.append(Failure(seed, list(outcome.violations), case))
    return {
        "schedules": done,
        "steps": steps_run,
        "operations": dict(sorted(totals.items())),
        "seconds": {phase: round(spent) for phase, spent in sorted(seconds.items(), key=lambda kv: -kv[1])},
        "violations": sum(len(f.violations) for f in failures),
        "failingSeeds": [f.seed for f in failures],
    }


def _keep_logs(seed: int, operators: list[Any], box: Any) -> None:
    """Copy what the replicas and the control plane said to the temporary directory, where it outlives the run."""
    kept = Path(tempfile.gettempdir()) / f"chaos-seed-{seed}"
    kept.mkdir(exist_ok=True)
    for n, process in enumerate(operators):
        (kept / f"replica-{n}.log").write_text(process.log())
    for log in Path(box.control_plane.state).glob("*.log"):
        shutil.copy(log, kept / log.name)
    print(f"    the replicas' and the control plane's logs: {kept}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
