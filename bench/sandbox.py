"""The benchmarks' own sandbox (``bench-sandbox`` beside the tests' cache), up for one run and down after it.

Operators a benchmark starts keep their state under the sandbox's (``operator_state``), so the sandbox's teardown
stops them too, even when the benchmark fails half-way: an operator left running against a vanished API server
retries for ever and skews every later measure on this machine.
"""

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from tests.support.clouds import reset_clouds

from defender_operator import sandbox as sandbox_module
from defender_operator.sandbox import Sandbox, binaries, processes

OPERATORS = "bench-operators"


def operator_state(box: Sandbox, prefix: str) -> Path:
    """A state directory for an operator the benchmark starts, stopped with the sandbox."""
    root = box.state / OPERATORS
    root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=prefix, dir=root))


def _stop_operators(state: Path) -> None:
    for directory in sorted((state / OPERATORS).glob("*")):
        processes.stop_recorded(directory)


@contextlib.contextmanager
def bench_sandbox(name: str = "bench-sandbox") -> Iterator[Sandbox]:
    """The sandbox under ``name`` in the cache: one per benchmark process running at once (a campaign's lanes)."""
    state = binaries.cache_dir() / name
    _stop_operators(state)  # left by a run that was killed before its teardown
    box = sandbox_module.up(state)
    try:
        reset_clouds(box)  # emulators left running by an interrupted run keep their state
        yield box
    finally:
        _stop_operators(state)
        sandbox_module.down(state)
