"""A campaign in lanes (``--lanes L``): L processes of ``python -m bench.chaos`` at once, each with its own sandbox
and operators, lane i running seeds S+i, S+i+L, ... of the same campaign.

A schedule spends most of its time waiting (a Lease to lapse, a stack to settle, the operator's next pass), so one lane
keeps about a third of this machine's two cores busy; lanes multiply the schedules an hour covers without changing any
one of them: a seed's schedule and its judge are the same in any lane. Each lane's output reaches the campaign's
whole schedule by schedule (never two schedules' lines interleaved), and the summary adds the lanes' up; a lane whose
harness broke has no summary and is named, and the campaign then fails.
"""

import json
import signal
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

LANE_SANDBOX = "bench-sandbox-lane-{lane}"
TEARDOWN_SECONDS = 60.0


def run_lanes(argv: list[str], seed: int, lanes: int) -> dict[str, Any]:
    """Run the campaign ``argv`` describes in ``lanes`` processes (the seed fixed, so that every lane deals the
    same seeds), relaying their output, and return their summaries merged."""
    lock = threading.Lock()
    with tempfile.TemporaryDirectory(prefix="chaos-lanes-") as tmp:
        summaries = [Path(tmp) / f"lane-{lane}.json" for lane in range(lanes)]
        children: list[tuple[subprocess.Popen[str], threading.Thread]] = []
        try:
            for lane, summary in enumerate(summaries):
                command = [sys.executable, "-m", "bench.chaos", *argv, "--seed", str(seed)]
                command += ["--lane", str(lane), "--summary", str(summary)]
                child = subprocess.Popen(  # a session of its own: an interrupt reaches it once, from here
                    command,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                    errors="replace",
                    start_new_session=True,
                )
                assert child.stdout is not None
                relay = threading.Thread(target=relay_schedules, args=(child.stdout, sys.stdout, lock))
                relay.start()
                children.append((child, relay))
            for child, relay in children:
                child.wait()
                relay.join()
        finally:  # interrupted: every lane stops too, and tears its sandbox down (a minute at most, then it dies)
            for child, _ in children:
                if child.poll() is None:
                    child.send_signal(signal.SIGINT)
            for child, _ in children:
                try:
                    child.wait(timeout=TEARDOWN_SECONDS)
                except subprocess.TimeoutExpired:
                    child.kill()
                    child.wait()
        parts = {lane: json.loads(s.read_text()) for lane, s in enumerate(summaries) if s.exists()}
    return merge(parts, lanes)


def relay_schedules(lines: Iterable[str], out: IO[str], lock: threading.Lock) -> None:
    """Copy a lane's output to ``out`` a schedule at a time: a block starts at its ``--- seed`` line and takes every
    line up to the next one (the steps, violations, a shrunk case, a traceback)."""
    block: list[str] = []

    def flush() -> None:
        if block:
            with lock:
                out.write("".join(block))
                out.flush()
            block.clear()

    for line in lines:
        if line.startswith("--- seed"):
            flush()
        block.append(line)
    flush()


def merge(parts: dict[int, dict[str, Any]], lanes: int) -> dict[str, Any]:
    """The lanes' summaries as one campaign's; lanes without a summary (their harness broke) are listed."""
    operations: Counter[str] = Counter()
    seconds: Counter[str] = Counter()
    for part in parts.values():
        operations.update(part["operations"])
        seconds.update(part["seconds"])
    return {
        "lanes": lanes,
        "lanesFailed": [lane for lane in range(lanes) if lane not in parts],
        "schedules": sum(part["schedules"] for part in parts.values()),
        "steps": sum(part["steps"] for part in parts.values()),
        "operations": dict(sorted(operations.items())),
        "seconds": dict(seconds.most_common()),
        "violations": sum(part["violations"] for part in parts.values()),
        "failingSeeds": sorted(seed for part in parts.values() for seed in part["failingSeeds"]),
    }
