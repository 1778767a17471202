"""The operator under exactly the documented IAM policies, with the AWS emulator authorizing every request of the
account's IAM principals and every IAM call CloudFormation makes for them (sandbox/aws/authorization.py): onboarding
reaches Ready and cleanup removes everything, and the same identity is refused what the policy must not allow
(issue 11, point 4, as far as the emulator can check). Two policies: docs/operator-iam-policy.json for roles with
inline policies, and the hardened one of the account setup stack (deploy/aws/account-setup.json) for
``rolePolicies: Managed``."""

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.account_admin import (
    TRUST_ANYONE_HERE,
    deployed,
    enforce,
    operator_role,
    refused,
)
from tests.support.kube import apply, condition, get_object, kubectl, wait_for
from tests.support.onboarding import assumed, aws_in, connector, manifest, stacks_of
from tests.support.operator import OperatorProcess, module_operator, wait_condition, wait_gone

pytestmark = pytest.mark.integration

ACCOUNT = "400011112222"
OPERATOR_ROLE = f"arn:aws:iam::{ACCOUNT}:role/defender-onboarding"


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "least-privilege-operator") as running:
        yield running


@pytest.fixture
def enforced(sandbox: Sandbox) -> Iterator[None]:
    """ACCOUNT with an administrator role for the test (``test``, as aws_in assumes) and the operator's role holding
    only the documented policy; from then on every request of ACCOUNT's principals is authorized."""
    operator_role(sandbox, ACCOUNT, "operator-iam-policy.json")
    enforce(sandbox, ACCOUNT)
    try:
        yield
    finally:
        enforce(sandbox)


def as_operator(sandbox: Sandbox, service: str, role: str = OPERATOR_ROLE) -> Any:
    """A client with the operator's identity (the role it assumes in the account)."""
    return assumed(sandbox, role, service)


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


SETUP_ACCOUNT = "400011113333"
SETUP_ROLE = f"arn:aws:iam::{SETUP_ACCOUNT}:role/defender-operator"


@pytest.fixture
def set_up(sandbox: Sandbox) -> Iterator[None]:
    """SETUP_ACCOUNT as its administrator prepares it: the setup stack deployed (by an administrator role), then
    every request of the account's principals authorized."""
    outputs = deployed(
        sandbox,
        SETUP_ACCOUNT,
        "defender-operator-setup",
        "account-setup.json",
        OperatorPrincipalArn="arn:aws:iam::123456789012:role/x",
    )
    assert outputs["OperatorRoleArn"] == SETUP_ROLE
    enforce(sandbox, SETUP_ACCOUNT)
    try:
        yield
    finally:
        enforce(sandbox)


def test_managed_role_policies_onboard_under_the_hardened_policy_and_inline_ones_cannot(
    sandbox: Sandbox, kubeconfig: Any, operator: OperatorProcess, namespace: str, set_up: None
) -> None:
    m = manifest(namespace, "managed", account=SETUP_ACCOUNT, plans={"cspm": {"enabled": True}})
    m["spec"]["aws"]["credentials"] = {"roleArn": SETUP_ROLE}
    m["spec"]["aws"]["rolePolicies"] = "Managed"
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "managed", "Ready", "True", timeout=120)
    iam = aws_in(sandbox, SETUP_ACCOUNT, "iam")
    roles = [
        r["RoleName"] for r in iam.list_roles()["Roles"] if r["RoleName"] not in ("test", "defender-operator")
    ]
    assert roles
    for role in roles:
        assert iam.list_role_policies(RoleName=role)["PolicyNames"] == []
        attached = [
            p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
        ]
        assert attached and all(":aws:policy/" in a or "/defender-for-cloud/" in a for a in attached), (
            attached
        )

    # the same identity cannot give a Defender role more than the setup stack's policies
    probe = as_operator(sandbox, "iam", SETUP_ROLE)
    document = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    )
    assert "explicit deny" in refused(
        probe.put_role_policy, RoleName=roles[0], PolicyName="more", PolicyDocument=document
    )
    admin = "arn:aws:iam::aws:policy/AdministratorAccess"
    refused(probe.attach_role_policy, RoleName=roles[0], PolicyArn=admin)
    setup_policy = f"arn:aws:iam::{SETUP_ACCOUNT}:policy/defender-for-cloud/CspmMonitorAwsDenyPolicy"
    refused(probe.create_policy_version, PolicyArn=setup_policy, PolicyDocument=document, SetAsDefault=True)

    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "managed", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "managed", timeout=120)
    assert [s["StackName"] for s in stacks_of(sandbox, SETUP_ACCOUNT)] == ["defender-operator-setup"]

    # inline policies: CloudFormation acts for the same identity, and IAM refuses; the object says why
    m["spec"]["aws"]["rolePolicies"] = "Inline"
    m["metadata"]["name"] = "inline"
    assert apply(kubeconfig, m).returncode == 0

    def refusal() -> str | None:
        ready = condition(get_object(kubeconfig, namespace, "inline"), "Ready")
        return ready["message"] if ready and "iam:PutRolePolicy" in ready.get("message", "") else None

    message = wait_for(refusal, 120, "Ready to name the refused iam:PutRolePolicy")
    assert "explicit deny" in message and "set spec.aws.rolePolicies: Managed" in message, message
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "inline", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "inline", timeout=120)


NAMED_ACCOUNT = "400011114444"


def test_the_setup_stack_lets_the_operator_assume_only_the_roles_its_parameter_names(
    sandbox: Sandbox, set_up: None
) -> None:
    """Issue 28: the checked-in setup template serves a management account without regenerating it: its
    ``AssumableRoles`` parameter adds a policy allowing ``sts:AssumeRole`` on the roles it names; left empty (as
    SETUP_ACCOUNT's is) the operator's role may assume none, not even another account's administrator role."""
    member = "arn:aws:iam::210987654321:role/defender-onboarding"
    member_admin = "arn:aws:iam::210987654321:role/OrganizationAccountAccessRole"
    outputs = deployed(
        sandbox,
        NAMED_ACCOUNT,
        "defender-operator-setup",
        "account-setup.json",
        OperatorPrincipalArn="arn:aws:iam::123456789012:role/x",
        AssumableRoles="arn:aws:iam::*:role/defender-onboarding",
    )
    enforce(sandbox, SETUP_ACCOUNT, NAMED_ACCOUNT)
    unnamed = as_operator(sandbox, "sts", SETUP_ROLE)
    for role in (member, member_admin):
        assert "sts:AssumeRole" in refused(unnamed.assume_role, RoleArn=role, RoleSessionName="probe")
    named = as_operator(sandbox, "sts", outputs["OperatorRoleArn"])
    assert named.assume_role(RoleArn=member, RoleSessionName="probe")["AssumedRoleUser"]["Arn"].startswith(
        "arn:aws:sts::210987654321:assumed-role/defender-onboarding/"
    )
    assert "sts:AssumeRole" in refused(named.assume_role, RoleArn=member_admin, RoleSessionName="probe")
    policies = aws_in(sandbox, NAMED_ACCOUNT, "iam").list_role_policies(RoleName="defender-operator")
    assert sorted(policies["PolicyNames"]) == ["defender-operator", "defender-operator-assume-roles"]
