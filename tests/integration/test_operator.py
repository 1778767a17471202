"""The operator end to end: a real process, a real API server, moto and the ARM emulator, driven with kubectl."""

import itertools
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.api.names import (
    ANNOTATION_RECONCILE_REQUESTED_AT,
    FINALIZER,
)
from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render import render
from defender_operator.sandbox import Sandbox, binaries
from tests.support.checks import schema_errors
from tests.support.clouds import (
    arm_client,
    arm_control,
    arm_requests,
    aws_client,
    connector_url,
    send,
)
from tests.support.kube import apply, get_object, kubectl, wait_for
from tests.support.manifests import base_manifest
from tests.support.operator import (
    OperatorProcess,
    events,
    now_stamp,
    start_operator,
    wait_condition,
    wait_gone,
)

pytestmark = pytest.mark.integration

_accounts = itertools.count(200011112222)
MS_PROVIDER = "sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    running = start_operator(sandbox, tmp_path_factory.mktemp("operator"))
    try:
        yield running
    finally:
        running.stop()
        logs = binaries.cache_dir() / "test-sandbox-logs"
        logs.mkdir(parents=True, exist_ok=True)
        shutil.copy(running.state / "operator.log", logs / "operator.log")


@pytest.fixture
def namespace(kubeconfig: Path) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl(kubeconfig, "create", "namespace", name, check=True)
    return name


def manifest(namespace: str, name: str = "acme", account: str | None = None, **spec: Any) -> dict[str, Any]:
    """A manifest for a fresh account, reached by assuming a role in it (moto honours that across accounts)."""
    account = account or str(next(_accounts))
    m = base_manifest(name, namespace, account)
    m["spec"]["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{account}:role/defender-onboarding"}
    m["spec"]["azure"]["resourceGroup"] = f"rg-{namespace}"
    for key, value in spec.items():
        m["spec"][key] = value
    return m


def account_of(m: dict[str, Any]) -> str:
    return str(m["spec"]["aws"]["accountId"])


def aws_in(sandbox: Sandbox, account: str, service: str) -> Any:
    """A client acting in ``account`` (assume a role there, as the operator does)."""
    sts = aws_client(sandbox, "sts")
    creds = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/test", RoleSessionName="test")[
        "Credentials"
    ]
    import boto3

    return boto3.client(
        service,
        endpoint_url=sandbox.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def stacks_of(sandbox: Sandbox, account: str) -> list[dict[str, Any]]:
    cf = aws_in(sandbox, account, "cloudformation")
    return [s for s in cf.describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"]


def connector(sandbox: Sandbox, m: dict[str, Any], name: str | None = None) -> Any:
    url = connector_url(name or m["metadata"]["name"], m["spec"]["azure"]["resourceGroup"])
    return send(arm_client(sandbox), "GET", url)


def request_reconcile(kubeconfig: Path, namespace: str, name: str) -> None:
    kubectl(
        kubeconfig,
        "annotate",
        "awsc",
        "-n",
        namespace,
        name,
        f"{ANNOTATION_RECONCILE_REQUESTED_AT}={now_stamp()}",
        "--overwrite",
        check=True,
    )


def delete(kubeconfig: Path, namespace: str, name: str) -> None:
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, name, "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, name)


def test_create_reaches_ready_with_the_right_stack_roles_and_connector(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace)
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    account = account_of(m)
    status = obj["status"]
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    assert status["aws"]["stackStatus"] == "CREATE_COMPLETE"
    assert status["aws"]["oidcProvider"] == {
        "arn": f"arn:aws:iam::{account}:oidc-provider/{MS_PROVIDER}",
        "owned": True,
        "addedAudiences": [],
    }
    assert set(status["aws"]["roles"]) == {
        "cspmMonitor",
        "agentlessScanner",
        "defenderForServers",
        "arcAutoProvisioning",
        "ssmAutomation",
        "containersK8s",
        "dataCollection",
        "cloudWatchToKinesis",
        "kinesisToS3",
        "k8sAgentlessDiscovery",
        "imageAssessment",
        "databasesDspm",
    }
    (stack,) = stacks_of(sandbox, account)
    spec = AWSConnectorSpec.model_validate(m["spec"])
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert tags["defender-operator.io/template-hash"] == render(spec).cloudformation.sha256
    iam = aws_in(sandbox, account, "iam")
    assert (
        iam.get_role(RoleName="CspmMonitorAws")["Role"]["Arn"]
        == f"arn:aws:iam::{account}:role/CspmMonitorAws"
    )
    live = connector(sandbox, m).json()
    assert live["properties"]["hierarchyIdentifier"] == account
    assert status["azure"]["connectorId"] == live["id"] and status["azure"]["trialEndDate"]
    expected = render(spec).connector.content
    assert {k: live[k] for k in ("location",)} == {"location": expected["location"]}
    assert (
        schema_errors(
            {k: v for k, v in live.items() if k not in ("id", "name", "type", "systemData", "etag", "kind")}
        )
        == []
    )
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "AWSReady": "True",
        "AzureReady": "True",
        "Healthy": "True",
    }
    row = kubectl(
        kubeconfig, "get", "awsc", "-n", namespace, "acme", "--no-headers", check=True
    ).stdout.split()
    assert row[1:6] == [account, "4", "CSPM,Servers(P2),Containers,Databases", "True", "Onboarded"]
    reasons = {e["reason"] for e in events(kubeconfig, namespace, "acme")}
    assert {"StackCreating", "ConnectorCreated", "Ready"} <= reasons
    delete(kubeconfig, namespace, "acme")


def test_a_pass_in_sync_makes_no_write_calls(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace)
    apply(kubeconfig, m)
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    request_reconcile(
        kubeconfig, namespace, "acme"
    )  # the first drift check runs now, not in the measured pass
    wait_for(lambda: drift_checked(kubeconfig, namespace), 30, "a drift check")
    before = get_object(kubeconfig, namespace, "acme")
    operator.reset_aws_operations()
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")
    wait_for(lambda: operator.aws_operations().get("DescribeStacks", 0) >= 1, 60, "the next resync pass")
    wait_for(
        lambda: any("healthReports" in r["path"] for r in arm_requests(sandbox)),
        10,
        "the pass to reach Azure",
    )
    writes = {
        op: n for op, n in operator.aws_operations().items() if not op.startswith(("Describe", "Get", "List"))
    }
    assert writes == {}
    assert [r for r in arm_requests(sandbox) if r["method"] != "GET"] == []
    after = get_object(kubeconfig, namespace, "acme")
    assert before is not None and after is not None
    assert after["status"] == before["status"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "the pass wrote the object"
    )
    delete(kubeconfig, namespace, "acme")


def drift_checked(kubeconfig: Path, namespace: str, name: str = "acme") -> bool:
    status = (get_object(kubeconfig, namespace, name) or {}).get("status", {})
    return bool(status.get("aws", {}).get("lastDriftCheck")) and not status.get("aws", {}).get(
        "driftDetectionId"
    )
