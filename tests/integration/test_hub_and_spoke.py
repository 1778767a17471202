"""The hub-and-spoke layout of docs/production.md, built from the shipped templates: the operator runs as nothing but
the hub role of deploy/aws/hub.json and reaches the onboarded account through the spoke role of
deploy/aws/account-setup.json. With the AWS emulator authorizing every request of both accounts, onboarding reaches
Ready and cleans up; the hub identity can do nothing else (issue 11, point 4)."""

from collections.abc import Iterator
from typing import Any

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.account_admin import TRUST_ANYONE_HERE, deployed, enforce, refused
from tests.support.clouds import aws_client
from tests.support.kube import apply, kubectl
from tests.support.onboarding import aws_in, client_with, connector, manifest, stacks_of
from tests.support.operator import OperatorProcess, module_operator, wait_condition, wait_gone

pytestmark = pytest.mark.integration

HUB_ACCOUNT = "400011115555"
SPOKE_ACCOUNT = "400011116666"
SPOKE_ROLE = f"arn:aws:iam::{SPOKE_ACCOUNT}:role/defender-operator"
EXTERNAL_ID = "cluster-one"
HUB_ENV = {
    "AccessKeyId": "ACCESS_KEY_ID",
    "SecretAccessKey": "SECRET_ACCESS_KEY",
    "SessionToken": "SESSION_TOKEN",
}


@pytest.fixture(scope="module")
def hub(sandbox: Sandbox) -> dict[str, str]:
    """Both administrators' steps, then the hub role's credentials as EKS Pod Identity would hand them to the pod
    (the emulator does not check trust policies, so the test assumes the role itself)."""
    hub_arn = deployed(sandbox, HUB_ACCOUNT, "defender-operator-hub", "hub.json")["HubRoleArn"]
    assert hub_arn == f"arn:aws:iam::{HUB_ACCOUNT}:role/defender-operator-hub"
    outputs = deployed(
        sandbox,
        SPOKE_ACCOUNT,
        "defender-operator-setup",
        "account-setup.json",
        OperatorPrincipalArn=hub_arn,
        ExternalId=EXTERNAL_ID,
    )
    assert outputs["OperatorRoleArn"] == SPOKE_ROLE
    credentials = aws_client(sandbox, "sts").assume_role(RoleArn=hub_arn, RoleSessionName="pod")[
        "Credentials"
    ]
    return {
        "AWS_ACCESS_KEY_ID": credentials["AccessKeyId"],
        "AWS_SECRET_ACCESS_KEY": credentials["SecretAccessKey"],
        "AWS_SESSION_TOKEN": credentials["SessionToken"],
    }


@pytest.fixture(scope="module")
def operator(
    sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory, hub: dict[str, str]
) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "hub-operator", extra_env=hub) as running:
        yield running


@pytest.fixture
def authorized(sandbox: Sandbox) -> Iterator[None]:
    enforce(sandbox, HUB_ACCOUNT, SPOKE_ACCOUNT)
    try:
        yield
    finally:
        enforce(sandbox)


def as_hub(sandbox: Sandbox, hub: dict[str, str], service: str) -> Any:
    return client_with(sandbox, {key: hub[f"AWS_{variable}"] for key, variable in HUB_ENV.items()}, service)


def test_the_hub_onboards_a_spoke_through_its_role_and_can_do_nothing_else(
    sandbox: Sandbox,
    kubeconfig: Any,
    operator: OperatorProcess,
    namespace: str,
    hub: dict[str, str],
    authorized: None,
) -> None:
    m = manifest(namespace, "spoke", account=SPOKE_ACCOUNT, plans={"cspm": {"enabled": True}})
    m["spec"]["aws"]["credentials"] = {"roleArn": SPOKE_ROLE, "externalId": EXTERNAL_ID}
    m["spec"]["aws"]["rolePolicies"] = "Managed"
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "spoke", "Ready", "True", timeout=120)
    assert connector(sandbox, m, "spoke").status_code == 200

    # the hub identity may assume the spoke role and nothing else: not the spoke account's administrator role, not
    # any role in its own account, and it cannot write to its own account at all
    sts = as_hub(sandbox, hub, "sts")
    admin = f"arn:aws:iam::{SPOKE_ACCOUNT}:role/test"
    assert "sts:AssumeRole" in refused(sts.assume_role, RoleArn=admin, RoleSessionName="escalate")
    refused(sts.assume_role, RoleArn=f"arn:aws:iam::{HUB_ACCOUNT}:role/test", RoleSessionName="escalate")
    hub_iam = as_hub(sandbox, hub, "iam")
    assert "iam:CreateRole" in refused(
        hub_iam.create_role, RoleName="Admin", AssumeRolePolicyDocument=TRUST_ANYONE_HERE
    )
    refused(
        hub_iam.put_role_policy,
        RoleName="defender-operator-hub",
        PolicyName="more",
        PolicyDocument='{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}',
    )
    refused(as_hub(sandbox, hub, "cloudformation").list_stacks)

    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "spoke", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "spoke", timeout=120)
    assert [s["StackName"] for s in stacks_of(sandbox, SPOKE_ACCOUNT)] == ["defender-operator-setup"]
    providers = aws_in(sandbox, SPOKE_ACCOUNT, "iam").list_open_id_connect_providers()[
        "OpenIDConnectProviderList"
    ]
    assert providers == []
