"""`defender-operator sandbox up | env | status | down` as a user runs them, crash recovery included."""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from defender_operator.sandbox import binaries, processes

pytestmark = pytest.mark.integration

ENV_CHECK = r"""
set -euo pipefail
eval "$(defender-operator sandbox env)"
kubectl get --raw /version | grep -q '"gitVersion": "v1.37.2"'
python - <<'PY'
import os
import boto3
from azure.identity import ClientSecretCredential
from azure.mgmt.security import SecurityCenter

identity = boto3.client("sts").get_caller_identity()
assert identity["Account"] == "111122223333", identity
boto3.client("cloudformation").describe_stacks()
credential = ClientSecretCredential(
    os.environ["AZURE_TENANT_ID"], os.environ["AZURE_CLIENT_ID"], os.environ["AZURE_CLIENT_SECRET"],
    authority=os.environ["AZURE_AUTHORITY_HOST"], disable_instance_discovery=True,
)
client = SecurityCenter(credential, "11111111-2222-3333-4444-555555555555", base_url=os.environ["DEFENDER_OPERATOR_AZURE_ARM_ENDPOINT"])
scope = "subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg/providers/Microsoft.Security/securityConnectors/none"
try:
    list(client.health_reports.list(scope=scope))
except Exception as exc:  # the emulator answers (404 for a connector that does not exist), over trusted TLS
    assert "ResourceNotFound" in str(exc), exc
# The exported bundle still trusts the public roots (pip and curl keep working in this shell) plus the sandbox's CA.
import ssl
import certifi
context = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
public = ssl.create_default_context(cafile=certifi.where())
assert len(context.get_ca_certs()) == len(public.get_ca_certs()) + 1, (len(context.get_ca_certs()), len(public.get_ca_certs()))
assert os.environ["REQUESTS_CA_BUNDLE"] == os.environ["SSL_CERT_FILE"]
print("all three reach the sandbox")
PY
"""


@pytest.fixture
def state() -> Iterator[Path]:
    path = binaries.cache_dir() / "cli-sandbox"
    yield path
    subprocess.run(cli("down"), env=env(path), capture_output=True, timeout=60)


def cli(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "defender-operator"), "sandbox", *args]


def env(state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DEFENDER_OPERATOR_SANDBOX_DIR": str(state),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


def test_up_env_status_down_and_recovery_after_a_crash(state: Path) -> None:
    up = subprocess.run(cli("up"), env=env(state), capture_output=True, text=True, timeout=300)
    assert up.returncode == 0, up.stderr
    assert "sandbox ready in" in up.stderr
    first = processes.recorded(state)
    assert {r.name for r in first} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kwok",
        "aws-emulator",
        "arm-emulator",
    }
    assert subprocess.run(cli("status"), env=env(state), capture_output=True, timeout=30).returncode == 0
    checked = subprocess.run(
        ["bash", "-c", ENV_CHECK], env=env(state), capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "all three reach the sandbox" in checked.stdout
    kubeconfig = subprocess.run(
        cli("env", "--kubeconfig"), env=env(state), capture_output=True, text=True, timeout=30
    )
    assert kubeconfig.stdout.strip().endswith("kubeconfig")

    # A crashed owner leaves processes behind; the next `up` stops exactly those before starting anew.
    again = subprocess.run(cli("up"), env=env(state), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert not any(r.alive() for r in first)
    second = processes.recorded(state)
    assert all(r.alive() for r in second)

    down = subprocess.run(cli("down"), env=env(state), capture_output=True, text=True, timeout=60)
    assert down.returncode == 0 and "stopped" in down.stderr
    assert not any(r.alive() for r in second)
    assert not state.exists()
    assert subprocess.run(cli("status"), env=env(state), capture_output=True, timeout=30).returncode == 1
