"""Clients for the sandbox's emulators, built the way the operator and users build them (real SDKs, real TLS)."""

import json
from typing import Any

import boto3
from azure.core.rest import HttpRequest, HttpResponse
from azure.identity import ClientSecretCredential
from azure.mgmt.core import ARMPipelineClient
from botocore.config import Config

from defender_operator.azure.client import arm_pipeline
from defender_operator.sandbox import Sandbox
from defender_operator.sandbox.emulators import control

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
TENANT = "99999999-8888-7777-6666-555555555555"
CONNECTOR_API = "2024-08-01-preview"


def aws_client(sandbox: Sandbox, service: str, endpoint: str | None = None, **config: Any) -> Any:
    return boto3.client(
        service,
        endpoint_url=endpoint or sandbox.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id="sandbox",
        aws_secret_access_key="sandbox",
        config=Config(retries={"mode": "standard", "max_attempts": 5}, **config),
    )


def credential(sandbox: Sandbox, secret: str = "sandbox") -> ClientSecretCredential:
    assert sandbox.arm_endpoint and sandbox.arm_ca_file
    return ClientSecretCredential(
        TENANT,
        "sandbox-tests",
        secret,
        authority=sandbox.arm_endpoint,
        disable_instance_discovery=True,
        connection_verify=sandbox.arm_ca_file,
    )


def arm_client(sandbox: Sandbox, base_url: str | None = None, **kwargs: Any) -> ARMPipelineClient:
    """The operator's own ARM pipeline (azure-mgmt-core), pointed at the emulator."""
    assert sandbox.arm_endpoint
    return arm_pipeline(
        credential(sandbox), base_url or sandbox.arm_endpoint, ca_bundle=sandbox.arm_ca_file, **kwargs
    )


def connector_url(name: str, resource_group: str = "rg", subscription: str = SUBSCRIPTION) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Security/"
        f"securityConnectors/{name}?api-version={CONNECTOR_API}"
    )


def send(client: ARMPipelineClient, method: str, url: str, body: Any = None, **headers: str) -> HttpResponse:
    request = HttpRequest(
        method, client.format_url(url) if url.startswith("/") else url, json=body, headers=headers or None
    )
    return client.send_request(request)


def arm_control(sandbox: Sandbox, path: str, payload: Any = None, method: str = "POST") -> Any:
    assert sandbox.arm_endpoint
    return control(sandbox.arm_endpoint, path, payload, method, sandbox.arm_ca_file)


def aws_control(sandbox: Sandbox, path: str, payload: Any = None) -> Any:
    assert sandbox.aws_endpoint
    return control(sandbox.aws_endpoint, path, payload)


def reset_clouds(sandbox: Sandbox) -> None:
    assert sandbox.aws_endpoint
    control(sandbox.aws_endpoint, "/moto-api/reset", {})  # also stops authorizing IAM principals
    aws_control(
        sandbox, "/_sandbox/config", {"asyncStackSeconds": 0, "pageSize": 100, "iamPropagationSeconds": 0}
    )
    arm_control(sandbox, "/_sandbox/reset", {})


def arm_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    requests: list[dict[str, Any]] = arm_control(sandbox, "/_sandbox/requests", method="GET")["requests"]
    return requests


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def foreign_connector_body(account: str, tags: dict[str, str] | None = None) -> dict[str, Any]:
    """A connector someone else made (the portal's minimal CSPM onboarding) with ``tags`` (default: another team's,
    no operator mark)."""
    return {
        "location": "westeurope",
        "properties": {
            "hierarchyIdentifier": account,
            "environmentName": "AWS",
            "environmentData": {"environmentType": "AwsAccount", "scanInterval": 24},
            "offerings": [
                {
                    "offeringType": "CspmMonitorAws",
                    "nativeCloudConnection": {"cloudRoleArn": f"arn:aws:iam::{account}:role/CspmMonitorAws"},
                }
            ],
        },
        "tags": {"team": "payments"} if tags is None else tags,
    }


def delete_role_by_hand(iam: Any, role: str) -> None:
    """A person deletes a role with IAM, as the console does: its managed and inline policies first (IAM refuses to
    delete a role that has any). Its stack does not know: only drift detection, or an update that meets it, does."""
    for attached in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=role, PolicyArn=attached["PolicyArn"])
    for inline in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        iam.delete_role_policy(RoleName=role, PolicyName=inline)
    iam.delete_role(RoleName=role)
