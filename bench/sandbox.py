"""The benchmarks' own sandbox (``bench-sandbox`` beside the tests' cache), up for one run and down after it."""

import contextlib
from collections.abc import Iterator

from tests.support.clouds import reset_clouds

from defender_operator import sandbox as sandbox_module
from defender_operator.sandbox import Sandbox, binaries


@contextlib.contextmanager
def bench_sandbox() -> Iterator[Sandbox]:
    state = binaries.cache_dir() / "bench-sandbox"
    box = sandbox_module.up(state)
    try:
        reset_clouds(box)  # emulators left running by an interrupted run keep their state
        yield box
    finally:
        sandbox_module.down(state)
