"""Benchmark: where the CPU goes while many objects converge, beside the direct client doing the same onboardings.

For each side it prints the wall time, the CPU time of every process of the sandbox (from /proc: the operator, the
kube-apiserver, etcd, the AWS emulator, the ARM emulator, the fault proxies, this benchmark itself, which is the
direct client in the first measure and the watch in the second), the cloud calls made, and for the operator the API
server's requests by verb and resource (its own /metrics, apiserver_request_total), per object. The operator runs
with its default resync (300 s), as in bench.converge.

    .venv/bin/python -m bench.cpu [--objects 300]

Results go into docs/performance.md ("Where the CPU goes").
"""

import argparse
import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.clouds import arm_control, arm_requests
from tests.support.kube import kubectl
from tests.support.operator import OperatorProcess

from bench.direct_client import onboard_all
from bench.fleet import bench_namespace, converge, manifest, operator_with_defaults, warm_emulators
from bench.sandbox import bench_sandbox

TICK = os.sysconf("SC_CLK_TCK")
ROLES = (  # a piece of the command line -> what the process is
    ("defender_operator.cli run", "operator"),
    ("kube-apiserver", "kube-apiserver"),
    ("etcd", "etcd"),
    ("sandbox.aws.server", "AWS emulator (moto)"),
    ("sandbox.arm.server", "ARM emulator"),
    ("sandbox.proxy", "fault proxies"),
)


def cpu_by_role() -> Counter[str]:
    """Seconds of CPU (user + system) each kind of process has used so far."""
    seconds: Counter[str] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        used = (int(fields[11]) + int(fields[12])) / TICK
        if int(entry.name) == os.getpid():
            seconds["this benchmark"] += used
            continue
        for piece, role in ROLES:
            if piece in command:
                seconds[role] += used
                break
    return seconds


def api_requests(kubeconfig: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in kubectl(kubeconfig, "get", "--raw", "/metrics", check=True).stdout.splitlines():
        if line.startswith("apiserver_request_total{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            key = " ".join(
                filter(None, (labels.get("verb"), labels.get("resource"), labels.get("subresource")))
            )
            counts[key] += int(float(line.rsplit(" ", 1)[1]))
    return counts


def arm_calls(box: Any) -> Counter[str]:
    """ARM requests by method and the last resource type in the path."""
    return Counter(
        f"{r['method']} {r['path'].split('?')[0].rstrip('/').split('/')[-2]}" for r in arm_requests(box)
    )


def measure(box: Any, operator: OperatorProcess, objects: int, run: Callable[[], float]) -> dict[str, Any]:
    operator.reset_aws_operations()
    arm_control(box, "/_sandbox/requests", method="DELETE")
    kubeconfig = box.control_plane.kubeconfig
    before_api, before_cpu = api_requests(kubeconfig), cpu_by_role()
    seconds = run()
    after_cpu, after_api = cpu_by_role(), api_requests(kubeconfig)
    used = {role: round(after_cpu[role] - before_cpu[role], 1) for role in after_cpu}
    api = {k: after_api[k] - before_api.get(k, 0) for k in after_api if after_api[k] != before_api.get(k, 0)}
    return {
        "seconds": round(seconds, 1),
        "cpu_seconds": {k: v for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v},
        "cpu_seconds_total": round(sum(used.values()), 1),
        "aws_calls_per_object": {k: round(v / objects, 2) for k, v in operator.aws_operations().items()},
        "arm_calls_per_object": {k: round(v / objects, 2) for k, v in arm_calls(box).items()},
        "api_requests_per_object": {k: round(v / objects, 2) for k, v in sorted(api.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=300)
    args = parser.parse_args()
    with bench_sandbox() as box:
        kubeconfig = box.control_plane.kubeconfig
        operator = operator_with_defaults(box, "bench-cpu-")
        bench_namespace(kubeconfig)
        warm_emulators(box, operator.aws_proxy)
        # One object each first, outside the measure, so both sides start warm.
        onboard_all(box, [manifest("direct", 0, 500000000000, "direct")], operator.aws_proxy)
        converge(kubeconfig, "bench", range(0, 1))
        many = range(1, 1 + args.objects)
        direct = measure(
            box,
            operator,
            args.objects,
            lambda: onboard_all(
                box, [manifest("direct", i, 500000000000, "direct") for i in many], operator.aws_proxy
            ),
        )
        direct.pop("api_requests_per_object")  # the direct client makes none
        time.sleep(1)
        through_operator = measure(box, operator, args.objects, lambda: converge(kubeconfig, "bench", many))
        operator.stop()
        print(
            json.dumps(
                {"objects": args.objects, "direct_client": direct, "operator": through_operator}, indent=2
            )
        )


if __name__ == "__main__":
    main()
