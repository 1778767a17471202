"""The sandbox: a real control plane plus the AWS and Azure emulators, on loopback, for newcomers and for tests.

``up`` starts everything in a state directory and records it there (``state.json``, ``processes.json``); ``down``
stops what is recorded and removes the directory. A later ``up`` or ``down`` cleans up after a crashed run, because
the processes are recorded before anything waits on them.
"""

import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import binaries, controlplane, processes
from .controlplane import ControlPlane
from .emulators import start_emulators, trust_bundle

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    explicit = os.environ.get("DEFENDER_OPERATOR_SANDBOX_DIR")
    return Path(explicit) if explicit else binaries.cache_dir() / "sandbox"


@dataclass(frozen=True)
class Sandbox:
    """A running sandbox: what runs and how to reach it."""

    state: Path
    control_plane: ControlPlane
    aws_endpoint: str | None = None
    arm_endpoint: str | None = None
    arm_ca_file: str | None = None

    def env(self) -> dict[str, str]:
        """Everything the operator, kubectl and the cloud SDKs need to use this sandbox."""
        tools = str(binaries.kubectl().parent)  # kubectl of the API server's minor version first on PATH
        path = os.environ.get("PATH", "")
        values = {
            "KUBECONFIG": str(self.control_plane.kubeconfig),
            "PATH": path if path.split(os.pathsep)[0] == tools else f"{tools}{os.pathsep}{path}",
        }
        if self.aws_endpoint:
            values.update(
                {
                    "AWS_ENDPOINT_URL": self.aws_endpoint,
                    "AWS_ACCESS_KEY_ID": "sandbox",
                    "AWS_SECRET_ACCESS_KEY": "sandbox",
                    "AWS_REGION": "us-east-1",
                    "AWS_DEFAULT_REGION": "us-east-1",
                    # The emulated CloudFormation finishes at once (or after `up --async-stacks`), not in the
                    # minutes real stacks of IAM roles take: the operator's default of 15 s between looks at a
                    # stack in progress would be most of a newcomer's wait.
                    "DEFENDER_OPERATOR_IN_PROGRESS_SECONDS": "2",
                }
            )
        if self.arm_endpoint and self.arm_ca_file:
            bundle = str(trust_bundle(Path(self.arm_ca_file)))
            values.update(
                {
                    "DEFENDER_OPERATOR_AZURE_ARM_ENDPOINT": self.arm_endpoint,
                    "DEFENDER_OPERATOR_AZURE_GRAPH_ENDPOINT": self.arm_endpoint,
                    "DEFENDER_OPERATOR_AZURE_CA_BUNDLE": self.arm_ca_file,
                    "AZURE_AUTHORITY_HOST": self.arm_endpoint,
                    "AZURE_TENANT_ID": "99999999-8888-7777-6666-555555555555",
                    "AZURE_CLIENT_ID": "sandbox-operator",
                    "AZURE_CLIENT_SECRET": "sandbox",
                    # For the Azure SDK used by hand in the sandbox shell: the public roots too, so pip, curl
                    # and everything else that reads these keeps working there.
                    "REQUESTS_CA_BUNDLE": bundle,
                    "SSL_CERT_FILE": bundle,
                }
            )
        return values

    def save(self) -> None:
        data = {
            "controlPlane": self.control_plane.to_json(),
            "awsEndpoint": self.aws_endpoint,
            "armEndpoint": self.arm_endpoint,
            "armCaFile": self.arm_ca_file,
        }
        (self.state / STATE_FILE).write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, state: Path) -> "Sandbox | None":
        try:
            data = json.loads((state / STATE_FILE).read_text())
        except (OSError, ValueError):
            return None
        return cls(
            state=state,
            control_plane=ControlPlane.from_json(data["controlPlane"]),
            aws_endpoint=data.get("awsEndpoint"),
            arm_endpoint=data.get("armEndpoint"),
            arm_ca_file=data.get("armCaFile"),
        )


def down(state: Path, keep_logs: Path | None = None) -> list[str]:
    """Stop everything recorded in ``state`` and remove it (copying the logs to ``keep_logs`` first, if given);
    safe to call when nothing runs."""
    stopped = processes.stop_recorded(state) if state.exists() else []
    if keep_logs is not None and state.exists():
        keep_logs.mkdir(parents=True, exist_ok=True)
        for log in state.glob("*.log"):
            shutil.copy(log, keep_logs / log.name)
    shutil.rmtree(state, ignore_errors=True)
    return stopped


def up(state: Path, *, emulators: bool = True, async_stack_seconds: float = 0.0) -> Sandbox:
    """Start the sandbox in ``state`` (after cleaning up whatever an earlier run left there)."""
    from ..api.admission import admission_objects
    from ..api.crd import all_definitions

    down(state)
    state.mkdir(parents=True)
    try:
        # The emulators start while the control plane does (each records its processes before waiting on them).
        with ThreadPoolExecutor(1) as pool:
            clouds = pool.submit(start_emulators, state, async_stack_seconds) if emulators else None
            plane = controlplane.start(state)
            for crd in all_definitions():
                controlplane.install_crd(plane, crd)
            # As the chart installs it: AWSConnectors that no ClusterOnboardingPolicy allows are refused at apply.
            controlplane.apply_admission(plane, admission_objects())
            sandbox = Sandbox(state=state, control_plane=plane, **(clouds.result() if clouds else {}))
        sandbox.save()
        return sandbox
    except BaseException:
        processes.stop_recorded(state)
        raise
