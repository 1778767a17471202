"""The operator as a real, separate process (`defender-operator run`) against the sandbox, as users run it.

Its AWS traffic goes through the fault-injecting proxy, which also counts every AWS operation it forwards, so tests
can inject throttling and assert which calls a pass made.
"""

import contextlib
import json
import os
import shutil
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from defender_operator.sandbox import Sandbox, processes
from defender_operator.sandbox.emulators import control, start_proxy

from .clouds import arm_control, arm_requests
from .kube import apply, condition, get_object, kubectl, wait_for


@dataclass
class OperatorProcess:
    sandbox: Sandbox
    state: Path
    aws_proxy: str
    metrics_port: int
    probe_port: int
    kubeconfig: Path | None = None  # default: the sandbox admin; tests of RBAC pass a restricted identity
    namespaces: list[str] | None = None  # default: all
    record: processes.Recorded | None = None
    arm_proxy: str | None = None  # the ARM traffic goes through a fault proxy too, when set
    extra_env: dict[str, str] | None = None
    name: str = "operator"  # the recorded process's name, and its log's
    launcher: list[str] | None = None  # a prefix of the argv (e.g. one that enters a memory-limited cgroup)

    def env(self) -> dict[str, str]:
        env = {**self.sandbox.env(), "AWS_ENDPOINT_URL": self.aws_proxy}
        if self.kubeconfig is not None:
            env["KUBECONFIG"] = str(self.kubeconfig)
        if self.namespaces is not None:
            env["DEFENDER_OPERATOR_NAMESPACES"] = json.dumps(self.namespaces)
        if self.arm_proxy is not None:
            env["DEFENDER_OPERATOR_AZURE_ARM_ENDPOINT"] = self.arm_proxy
        env.update(
            {
                "DEFENDER_OPERATOR_RESYNC_SECONDS": "8",
                "DEFENDER_OPERATOR_IN_PROGRESS_SECONDS": "0.25",
                "DEFENDER_OPERATOR_BACKOFF_BASE_SECONDS": "1",
                "DEFENDER_OPERATOR_BACKOFF_MAX_SECONDS": "4",
                "DEFENDER_OPERATOR_METRICS_PORT": str(self.metrics_port),
                "DEFENDER_OPERATOR_PROBE_PORT": str(self.probe_port),
                "DEFENDER_OPERATOR_LOG_LEVEL": "DEBUG" if os.environ.get("OPERATOR_DEBUG") else "INFO",
            }
        )
        env.update(self.extra_env or {})
        return env

    def start(self, wait_ready: bool = True) -> None:
        """Start the process; by default wait until /readyz (a standby in leader election never gets there)."""
        argv = [*(self.launcher or []), sys.executable, "-m", "defender_operator.cli", "run"]
        self.record = processes.start(self.state, self.name, argv, env=self.env())
        self.pid_file.write_text(str(self.record.pid))  # whom a kill rule armed earlier kills (kill_after)
        if wait_ready:
            wait_for(self.ready, 60, "the operator's /readyz")

    @property
    def pid_file(self) -> Path:
        return self.state / f"{self.name}.pid"

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.probe_port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: no cleanup, as when a node dies."""
        assert self.record is not None
        os.killpg(self.record.pid, signal.SIGKILL)
        wait_for(lambda: not self.record or not self.record.alive(), 10, "the operator to die")

    def terminate(self, grace: float = 30.0) -> bool:
        """SIGTERM, as the kubelet stops a pod: True if the process ended within ``grace`` (the pod's
        terminationGracePeriodSeconds, 30 s by default); otherwise it is SIGKILLed then, as the kubelet does."""
        record = self.record
        assert record is not None
        os.killpg(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while record.alive() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not record.alive():
            return True
        self.kill()
        return False

    def stop(self) -> None:
        """The operator and its proxies (everything recorded in its state directory)."""
        processes.stop_recorded(self.state)

    def log(self) -> str:
        path = self.state / f"{self.name}.log"
        return path.read_text() if path.exists() else ""

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            return str(response.read().decode())

    # --- the AWS calls it makes -------------------------------------------------------------------------------------

    def aws_operations(self) -> dict[str, int]:
        operations: dict[str, int] = control(self.aws_proxy, "/_proxy/stats", method="GET")["operations"]
        return operations

    def aws_faulted(self) -> int:
        """How many requests a fault rule has matched (counted as they arrive, before any latency is applied)."""
        return int(control(self.aws_proxy, "/_proxy/stats", method="GET")["faulted"])

    def reset_aws_operations(self) -> None:
        control(self.aws_proxy, "/_proxy/stats", method="DELETE")

    def inject_aws_fault(self, **rule: Any) -> None:
        control(self.aws_proxy, "/_proxy/faults", rule)

    def clear_aws_faults(self) -> None:
        control(self.aws_proxy, "/_proxy/faults", method="DELETE")

    def inject_arm_fault(self, **rule: Any) -> None:
        assert self.arm_proxy is not None and self.sandbox.arm_ca_file
        control(self.arm_proxy, "/_proxy/faults", rule, ca_file=self.sandbox.arm_ca_file)

    def clear_arm_faults(self) -> None:
        if self.arm_proxy is not None:
            control(self.arm_proxy, "/_proxy/faults", method="DELETE", ca_file=self.sandbox.arm_ca_file)

    def kill_after(self, cloud: str, pattern: str, method: str = "*") -> None:
        """SIGKILL the operator right after its next request matching ``pattern`` took effect in ``cloud`` (the
        process running then: one restarted meanwhile is the one killed)."""
        rule = {"pathPattern": pattern, "method": method, "count": 1, "killPidFile": str(self.pid_file)}
        if cloud == "aws":
            self.inject_aws_fault(**rule)
        else:
            self.inject_arm_fault(**rule)


def prepared_operator(
    sandbox: Sandbox,
    state: Path,
    kubeconfig: Path | None = None,
    namespaces: list[str] | None = None,
    *,
    arm_proxy: bool = False,
    extra_env: dict[str, str] | None = None,
    launcher: list[str] | None = None,
) -> OperatorProcess:
    """An operator with its fault proxies running and its process not started yet: a test can set faults (or a
    benchmark its clock) before the operator's first request."""
    assert sandbox.aws_endpoint and sandbox.arm_endpoint
    state.mkdir(parents=True, exist_ok=True)
    proxy = start_proxy(state, "aws-proxy", sandbox.aws_endpoint, "aws")
    return OperatorProcess(
        sandbox,
        state,
        proxy,
        processes.free_port(),
        processes.free_port(),
        kubeconfig,
        namespaces,
        arm_proxy=start_proxy(state, "arm-proxy", sandbox.arm_endpoint, "arm", sandbox.state)
        if arm_proxy
        else None,
        extra_env=extra_env,
        launcher=launcher,
    )


def start_operator(
    sandbox: Sandbox,
    state: Path,
    kubeconfig: Path | None = None,
    namespaces: list[str] | None = None,
    *,
    wait_ready: bool = True,
    **options: Any,
) -> OperatorProcess:
    """:func:`prepared_operator` (``options``: its keywords), started; by default once it is ready."""
    operator = prepared_operator(sandbox, state, kubeconfig, namespaces, **options)
    operator.start(wait_ready)
    return operator


@contextlib.contextmanager
def module_operator(
    sandbox: Sandbox, tmp_path_factory: Any, name: str, **options: Any
) -> Iterator[OperatorProcess]:
    """An operator for a test module; its log is kept beside the sandbox's (test-sandbox[-gwN]-logs/<name>.log)."""
    running = start_operator(sandbox, tmp_path_factory.mktemp(name), **options)
    try:
        yield running
    finally:
        running.stop()
        logs = logs_of(sandbox)
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(running.state / "operator.log", logs / f"{name}.log")


def logs_of(sandbox: Sandbox) -> Path:
    """Where a test sandbox's logs, and its operators', are kept once it stops: beside its state directory."""
    return sandbox.state.with_name(f"{sandbox.state.name}-logs")


# --- waiting on what users see ---------------------------------------------------------------------------------------


# Ready=False while CloudFormation works: the first pass says StackCreating, the next ones (a second later)
# StackInProgress.
STACK_PENDING = frozenset({"StackCreating", "StackInProgress"})


def wait_condition(
    kubeconfig: Path,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    timeout: float = 60,
    reason: str | frozenset[str] | None = None,
) -> dict[str, Any]:
    """The object once condition ``type_`` has ``status`` (and ``reason``, or one of a set of them: a reason that
    lasts a single pass is seen only by luck) for its current generation."""
    reasons = {reason} if isinstance(reason, str) else reason

    def check() -> dict[str, Any] | None:
        obj = get_object(kubeconfig, namespace, name)
        cond = condition(obj, type_)
        if cond and cond["status"] == status and (reasons is None or cond["reason"] in reasons):
            assert obj is not None
            if obj["status"].get("observedGeneration") == obj["metadata"]["generation"]:
                return obj
        return None

    result: dict[str, Any] = wait_for(
        check,
        timeout,
        f"{namespace}/{name} {type_}={status}{f' ({sorted(reasons)})' if reasons else ''}",
        interval=CHEAP_POLL,
    )
    return result


# These waits read one object through the Python client (a few milliseconds of CPU), so they look ten times a second:
# half the mean delay of the default interval, paid by every test several times.
CHEAP_POLL = 0.1


def changed_with_status_lost(
    operator: "OperatorProcess", kubeconfig: Path, m: dict[str, Any], lost: str
) -> None:
    """``m`` applied while the operator is down and its object's status has lost ``lost`` (a JSON pointer), as a
    status written from a copy older than the pass that put it there leaves it: the pass that meets the change
    starts from that status (the campaign's seed 67071)."""
    namespace, name = m["metadata"]["namespace"], m["metadata"]["name"]
    operator.kill()
    try:
        kubectl(
            kubeconfig, "patch", "awsc", name, "-n", namespace, "--subresource=status", "--type=json",
            "-p", json.dumps([{"op": "remove", "path": lost}]), check=True,
        )  # fmt: skip
        assert apply(kubeconfig, m).returncode == 0
    finally:
        operator.start()


def wait_gone(kubeconfig: Path, namespace: str, name: str, timeout: float = 60) -> None:
    wait_for(
        lambda: get_object(kubeconfig, namespace, name) is None,
        timeout,
        f"{namespace}/{name} to be deleted",
        interval=CHEAP_POLL,
    )


def events(kubeconfig: Path, namespace: str, name: str) -> list[dict[str, Any]]:
    out = kubectl(
        kubeconfig,
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        f"involvedObject.name={name}",
        "-o",
        "json",
        check=True,
    )
    items: list[dict[str, Any]] = json.loads(out.stdout)["items"]
    return items


def wait_events(
    kubeconfig: Path, namespace: str, name: str, reasons: set[str], timeout: float = 60
) -> list[dict[str, Any]]:
    """The object's Events once every one of ``reasons`` is among them: the operator posts Events from a thread of
    its own after the status is written (event_recorder.py), so a test that saw the status waits for them too."""

    def found() -> list[dict[str, Any]] | None:
        items = events(kubeconfig, namespace, name)
        return items if reasons <= {e["reason"] for e in items} else None

    return wait_for(found, timeout, f"Events {sorted(reasons)} of {namespace}/{name}", interval=0.5)


def connector_puts(sandbox: Sandbox, name: str) -> list[dict[str, Any]]:
    return [
        r
        for r in arm_requests(sandbox)
        if r["method"] in ("PUT", "PATCH", "DELETE") and r["path"].endswith(f"/{name}")
    ]


def set_health(
    sandbox: Sandbox, connector_id: str, status: str, issues: list[dict[str, str]] | None = None
) -> None:
    arm_control(
        sandbox, "/_sandbox/health", {"connectorId": connector_id, "status": status, "issues": issues or []}
    )


def now_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) + f".{time.monotonic_ns()}"
