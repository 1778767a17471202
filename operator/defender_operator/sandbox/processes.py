"""Background processes of the sandbox, recorded on disk so that nothing outlives its owner unnoticed.

Every process is started in its own session (process group) and written to ``<state>/processes.json`` with its
start time as the kernel reports it. ``stop_recorded`` kills exactly those process groups, also after the owner
crashed: a pid that was reused by an unrelated process has another start time and is left alone.
"""

import fcntl
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, closing, contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

RECORD = "processes.json"


def free_port() -> int:
    """A loopback port nobody listens on right now (bind to port 0 and release it, as envtest does)."""
    return free_ports(1)[0]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (all bound at once, so no two are the same)."""
    with ExitStack() as stack:
        sockets = [
            stack.enter_context(closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)))
            for _ in range(count)
        ]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/<pid>/stat: start time in clock ticks since boot; identifies a process beyond its pid.

    None when the process is gone or a zombie (exited, not yet reaped).
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


@dataclass(frozen=True)
class Recorded:
    name: str
    pid: int
    start_time: str
    log: str

    def alive(self) -> bool:
        return _start_time(self.pid) == self.start_time


def _read(state: Path) -> list[Recorded]:
    try:
        return [Recorded(**r) for r in json.loads((state / RECORD).read_text())]
    except (OSError, ValueError):
        return []


def _write(state: Path, records: list[Recorded]) -> None:
    tmp = state / f"{RECORD}.{os.getpid()}.{threading.get_ident()}.tmp"
    tmp.write_text(json.dumps([asdict(r) for r in records], indent=1))
    tmp.replace(state / RECORD)


@contextmanager
def _locked(state: Path) -> Iterator[None]:
    """Read-modify-write of the record by one thread or process at a time (services start in parallel)."""
    with _THREAD_LOCK, (state / f"{RECORD}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


_THREAD_LOCK = threading.Lock()


def start(
    state: Path, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Recorded:
    """Start a process in the background, logging to ``<state>/<name>.log``, and record it."""
    log_path = state / f"{name}.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    started = _start_time(proc.pid)
    record = Recorded(name=name, pid=proc.pid, start_time=started or "", log=str(log_path))
    with _locked(state):
        _write(state, [*[r for r in _read(state) if r.name != name], record])
    return record


def recorded(state: Path) -> list[Recorded]:
    return _read(state)


def stop_recorded_named(state: Path, name: str, timeout: float = 10.0) -> list[str]:
    """Stop the recorded process called ``name`` (e.g. to restart it)."""
    return _stop(state, [r for r in _read(state) if r.name == name and r.alive()], timeout)


# Stopped after every other process: kube-apiserver, asked to stop, removes its own endpoint lease from etcd, and with
# etcd gone it waits out the whole timeout (10 s of every sandbox's shutdown) before it is killed.
STOPPED_LAST = ("etcd",)


def stop_recorded(state: Path, timeout: float = 10.0) -> list[str]:
    """Stop every recorded process group that is still the one we started, the stores last; returns the names
    stopped."""
    alive = [r for r in _read(state) if r.alive()]
    first = _stop(state, [r for r in alive if r.name not in STOPPED_LAST], timeout)
    return first + _stop(state, [r for r in alive if r.name in STOPPED_LAST], timeout)


def _stop(state: Path, records: list[Recorded], timeout: float) -> list[str]:
    for record in records:
        _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(r.alive() for r in records):
        time.sleep(0.05)
    killed = [r for r in records if r.alive()]
    for record in killed:
        _signal_group(record.pid, signal.SIGKILL)
    # gone before this returns: a process started next in its place (a restart) needs its port
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and any(r.alive() for r in killed):  # (a zombie counts as gone)
        time.sleep(0.05)
    for record in records:
        _reap(record.pid)
    stopped = {r.name for r in records}
    if (state / RECORD).exists():
        with _locked(state):
            _write(state, [r for r in _read(state) if r.name not in stopped and r.alive()])
    return [r.name for r in records]


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _reap(pid: int) -> None:
    with suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
