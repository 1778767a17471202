"""The documented permissions of the operator cover everything the code calls, and the docs name every reason."""

import ast
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render.account_setup import SetupOptions, delegated_admin_policy, operator_policy
from defender_operator.render.catalog import catalog
from defender_operator.render.cloudformation import stack_template
from tests.support.manifests import base_manifest
from tests.support.paths import REPO

PACKAGE = REPO / "operator" / "defender_operator"
# Which AWS service a client variable in the adapters talks to.
CLIENT_SERVICES = {
    "cf": "cloudformation",
    "cloudformation": "cloudformation",
    "iam": "iam",
    "sts": "sts",
    "organizations": "organizations",
    "eks": "eks",
    "ec2": "ec2",
    "ssm": "ssm",
}
# What CloudFormation does with the caller's credentials for each resource type the templates use.
RESOURCE_ACTIONS = {
    "AWS::IAM::Role": {
        "iam:CreateRole",
        "iam:DeleteRole",
        "iam:GetRole",
        "iam:UpdateAssumeRolePolicy",
        "iam:UpdateRoleDescription",
        "iam:TagRole",
        "iam:UntagRole",
        "iam:PutRolePolicy",
        "iam:DeleteRolePolicy",
        "iam:GetRolePolicy",
        "iam:ListRolePolicies",
        "iam:AttachRolePolicy",
        "iam:DetachRolePolicy",
        "iam:ListAttachedRolePolicies",
    },
    "AWS::SSM::Document": {
        "ssm:CreateDocument",
        "ssm:UpdateDocument",
        "ssm:DeleteDocument",
        "ssm:DescribeDocument",
        "ssm:AddTagsToResource",
    },
    "AWS::SSM::Association": {
        "ssm:CreateAssociation",
        "ssm:UpdateAssociation",
        "ssm:DeleteAssociation",
        "ssm:DescribeAssociation",
        "iam:PassRole",
    },
}
ARM_ACTIONS = {
    "GetSecurityConnector": "Microsoft.Security/securityConnectors/read",
    "PutSecurityConnector": "Microsoft.Security/securityConnectors/write",
    "DeleteSecurityConnector": "Microsoft.Security/securityConnectors/delete",
    "ListHealthReports": "Microsoft.Security/healthReports/read",
    "ListPricings": "Microsoft.Security/pricings/read",
    "ListSecurityConnectors": "Microsoft.Security/securityConnectors/read",
    "GetSubscription": "Microsoft.Resources/subscriptions/read",
}


def _camel(operation: str) -> str:
    special = {"open_id_connect": "OpenIDConnect", "client_id": "ClientID"}
    for snake, camel in special.items():
        operation = operation.replace(snake, camel.lower() + "_")
    words = [w for w in operation.split("_") if w]
    out = "".join(w[0].upper() + w[1:] for w in words)
    return out.replace("Openidconnect", "OpenIDConnect").replace("Clientid", "ClientID")


def aws_calls(paths: Iterable[Path] | None = None) -> set[str]:
    """Every ``call(<client>, "<operation>")`` in the package (or in ``paths``), as an IAM action; in stackset.py
    also its ``self._call("<operation>")`` and ``self._pages(...)``, CloudFormation calls with ``CallAs``."""
    actions = set()
    for path in PACKAGE.rglob("*.py") if paths is None else paths:
        if "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                path.name == "stackset.py"
                and isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("_call", "_pages")
                and isinstance(node.args[0], ast.Constant)
            ):
                actions.add(f"cloudformation:{_camel(node.args[0].value)}")
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) in ("call", "pages")
                and len(node.args) >= 2
            ):
                target, operation = node.args[0], node.args[1]
                if not isinstance(operation, ast.Constant):
                    # pages() passing its own argument on, StackSets' wrappers theirs
                    assert path.name in ("api.py", "stackset.py"), ast.dump(node)
                    continue
                name = ast.unparse(target).split(".")[-1]
                if isinstance(target, ast.Call):  # call(clients.client("sts", region), ...)
                    name = next(
                        a.value
                        for a in target.args
                        if isinstance(a, ast.Constant) and isinstance(a.value, str)
                    )
                actions.add(f"{CLIENT_SERVICES[name]}:{_camel(operation.value)}")
    return actions


def policy_actions() -> set[str]:
    """The policy's actions once it may assume roles (``aws-setup --assume-role``: none by default)."""
    policy = operator_policy(SetupOptions(assume_roles=("defender-onboarding",)))
    return {action for statement in policy["Statement"] for action in statement["Action"]}


def test_the_iam_policy_covers_every_aws_call() -> None:
    calls = aws_calls()
    assert {
        "sts:GetCallerIdentity",
        "cloudformation:CreateStack",
        "iam:AddClientIDToOpenIDConnectProvider",
    } <= calls
    assert calls - policy_actions() == set()


def test_the_delegated_administrators_policy_covers_every_stackset_and_organizations_call() -> None:
    """Issue 28, build 4: a delegated administrator's identity makes the StackSet and Organizations calls only."""
    calls = aws_calls([PACKAGE / "aws" / "stackset.py"]) | {"sts:GetCallerIdentity", "sts:AssumeRole"}
    assert {
        "cloudformation:CreateStackSet",
        "cloudformation:DescribeStackSetOperation",
        "organizations:ListRoots",
    } <= calls
    policy = delegated_admin_policy(SetupOptions(assume_roles=("defender-onboarding",)))
    assert calls - {action for statement in policy["Statement"] for action in statement["Action"]} == set()


def test_the_iam_policy_covers_what_cloudformation_does_for_the_templates() -> None:
    spec = AWSConnectorSpec.model_validate({**base_manifest()["spec"], "plans": {"cspm": {"enabled": True}}})
    types = {r["Type"] for r in stack_template(spec)["Resources"].values()}
    assert types <= set(RESOURCE_ACTIONS)
    needed = set().union(*(RESOURCE_ACTIONS[t] for t in types))
    assert needed - policy_actions() == set()


def test_the_azure_role_covers_every_arm_call() -> None:
    source = (PACKAGE / "azure" / "connector.py").read_text()
    operations = set(re.findall(r'self\._send\(\s*"(\w+)"', source))
    assert operations == set(ARM_ACTIONS)
    role = json.loads((REPO / "docs" / "operator-azure-role.json").read_text())
    assert {ARM_ACTIONS[o] for o in operations} == set(role["Actions"])


def _reasons() -> set[str]:
    """Every condition reason the reconciler can set (string literals passed as reasons)."""
    reasons = set()
    for path in (PACKAGE / "reconcile").glob("*.py"):
        reasons |= _reasons_in(path)
    for path in (PACKAGE / "aws" / "api.py", PACKAGE / "azure" / "connector.py", PACKAGE / "credentials.py"):
        reasons |= _reasons_in(path)
    return reasons


def _reasons_in(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None)
        if name == "Verdict" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            found.add(node.args[1].value)
        if (
            name in ("TerminalError", "RetryableError")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            found.add(node.args[0].value)
    return found


def test_troubleshooting_explains_every_reason() -> None:
    reasons = _reasons()
    assert {"StackCreateFailed", "ConnectorConflict", "AccountMismatch", "AWSThrottled"} <= reasons
    doc = (REPO / "docs" / "troubleshooting.md").read_text()
    missing = sorted(r for r in reasons if f"`{r}`" not in doc)
    assert missing == []


# learn.microsoft.com/azure/defender-for-cloud/containers-permissions, read 2026-11-30: the actions Microsoft lists
# for the Containers K8s role ("AzureDefenderKubernetesRole" there) and the agentless-discovery role.
EKS_CLUSTER_ACTIONS = [
    "eks:UpdateClusterConfig",
    "eks:DescribeCluster",
    "eks:CreateAccessEntry",
    "eks:ListAccessEntries",
    "eks:AssociateAccessPolicy",
    "eks:ListAssociatedAccessPolicies",
]
MICROSOFT_CONTAINERS_ACTIONS = {
    "containersK8s": [
        "logs:PutSubscriptionFilter",
        "logs:DescribeSubscriptionFilters",
        "logs:DescribeLogGroups",
        "logs:PutRetentionPolicy",
        "firehose:*",
        "iam:PassRole",
        *EKS_CLUSTER_ACTIONS,
        "sqs:*",
        "s3:*",
    ],
    "k8sAgentlessDiscovery": EKS_CLUSTER_ACTIONS,
}
# The same page, "AWS least privileged access" (read 2026-12-04): the discovery role's least-privilege actions.
MICROSOFT_LEAST_PRIVILEGE_DISCOVERY = ["eks:DescribeCluster", "eks:UpdateClusterConfig"]


def test_the_containers_roles_have_every_action_microsoft_lists_today() -> None:
    from defender_operator.api.spec import AWSConnectorSpec
    from defender_operator.render.iam import role_documents
    from tests.support.manifests import base_manifest

    def granted(role: Any) -> set[str]:
        return {
            action
            for policy in role.inline_policies.values()
            for statement in policy["Statement"]
            if statement["Effect"] == "Allow"
            for action in (
                [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
            )
        }

    for access in ("Default", "LeastPrivilege"):
        spec = AWSConnectorSpec.model_validate({**base_manifest()["spec"], "access": access})
        roles = {r.key: r for r in role_documents(spec)}
        for key, wanted in MICROSOFT_CONTAINERS_ACTIONS.items():
            if (key, access) == ("k8sAgentlessDiscovery", "LeastPrivilege"):
                wanted = MICROSOFT_LEAST_PRIVILEGE_DISCOVERY
            assert [a for a in wanted if a not in granted(roles[key])] == [], (key, access)
    # Least privilege: exactly Microsoft's least-privilege list for the discovery role (issue 28), no access entries.
    spec = AWSConnectorSpec.model_validate({**base_manifest()["spec"], "access": "LeastPrivilege"})
    discovery = next(r for r in role_documents(spec) if r.key == "k8sAgentlessDiscovery")
    assert granted(discovery) == set(MICROSOFT_LEAST_PRIVILEGE_DISCOVERY)


def test_the_iam_policy_attaches_only_the_managed_policies_the_catalog_uses() -> None:
    """A role name pattern alone would let the operator's identity attach AdministratorAccess to a role it creates."""
    policy = operator_policy()
    attach = [s for s in policy["Statement"] if "iam:AttachRolePolicy" in s["Action"]]
    assert len(attach) == 1
    allowed = set(attach[0]["Condition"]["ArnEquals"]["iam:PolicyARN"])
    used = {
        f"arn:aws:iam::aws:policy/{name}"
        for role in catalog().roles.values()
        for names in role.managed_policies.values()
        for name in names
    }
    assert allowed == used
