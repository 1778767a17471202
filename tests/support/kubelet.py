"""The kubelet's part for pods whose process runs outside the sandbox: kwok runs no container, so for a pod annotated
``sandbox.defender-operator.io/readiness: probed`` (kwok keeps it running and unready: sandbox/kwok/stages.yaml),
this starts the process the pod would run once the pod runs, reports the pod Ready or not from the process's own
readiness endpoint as its readinessProbe would, and sends the process SIGTERM when the pod is deleted (a rolling
update, a drain's eviction), as a kubelet stops a container. So a Deployment rolls, ``helm --wait`` returns and a
PodDisruptionBudget counts on what the operator itself says, not on kwok's word.
"""

import os
import signal
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client

from defender_operator.sandbox import processes
from tests.support.kube import api_client

PROBED = {"sandbox.defender-operator.io/readiness": "probed"}
PERIOD_SECONDS = 0.5


@dataclass
class Container:
    """The process a pod runs, and what the kubelet last reported of it."""

    record: processes.Recorded
    probe_port: int
    ready: bool | None = None
    stopped: bool = False


class Kubelet:
    """Runs, probes and stops the processes of the probed pods of ``namespace`` until closed."""

    def __init__(
        self, kubeconfig: Path, namespace: str, start: Callable[[str], tuple[processes.Recorded, int]]
    ) -> None:
        self._core = client.CoreV1Api(api_client(kubeconfig))
        self._namespace = namespace
        self._start = start  # a pod's name -> its process and the port of its /readyz
        self.containers: dict[str, Container] = {}
        self.errors: list[str] = []  # calls that failed (a pass of the loop is tried again)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kubelet", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed.wait(PERIOD_SECONDS):
            try:
                self._sync()
            except Exception as error:  # an API server that did not answer: the next period tries again
                self.errors.append(repr(error))

    def _sync(self) -> None:
        pods = {p.metadata.name: p for p in self._core.list_namespaced_pod(self._namespace).items}
        for name, pod in pods.items():
            if not PROBED.items() <= (pod.metadata.annotations or {}).items():
                continue
            if pod.metadata.deletion_timestamp is not None:
                self._stop(name)
            elif pod.status.phase == "Running" and pod.spec.node_name:
                container = self.containers.get(name)
                if container is None:
                    record, port = self._start(name)
                    container = self.containers[name] = Container(record, port)
                if not container.stopped:
                    self._report(name, container, _ready(container.probe_port))
        for name in set(self.containers) - set(pods):
            self._stop(name)

    def _report(self, name: str, container: Container, ready: bool) -> None:
        if ready == container.ready:
            return
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        status = "True" if ready else "False"
        conditions = [
            {"type": kind, "status": status, "lastTransitionTime": now}
            for kind in ("ContainersReady", "Ready")
        ]
        pod = self._core.read_namespaced_pod(name, self._namespace)
        # the list has no merge key (a patch replaces it whole): kwok's entries, with only `ready` changed
        statuses = [
            {**self._core.api_client.sanitize_for_serialization(c), "ready": ready}
            for c in pod.status.container_statuses or []
        ]
        body = {"status": {"conditions": conditions, "containerStatuses": statuses}}
        self._core.patch_namespaced_pod_status(name, self._namespace, body)
        container.ready = ready

    def _stop(self, name: str) -> None:
        container = self.containers.get(name)
        if container is not None and not container.stopped:
            container.stopped = True
            if container.record.alive():
                os.killpg(container.record.pid, signal.SIGTERM)

    def close(self) -> None:
        """Stop probing, and kill every process still running (the test is over)."""
        self._closed.set()
        self._thread.join()
        for container in self.containers.values():
            if container.record.alive():
                os.killpg(container.record.pid, signal.SIGKILL)


def _ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False
