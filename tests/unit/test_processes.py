"""Process records: parallel starts are all recorded, only the recorded processes are stopped, and a background
start that dies says why."""

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from defender_operator.sandbox import background, processes

SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_parallel_starts_are_all_recorded_and_all_stopped(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        records = list(pool.map(lambda i: processes.start(tmp_path, f"p{i}", SLEEP), range(8)))
    assert sorted(r.name for r in processes.recorded(tmp_path)) == sorted(f"p{i}" for i in range(8))
    assert all(r.alive() for r in records)
    stopped = processes.stop_recorded(tmp_path)
    assert sorted(stopped) == sorted(f"p{i}" for i in range(8))
    assert not any(r.alive() for r in records)
    assert processes.recorded(tmp_path) == []


def test_a_reused_pid_is_not_killed(tmp_path: Path) -> None:
    record = processes.start(tmp_path, "sleeper", SLEEP)
    unrelated = subprocess.Popen(SLEEP)
    try:
        forged = processes.Recorded(name="sleeper", pid=unrelated.pid, start_time="1", log=record.log)
        assert not forged.alive()  # same pid, different start time: not ours
    finally:
        unrelated.kill()
        unrelated.wait()
        processes.stop_recorded(tmp_path)


def test_stop_one_by_name(tmp_path: Path) -> None:
    a = processes.start(tmp_path, "a", SLEEP)
    b = processes.start(tmp_path, "b", SLEEP)
    assert processes.stop_recorded_named(tmp_path, "a") == ["a"]
    assert not a.alive() and b.alive()
    assert [r.name for r in processes.recorded(tmp_path)] == ["b"]
    processes.stop_recorded(tmp_path)


def test_background_start_that_dies_fails_with_the_end_of_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = "import sys; print('OSError: [Errno 98] Address already in use', flush=True); sys.exit(1)"
    argv = [
        "operator",
        str(tmp_path),
        "--ready-url",
        "http://127.0.0.1:9/readyz",
        "--",
        sys.executable,
        "-c",
        code,
    ]
    assert background.main(argv) == 1
    err = capsys.readouterr().err
    assert "operator exited" in err and "Address already in use" in err
