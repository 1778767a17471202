"""A memory limit for a process the tests start, as a container runtime sets one: a cgroup with a limit, whose
out-of-memory killer ends the process when it goes over.

The cgroup is a child of the test process's own (cgroup v1's memory hierarchy, or cgroup v2 where the memory
controller is delegated), so no privilege beyond writing there is needed. Where neither can be made, the limit is
checked instead of enforced: the process's peak resident memory (``VmHWM``) is compared with it once the test has its
result, and the reason is printed.
"""

import contextlib
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass
class MemoryLimit:
    limit_mib: int
    cgroup: Path | None  # None: not enforced, only checked

    def launcher(self) -> list[str]:
        """A prefix for the process's argv that puts it (its pid, kept by ``exec``) in the cgroup before it runs."""
        if self.cgroup is None:
            return []
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.cgroup / "cgroup.procs")]

    def killed(self) -> int:
        """How many times the cgroup's out-of-memory killer acted (0 without a cgroup)."""
        if self.cgroup is None:
            return 0
        for name, key in (("memory.oom_control", "oom_kill"), ("memory.events", "oom_kill")):
            path = self.cgroup / name
            if path.exists():
                for line in path.read_text().splitlines():
                    field, _, value = line.partition(" ")
                    if field == key:
                        return int(value)
        return 0


def peak_mib(pid: int) -> float:
    """The process's peak resident memory so far (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def _own_cgroups() -> dict[str, str]:
    """controller ("memory", or "" for cgroup v2) -> this process's cgroup path."""
    paths = {}
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            paths[controller] = path
    return paths


PREFIX = "defender-operator-test-"


def _make(parent: Path, limit_file: str, limit: int) -> Path | None:
    for stale in parent.glob(f"{PREFIX}*"):  # left by a run that was killed before its teardown
        with contextlib.suppress(OSError):
            stale.rmdir()
    child = parent / f"{PREFIX}{uuid.uuid4().hex[:8]}"
    try:
        child.mkdir()
    except OSError:
        return None
    try:
        (child / limit_file).write_text(str(limit))
        swappiness = child / "memory.swappiness"  # v1: never swap this cgroup's memory instead of killing
        if swappiness.exists():
            swappiness.write_text("0")
        swap = child / "memory.swap.max"  # v2
        if swap.exists():
            swap.write_text("0")
        return child
    except OSError:
        child.rmdir()
        return None


@contextlib.contextmanager
def memory_limit(limit_mib: int) -> Iterator[MemoryLimit]:
    """A cgroup limited to ``limit_mib``, removed afterwards (its processes must be gone by then)."""
    limit = limit_mib * 1024 * 1024
    own = _own_cgroups()
    cgroup = None
    if "memory" in own and (CGROUP_ROOT / "memory").is_dir():
        cgroup = _make(CGROUP_ROOT / "memory" / own["memory"].lstrip("/"), "memory.limit_in_bytes", limit)
    if cgroup is None and "" in own:
        for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
            if (root / "cgroup.controllers").exists() and cgroup is None:
                cgroup = _make(root / own[""].lstrip("/"), "memory.max", limit)
    if cgroup is None:
        warnings.warn(
            f"no cgroup with a memory controller can be made here; the {limit_mib} MiB limit is checked against "
            "the process's peak resident memory instead of enforced",
            stacklevel=3,
        )
    try:
        yield MemoryLimit(limit_mib, cgroup)
    finally:
        if cgroup is not None:
            _remove(cgroup)


def _remove(cgroup: Path) -> None:
    """Remove the cgroup once its processes are gone (a stopped process may take a moment to be reaped)."""
    deadline = time.monotonic() + 30
    while (cgroup / "cgroup.procs").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.2)
    try:
        cgroup.rmdir()
    except OSError as exc:
        warnings.warn(f"cgroup {cgroup} not removed: {exc}", stacklevel=2)
