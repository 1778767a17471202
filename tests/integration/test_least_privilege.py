"""The operator under exactly the documented IAM policy (docs/operator-iam-policy.json), with the AWS emulator
authorizing every request of the account's IAM principals and every IAM call CloudFormation makes for them
(sandbox/aws/authorization.py): onboarding reaches Ready and cleanup removes everything, and the same identity is
refused what the policy must not allow (issue 11, point 4, as far as the emulator can check)."""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from defender_operator.sandbox import Sandbox
from tests.support.clouds import aws_client, aws_control
from tests.support.kube import apply, kubectl, wait_for
from tests.support.onboarding import aws_in, connector, manifest, stacks_of
from tests.support.operator import OperatorProcess, module_operator, wait_condition, wait_gone
from tests.support.paths import REPO

pytestmark = pytest.mark.integration

ACCOUNT = "400011112222"
OPERATOR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/defender-onboarding"
TRUST_ANYONE_HERE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
)


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "least-privilege-operator") as running:
        yield running


@pytest.fixture
def enforced(sandbox: Sandbox) -> Iterator[None]:
    """ACCOUNT with an administrator role for the test (``test``, as aws_in assumes) and the operator's role holding
    only the documented policy; from then on every request of ACCOUNT's principals is authorized."""
    iam = aws_in(sandbox, ACCOUNT, "iam")
    for role in ("test", "defender-onboarding"):
        try:
            iam.create_role(RoleName=role, AssumeRolePolicyDocument=TRUST_ANYONE_HERE)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "EntityAlreadyExists":
                raise
    iam.attach_role_policy(RoleName="test", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")
    documented = (REPO / "docs" / "operator-iam-policy.json").read_text()
    iam.put_role_policy(
        RoleName="defender-onboarding", PolicyName="defender-operator", PolicyDocument=documented
    )
    aws_control(sandbox, "/_sandbox/config", {"enforceIamAccounts": [ACCOUNT]})
    try:
        yield
    finally:
        aws_control(sandbox, "/_sandbox/config", {"enforceIamAccounts": []})


def as_operator(sandbox: Sandbox, service: str) -> Any:
    """A client with the operator's identity in ACCOUNT (the role it assumes there)."""
    creds = aws_client(sandbox, "sts").assume_role(RoleArn=OPERATOR_ROLE, RoleSessionName="probe")[
        "Credentials"
    ]
    return boto3.client(
        service,
        endpoint_url=sandbox.aws_endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )


def refused(call: Any, **kwargs: Any) -> str:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["Error"]["Code"] == "AccessDenied", info.value.response
    return str(info.value.response["Error"]["Message"])


def test_every_plan_onboards_and_cleans_up_under_the_documented_policy_alone(
    sandbox: Sandbox, kubeconfig: Any, operator: OperatorProcess, namespace: str, enforced: None
) -> None:
    m = manifest(namespace, "least", account=ACCOUNT, plans={"cspm": {"enabled": True}})
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "least", "Ready", "True", timeout=120)
    assert obj["status"]["aws"]["stackStatus"] in ("CREATE_COMPLETE", "UPDATE_COMPLETE")
    assert connector(sandbox, m, "least").status_code == 200
    # the emulator did authorize: the operator's own identity cannot read what its policy leaves out
    refused(as_operator(sandbox, "iam").list_roles)
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "least", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "least", timeout=120)
    assert stacks_of(sandbox, ACCOUNT) == []
    providers = aws_in(sandbox, ACCOUNT, "iam").list_open_id_connect_providers()["OpenIDConnectProviderList"]
    assert providers == []


def test_the_documented_policy_refuses_roles_attachments_providers_and_stacks_outside_defender(
    sandbox: Sandbox, enforced: None
) -> None:
    iam = as_operator(sandbox, "iam")
    message = refused(iam.create_role, RoleName="Admin", AssumeRolePolicyDocument=TRUST_ANYONE_HERE)
    assert f"arn:aws:iam::{ACCOUNT}:role/Admin" in message and "iam:CreateRole" in message
    name = f"DefenderForCloud-Probe{uuid.uuid4().hex[:6]}"
    iam.create_role(
        RoleName=name, AssumeRolePolicyDocument=TRUST_ANYONE_HERE
    )  # a Defender role name: allowed
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    assert "iam:AttachRolePolicy" in refused(iam.attach_role_policy, RoleName=name, PolicyArn=admin)
    iam.attach_role_policy(
        RoleName=name, PolicyArn="arn:aws:iam::aws:policy/SecurityAudit"
    )  # one Defender uses
    refused(
        iam.create_open_id_connect_provider,
        Url="https://token.actions.githubusercontent.com",
        ClientIDList=["sts.amazonaws.com"],
        ThumbprintList=["6938fd4d98bab03faadb97b34396831e3780aea1"],
    )
    cloudformation = as_operator(sandbox, "cloudformation")
    empty = {"Resources": {"Nothing": {"Type": "AWS::CloudFormation::WaitConditionHandle"}}}
    refused(cloudformation.create_stack, StackName="NotDefender", TemplateBody=json.dumps(empty))
    iam.detach_role_policy(RoleName=name, PolicyArn="arn:aws:iam::aws:policy/SecurityAudit")
    iam.delete_role(RoleName=name)


def test_cloudformation_acts_with_the_callers_permissions(sandbox: Sandbox, enforced: None) -> None:
    """A stack named like Defender's cannot carry what the caller may not do itself: the role with
    AdministratorAccess fails (CREATE_FAILED with IAM's AccessDenied) and the stack rolls back."""
    admin_role = {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "RoleName": "DefenderForCloud-Escalation",
            "AssumeRolePolicyDocument": json.loads(TRUST_ANYONE_HERE),
            "ManagedPolicyArns": ["arn:aws:iam::aws:policy/AdministratorAccess"],
        },
    }
    cloudformation = as_operator(sandbox, "cloudformation")
    cloudformation.create_stack(
        StackName="DefenderForCloud-Escalation",
        TemplateBody=json.dumps({"Resources": {"Escalation": admin_role}}),
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )

    def settled() -> str | None:
        status = cloudformation.describe_stacks(StackName="DefenderForCloud-Escalation")["Stacks"][0][
            "StackStatus"
        ]
        return None if status.endswith("_IN_PROGRESS") else str(status)

    assert wait_for(settled, 30, "the stack to settle") == "ROLLBACK_COMPLETE"
    events = cloudformation.describe_stack_events(StackName="DefenderForCloud-Escalation")["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "CREATE_FAILED"]
    assert failed and "iam:AttachRolePolicy" in failed[0]["ResourceStatusReason"]
    roles = [r["RoleName"] for r in aws_in(sandbox, ACCOUNT, "iam").list_roles()["Roles"]]
    assert "DefenderForCloud-Escalation" not in roles
    cloudformation.delete_stack(StackName="DefenderForCloud-Escalation")
