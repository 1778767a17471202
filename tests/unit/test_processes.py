"""Process records: parallel starts are all recorded, only the recorded processes are stopped, and a background
start that dies says why."""

import subprocess
import sys
import time
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


def test_etcd_is_stopped_after_the_processes_that_use_it(tmp_path: Path) -> None:
    """kube-apiserver, asked to stop, still writes to etcd (its endpoint lease): with etcd gone first it waited out
    the whole timeout, 10 s of every sandbox's shutdown. Each process notes when it is asked to stop."""
    said = tmp_path / "stopped"

    def noting(name: str) -> list[str]:
        code = (
            "import signal, sys, time\n"
            f"def stop(*_):\n    open({str(said)!r}, 'a').write({name!r} + '\\n'); time.sleep(0.3); sys.exit(0)\n"
            "signal.signal(signal.SIGTERM, stop)\n"
            f"open({str(tmp_path / name)!r}, 'w').close()\n"
            "time.sleep(60)\n"
        )
        return [sys.executable, "-c", code]

    processes.start(tmp_path, "etcd", noting("etcd"))
    processes.start(tmp_path, "kube-apiserver", noting("kube-apiserver"))
    deadline = time.monotonic() + 30
    while not (
        (tmp_path / "etcd").exists() and (tmp_path / "kube-apiserver").exists()
    ):  # both listen for SIGTERM
        assert time.monotonic() < deadline, "the processes did not start"
        time.sleep(0.05)
    assert sorted(processes.stop_recorded(tmp_path)) == ["etcd", "kube-apiserver"]
    assert said.read_text().split() == ["kube-apiserver", "etcd"]


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
