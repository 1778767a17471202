"""What an account's administrator does before the operator arrives: an administrator role for the tests (``test``,
the role :func:`.onboarding.aws_in` assumes) and the shipped setup templates deployed as stacks."""

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from defender_operator.sandbox import Sandbox

from .clouds import aws_control
from .kube import wait_for
from .onboarding import aws_in
from .paths import REPO

TRUST_ANYONE_HERE = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
    }
)


def ensure_role(iam: Any, name: str) -> None:
    """A role anyone in the sandbox may assume (the emulator does not check trust policies anyway)."""
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=TRUST_ANYONE_HERE)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "EntityAlreadyExists":
            raise


def administrator(sandbox: Sandbox, account: str) -> None:
    """The ``test`` role with AdministratorAccess, so the test itself passes the emulator's authorization."""
    iam = aws_in(sandbox, account, "iam")
    ensure_role(iam, "test")
    iam.attach_role_policy(RoleName="test", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")


def operator_role(sandbox: Sandbox, account: str, document: str) -> None:
    """The ``test`` administrator role, and the operator's role ``defender-onboarding`` holding only the checked-in
    policy ``docs/<document>``."""
    administrator(sandbox, account)
    iam = aws_in(sandbox, account, "iam")
    ensure_role(iam, "defender-onboarding")
    policy = (REPO / "docs" / document).read_text()
    iam.put_role_policy(RoleName="defender-onboarding", PolicyName="defender-operator", PolicyDocument=policy)


def deployed(
    sandbox: Sandbox, account: str, stack_name: str, template: str, **parameters: str
) -> dict[str, str]:
    """Deploy ``deploy/aws/<template>`` as ``stack_name`` once (an administrator's step); its outputs."""
    administrator(sandbox, account)
    cloudformation = aws_in(sandbox, account, "cloudformation")
    live = {
        s["StackName"]
        for s in cloudformation.list_stacks()["StackSummaries"]
        if s["StackStatus"] == "CREATE_COMPLETE"
    }
    if stack_name not in live:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=(REPO / "deploy" / "aws" / template).read_text(),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_NAMED_IAM"],
        )

    def settled() -> dict[str, Any] | None:
        stack: dict[str, Any] = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
        return None if stack["StackStatus"].endswith("_IN_PROGRESS") else stack

    stack = wait_for(settled, 30, f"the stack {stack_name}")
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    return {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}


def refused(call: Any, **kwargs: Any) -> str:
    """IAM's refusal of a call (AccessDenied), its message."""
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert info.value.response["Error"]["Code"] == "AccessDenied", info.value.response
    return str(info.value.response["Error"]["Message"])


def enforce(sandbox: Sandbox, *accounts: str) -> None:
    """From now on the emulator authorizes every request of these accounts' principals (none: stop)."""
    aws_control(sandbox, "/_sandbox/config", {"enforceIamAccounts": list(accounts)})


def ec2_instance(sandbox: Sandbox, account: str, profile: str | None = None) -> str:
    """A running EC2 instance in ``account`` (us-east-1), with the instance profile ``profile`` if given."""
    ec2 = aws_in(sandbox, account, "ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    extra = {"IamInstanceProfile": {"Name": profile}} if profile else {}
    instance: str = ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, **extra)["Instances"][0][
        "InstanceId"
    ]
    return instance


def instance_profile(sandbox: Sandbox, account: str, name: str, policy_arn: str | None) -> None:
    """An instance profile ``name`` whose role ``name`` has the managed policy ``policy_arn`` (or none)."""
    iam = aws_in(sandbox, account, "iam")
    ensure_role(iam, name)
    if policy_arn:
        iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
    iam.create_instance_profile(InstanceProfileName=name)
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
