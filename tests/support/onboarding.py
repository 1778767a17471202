"""Onboarding scenarios as users drive them: manifests for fresh accounts, kubectl, and looks into both clouds."""

import itertools
import json
from pathlib import Path
from typing import Any

import boto3

from defender_operator.api.names import ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT
from defender_operator.sandbox import Sandbox

from .clouds import arm_client, aws_client, connector_url, send
from .kube import apply, get_object, kubectl
from .manifests import base_manifest
from .operator import now_stamp, wait_condition, wait_gone

_accounts = itertools.count(200011112222)
MS_PROVIDER = "sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"


def fresh_account() -> str:
    """An AWS account id no other test of this process uses: a connector's account is unique in a subscription
    (Defender refuses a second connector for it), and each worker's ARM emulator outlives the tests it serves."""
    return str(next(_accounts))


def manifest(namespace: str, name: str = "acme", account: str | None = None, **spec: Any) -> dict[str, Any]:
    """A manifest for a fresh account, reached by assuming a role in it (moto honours that across accounts)."""
    account = account or fresh_account()
    m = base_manifest(name, namespace, account)
    m["spec"]["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{account}:role/defender-onboarding"}
    m["spec"]["azure"]["resourceGroup"] = f"rg-{namespace}"
    for key, value in spec.items():
        m["spec"][key] = value
    return m


def account_of(m: dict[str, Any]) -> str:
    return str(m["spec"]["aws"]["accountId"])


def aws_in(sandbox: Sandbox, account: str, service: str, region: str = "us-east-1") -> Any:
    """A client acting in ``account`` (assume a role there, as the operator does)."""
    return assumed(sandbox, f"arn:aws:iam::{account}:role/test", service, region)


def assumed(sandbox: Sandbox, role_arn: str, service: str, region: str = "us-east-1") -> Any:
    """A client with the credentials of ``role_arn``, assumed from the sandbox's own identity."""
    sts = aws_client(sandbox, "sts")
    credentials = sts.assume_role(RoleArn=role_arn, RoleSessionName="test")["Credentials"]
    return client_with(sandbox, credentials, service, region)


def client_with(
    sandbox: Sandbox, credentials: dict[str, Any], service: str, region: str = "us-east-1"
) -> Any:
    """A client with temporary credentials as STS returns them (AccessKeyId, SecretAccessKey, SessionToken)."""
    return boto3.client(
        service,
        endpoint_url=sandbox.aws_endpoint,
        region_name=region,
        aws_access_key_id=credentials["AccessKeyId"],
        aws_secret_access_key=credentials["SecretAccessKey"],
        aws_session_token=credentials["SessionToken"],
    )


def member_connector(account: str, management: str) -> dict[str, Any]:
    """A member connector as Defender creates it by itself for an organization's account."""
    return {
        "location": "westeurope",
        "properties": {
            "hierarchyIdentifier": account,
            "environmentName": "AWS",
            "environmentData": {
                "environmentType": "AwsAccount",
                "organizationalData": {
                    "organizationMembershipType": "Member",
                    "parentHierarchyId": management,
                },
            },
            "offerings": [
                {
                    "offeringType": "CspmMonitorAws",
                    "nativeCloudConnection": {"cloudRoleArn": f"arn:aws:iam::{account}:role/CspmMonitorAws"},
                }
            ],
        },
    }


def defender_roles(sandbox: Sandbox, account: str) -> list[str]:
    """Roles in ``account`` other than the one AWS Organizations creates in every new member account."""
    roles = aws_in(sandbox, account, "iam").list_roles()["Roles"]
    return [r["RoleName"] for r in roles if r["RoleName"] != "OrganizationAccountAccessRole"]


def stacks_of(sandbox: Sandbox, account: str) -> list[dict[str, Any]]:
    cf = aws_in(sandbox, account, "cloudformation")
    return [s for s in cf.describe_stacks()["Stacks"] if s["StackStatus"] != "DELETE_COMPLETE"]


def connector(sandbox: Sandbox, m: dict[str, Any], name: str | None = None) -> Any:
    url = connector_url(name or m["metadata"]["name"], m["spec"]["azure"]["resourceGroup"])
    return send(arm_client(sandbox), "GET", url)


def onboarded(
    kubeconfig: Path, namespace: str, name: str = "acme", **spec: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Apply a manifest for a fresh account and wait until it is Ready; returns the manifest and the object."""
    m = manifest(namespace, name, **spec)
    assert apply(kubeconfig, m).returncode == 0
    return m, wait_condition(kubeconfig, namespace, name, "Ready", "True")


def paused_first(kubeconfig: Path, m: dict[str, Any]) -> None:
    """Apply ``m`` paused and wait until it says so: an object with a status and no cloud call made, whose next pass
    (:func:`resumed_with_a_change`) is a new generation's, announced before any cloud call. A new object's first pass
    announces nothing: it has no status yet."""
    m["metadata"]["annotations"] = {**(m["metadata"].get("annotations") or {}), ANNOTATION_PAUSED: "true"}
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, m["metadata"]["namespace"], m["metadata"]["name"], "Paused", "True")


def resumed_with_a_change(kubeconfig: Path, namespace: str, name: str) -> None:
    """Unpause the object and change its spec in one write: its next pass announces generation 2."""
    change = {"metadata": {"annotations": {ANNOTATION_PAUSED: None}}, "spec": {"scanIntervalHours": 12}}
    kubectl(
        kubeconfig,
        "patch",
        "awsc",
        "-n",
        namespace,
        name,
        "--type=merge",
        "-p",
        json.dumps(change),
        check=True,
    )


def request_reconcile(kubeconfig: Path, namespace: str, name: str) -> str:
    """Ask for a reconcile now (the annotation a user sets); returns the request's stamp."""
    stamp = now_stamp()
    kubectl(
        kubeconfig,
        "annotate",
        "awsc",
        "-n",
        namespace,
        name,
        f"{ANNOTATION_RECONCILE_REQUESTED_AT}={stamp}",
        "--overwrite",
        check=True,
    )
    return stamp


def delete(kubeconfig: Path, namespace: str, name: str) -> None:
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, name, "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, name)


def reconcile_handled(kubeconfig: Path, namespace: str, name: str, request: str) -> bool:
    """The reconcile that ``request`` (a stamp from ``request_reconcile``) asked for has been handled."""
    status = (get_object(kubeconfig, namespace, name) or {}).get("status", {})
    return bool(status.get("lastHandledReconcileAt") == request)


def drift_checked(kubeconfig: Path, namespace: str, request: str, name: str = "acme") -> bool:
    """The drift check that reconcile ``request`` (a stamp from ``request_reconcile``) started has finished: the
    request was handled and no detection is under way. (Not a new ``lastDriftCheck``: it has a resolution of a
    second, and a check that ends within the second of the previous one leaves it as it was.)"""
    status = (get_object(kubeconfig, namespace, name) or {}).get("status", {})
    return status.get("lastHandledReconcileAt") == request and not status.get("aws", {}).get(
        "driftDetectionId"
    )


def organization_ou(
    sandbox: Sandbox, management: str, members: int, email: str = "m"
) -> tuple[str, list[str]]:
    """An organization of ``management`` with an OU ("workloads") of ``members`` new accounts: (the OU, the
    accounts)."""
    organizations = aws_in(sandbox, management, "organizations")
    organizations.create_organization(FeatureSet="ALL")
    root = organizations.list_roots()["Roots"][0]["Id"]
    ou = organizations.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
    accounts = []
    for i in range(members):
        request = organizations.create_account(Email=f"{email}{i}@example.com", AccountName=f"{email}{i}")
        account = organizations.describe_create_account_status(
            CreateAccountRequestId=request["CreateAccountStatus"]["Id"]
        )["CreateAccountStatus"]["AccountId"]
        organizations.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)
        accounts.append(account)
    return ou, accounts


def tenant_secrets(kubeconfig: Path, namespace: str, **aws: str) -> None:
    """The tenant's own AWS keys (the role is assumed with them) and Azure app, as Secrets in its namespace."""
    keys = {"accessKeyId": "AKIATENANTOWNKEYS", "secretAccessKey": "tenant-own-secret-access-key", **aws}
    kubectl(
        kubeconfig, "create", "secret", "generic", "aws-keys", "-n", namespace,
        *[f"--from-literal={k}={v}" for k, v in keys.items()], check=True,
    )  # fmt: skip
    azure_app(kubeconfig, namespace)


def azure_app(user: Path, namespace: str) -> None:
    """The tenant's own Azure app (the sandbox's Entra takes any)."""
    kubectl(
        user, "create", "secret", "generic", "azure-app", "-n", namespace,
        "--from-literal=clientId=tenant-app", "--from-literal=clientSecret=sandbox", check=True,
    )  # fmt: skip


def own_secrets(m: dict[str, Any]) -> dict[str, Any]:
    m["spec"]["aws"]["credentials"]["secretRef"] = {"name": "aws-keys"}
    m["spec"]["azure"]["credentialsSecretRef"] = {"name": "azure-app"}
    return m
