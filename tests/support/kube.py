"""Talking to the sandbox's API server as a user would: kubectl, and the Kubernetes Python client."""

import functools
import json
import os
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from defender_operator.sandbox import binaries, processes
from defender_operator.sandbox.controlplane import ControlPlane
from defender_operator.sandbox.readiness import wait_ready
from tests.support.manifests import base_manifest

T = TypeVar("T")


def kubectl(
    kubeconfig: Path, *args: str, stdin: str | None = None, check: bool = False, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Runs kubectl; ``timeout`` bounds the process, so a command with its own ``--timeout`` needs a larger one."""
    result = subprocess.run(
        [str(binaries.kubectl()), "--kubeconfig", str(kubeconfig), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "KUBECTL_EXTERNAL_DIFF": ""},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def apply(
    kubeconfig: Path, manifest: dict[str, Any] | list[dict[str, Any]], *extra: str
) -> subprocess.CompletedProcess[str]:
    # JSON, not YAML: PyYAML writes a string like "011358009651" unquoted, which kubectl's YAML 1.2 reads as a number.
    body = {"apiVersion": "v1", "kind": "List", "items": manifest} if isinstance(manifest, list) else manifest
    return kubectl(kubeconfig, "apply", "-f", "-", *extra, stdin=json.dumps(body))


def api_client(kubeconfig: Path) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(kubeconfig))


@functools.cache
def _custom_objects(kubeconfig: str, modified: int) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client(Path(kubeconfig)))


def list_objects(kubeconfig: Path, namespace: str) -> list[dict[str, Any]] | None:
    """The namespace's AWSConnectors, or None (forbidden, API server away); through the Python client, as
    :func:`get_object`, for loops that poll."""
    api = _custom_objects(str(kubeconfig), kubeconfig.stat().st_mtime_ns)
    try:
        found = api.list_namespaced_custom_object(
            "defender-operator.io", "v1alpha1", namespace, "awsconnectors"
        )
    except (ApiException, urllib3.exceptions.HTTPError):
        return None
    return cast(list[dict[str, Any]], found["items"])


def get_object(kubeconfig: Path, namespace: str, name: str) -> dict[str, Any] | None:
    """The AWSConnector as ``kubeconfig``'s user reads it, or None (gone, forbidden, API server away). Through the
    Python client, not kubectl: waits poll this five times a second, and a kubectl process costs 70 ms of CPU, a
    quarter of a core taken from the operator under test on a 2-core machine."""
    # keyed by the file's modification time too: a rewritten kubeconfig gets a new client
    api = _custom_objects(str(kubeconfig), kubeconfig.stat().st_mtime_ns)
    try:
        found = api.get_namespaced_custom_object(
            "defender-operator.io", "v1alpha1", namespace, "awsconnectors", name
        )
    except (ApiException, urllib3.exceptions.HTTPError):
        return None
    return cast(dict[str, Any], found)


def list_version(kubeconfig: Path, namespace: str) -> str:
    """The resourceVersion of the namespace's AWSConnectors now: where :func:`changes_between` starts."""
    api = _custom_objects(str(kubeconfig), kubeconfig.stat().st_mtime_ns)
    found = api.list_namespaced_custom_object("defender-operator.io", "v1alpha1", namespace, "awsconnectors")
    return str(found["metadata"]["resourceVersion"])


def changes_between(
    kubeconfig: Path, namespace: str, name: str, since: str, until: str
) -> list[tuple[str, dict[str, Any]]]:
    """Every write to the AWSConnector ``name`` after resourceVersion ``since`` up to the one that made ``until``,
    as the API server replays them to a watch started at ``since``: each write is one event, none coalesced."""
    api = client.CustomObjectsApi(api_client(kubeconfig))
    found: list[tuple[str, dict[str, Any]]] = []
    stream = watch.Watch()
    for event in stream.stream(
        api.list_namespaced_custom_object,
        "defender-operator.io",
        "v1alpha1",
        namespace,
        "awsconnectors",
        resource_version=since,
        field_selector=f"metadata.name={name}",
        timeout_seconds=30,
    ):
        found.append((str(event["type"]), event["object"]))
        if event["object"]["metadata"]["resourceVersion"] == until:
            stream.stop()
    assert found and found[-1][1]["metadata"]["resourceVersion"] == until, found
    return found


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def condition(obj: dict[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for cond in ((obj or {}).get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return dict(cond)
    return None


def restart_apiserver(plane: ControlPlane, while_down: Callable[[], None] = lambda: None) -> None:
    """Stop the sandbox's kube-apiserver, run ``while_down``, then start it again with the same arguments (same
    port, same etcd: the cluster's state survives, as in a control-plane upgrade or a crash of the API server)."""
    (record,) = [r for r in processes.recorded(plane.state) if r.name == "kube-apiserver" and r.alive()]
    argv = Path(f"/proc/{record.pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    # Asked to stop, it drains its requests within a second or two, then at times lingers in its storage layer until
    # the default 10 s pass and it is killed: 4 s, then a kill (a crash, for the cluster: its state is in etcd).
    processes.stop_recorded_named(plane.state, "kube-apiserver", timeout=4)
    while_down()
    restarted = processes.start(plane.state, "kube-apiserver", argv)
    context = ssl.create_default_context(cafile=str(plane.ca_file))
    pki = plane.state / "pki"
    context.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    wait_ready(restarted, f"{plane.server}/readyz", "kube-apiserver", context, expect=b"ok")
    ADMISSION_MAY_BE_OPEN.add(plane.kubeconfig)


# API servers restarted since the last test began: their admission policy may still fail open (see below). What runs
# right after a restart needs no admission (a control-plane upgrade does not wait for it either); the next test, which
# may, waits first (tests/conftest.py), and the time the restarting test went on counts towards it.
ADMISSION_MAY_BE_OPEN: set[Path] = set()


def settle_admission() -> None:
    while ADMISSION_MAY_BE_OPEN:
        wait_admission_enforced(ADMISSION_MAY_BE_OPEN.pop())


PROBE_NAMESPACE = "admission-probe"


def wait_admission_enforced(kubeconfig: Path, timeout: float = 120) -> None:
    """After the API server (re)starts, the operator's admission policy fails open until the API server has resolved
    its parameter (``failurePolicy: Ignore``, api/admission.py), and what it would refuse is admitted (the operator's
    own check then refuses it). The parameter is a custom resource (EffectiveOnboardingPolicy), which kube-apiserver's
    REST mapper for admission learns only when it is reset, on a fixed 30 s timer: up to 30 s after a restart. Wait
    until it refuses again what no policy allows (a server-side dry run in a namespace no policy selects), so
    whatever runs next meets a cluster that enforces."""
    labels = {"defender-operator.io/tests-without-policy": "true"}
    namespace = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": PROBE_NAMESPACE, "labels": labels},
    }
    wait_for(lambda: apply(kubeconfig, namespace).returncode == 0, timeout, "the probe namespace")
    probe = base_manifest("admission-probe", PROBE_NAMESPACE)
    probe["spec"]["aws"]["credentials"] = {"roleArn": "arn:aws:iam::111122223333:role/defender-onboarding"}
    wait_for(
        lambda: "is not allowed" in apply(kubeconfig, probe, "--dry-run=server").stderr,
        timeout,
        "the admission policy to refuse again what no policy allows",
        interval=1,
    )
