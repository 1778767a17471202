"""Benchmark: sandbox and emulator start-up, against a baseline measured in the same run.

Baseline: starting a bare Python interpreter that imports boto3 (what any AWS tool pays). Measured: the AWS emulator
(moto plus fixes) until it answers and until it answers a first CloudFormation call, the ARM emulator, the control
plane alone, and the whole sandbox (cached binaries).

    .venv/bin/python -m bench.startup [--repeat 3]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3

from defender_operator import sandbox as sandbox_module
from defender_operator.sandbox import binaries, emulators, processes


def median(measure: Callable[[], float], repeat: int) -> float:
    return statistics.median(measure() for _ in range(repeat))


def since(started: float) -> float:
    return time.monotonic() - started


def baseline() -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import boto3"], check=True)
    return since(started)


def emulator(
    start: Callable[[Path], Any], first_call: Callable[[Any], object] | None = None
) -> Callable[[], float]:
    def run() -> float:
        state = Path(tempfile.mkdtemp(prefix="bench-emulator-"))
        try:
            started = time.monotonic()
            endpoint = start(state)
            if first_call is not None:
                first_call(endpoint)
            return since(started)
        finally:
            processes.stop_recorded(state)

    return run


def list_stacks(url: str) -> None:
    """The first CloudFormation call, which waits for the fixes still loading in the background (see server.py)."""
    client = boto3.client(
        "cloudformation",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="x",
    )
    client.list_stacks()


def sandbox(emulators_too: bool) -> Callable[[], float]:
    def run() -> float:
        state = binaries.cache_dir() / "bench-startup"
        try:
            started = time.monotonic()
            sandbox_module.up(state, emulators=emulators_too)
            return since(started)
        finally:
            sandbox_module.down(state)

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    binaries.kube_apiserver()  # build outside the measurement
    base = median(baseline, args.repeat)
    figures = {
        "aws_emulator_ready_s": median(emulator(emulators.start_aws), args.repeat),
        "aws_emulator_first_cloudformation_call_s": median(
            emulator(emulators.start_aws, list_stacks), args.repeat
        ),
        "arm_emulator_ready_s": median(emulator(emulators.start_arm), args.repeat),
        "control_plane_ready_s": median(sandbox(False), args.repeat),
        "sandbox_up_ready_s": median(sandbox(True), args.repeat),
    }
    out = {"baseline_python_import_boto3_s": round(base, 2)}
    for key, value in figures.items():
        out[key] = round(value, 2)
        out[key.removesuffix("_s") + "_x_baseline"] = round(value / base, 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
