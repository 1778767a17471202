"""No secret at any log level (issue 10): canary secrets wherever the operator reads one, the operator at DEBUG,
and its log, the object's Events and its status scanned for them."""

import json
import re
from pathlib import Path

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.kube import apply, kubectl
from tests.support.onboarding import account_of, delete, manifest, stacks_of
from tests.support.operator import start_operator, wait_condition, wait_events

pytestmark = pytest.mark.integration


def test_no_secret_at_debug_level(sandbox: Sandbox, kubeconfig: Path, tmp_path: Path, namespace: str) -> None:
    """Canary secrets everywhere the operator reads one; the log at DEBUG, Events and status never show them."""
    canaries = {
        "own": "canary-own-aws-secret-7f3a9",
        "aws": "canary-secret-access-key-51c0e",
        "token": "canary-session-token-a8d2f",
        "azure": "canary-client-secret-0b6e4",
    }
    running = start_operator(
        sandbox,
        tmp_path / "debug-operator",
        namespaces=[namespace],
        extra_env={"DEFENDER_OPERATOR_LOG_LEVEL": "DEBUG", "AWS_SECRET_ACCESS_KEY": canaries["own"]},
    )
    try:
        kubectl(
            kubeconfig, "create", "secret", "generic", "aws-keys", "-n", namespace,
            "--from-literal=accessKeyId=AKIACANARY", f"--from-literal=secretAccessKey={canaries['aws']}",
            f"--from-literal=sessionToken={canaries['token']}", check=True,
        )  # fmt: skip
        kubectl(
            kubeconfig, "create", "secret", "generic", "azure-app", "-n", namespace,
            "--from-literal=clientId=onboarding-app", f"--from-literal=clientSecret={canaries['azure']}", check=True,
        )  # fmt: skip
        m = manifest(namespace)
        m["spec"]["aws"]["credentials"]["secretRef"] = {"name": "aws-keys"}
        m["spec"]["azure"]["credentialsSecretRef"] = {"name": "azure-app"}
        assert apply(kubeconfig, m).returncode == 0
        obj = wait_condition(
            kubeconfig, namespace, "acme", "Stalled", "True", reason="AzureCredentialsRejected"
        )
        log = running.log()
        assert "AssumeRole" in log and "DEBUG" in log  # the SDKs did talk, at DEBUG
        seen = (
            json.dumps(obj)
            + json.dumps(wait_events(kubeconfig, namespace, "acme", {"AzureCredentialsRejected"}))
            + log
        )
        assert [name for name, value in canaries.items() if value in seen] == []
        assert not re.search(r"<(SecretAccessKey|SessionToken)>(?!\[redacted\])", log)
        assert not re.search(r"\"access_token\":\s*\"(?!\[redacted\])", log)
        # Azure was never written to (its credentials never worked): the AWS side is cleaned up, Azure skipped.
        delete(kubeconfig, namespace, "acme")
    finally:
        running.stop()
    assert stacks_of(sandbox, account_of(m)) == []
