"""The operator's own IAM policy, and the setup stack an account's administrator deploys once per account.

The setup stack holds what the operator's identity must not be able to change: the catalog's policies as customer
managed policies under ``/defender-for-cloud/`` (for ``spec.aws.rolePolicies: Managed``) and the operator's role
with the hardened policy. Under that policy the identity may create roles only with Defender's names, attach only
the AWS managed policies Defender uses and the setup stack's own, and never write an inline policy or a policy
version; so the most its holder can obtain is the union of Defender's roles (docs/design-decisions.md, "The
operator's own AWS permissions").
"""

import copy
import json
from functools import cache
from importlib import resources
from typing import Any

from ..api.spec import RoleNames
from .catalog import MANAGED_POLICY_PATH, catalog
from .cloudformation import TEMPLATE_VERSION
from .iam import MANAGED_BY_TAG, POLICY_VERSION
from .placeholders import substitute

_PSEUDO = {"partition": "${AWS::Partition}", "account": "${AWS::AccountId}", "dnsSuffix": "${AWS::URLSuffix}"}
_SETUP_POLICIES = "arn:${AWS::Partition}:iam::${AWS::AccountId}:policy" + MANAGED_POLICY_PATH + "*"


@cache
def _operator_policy_text() -> str:
    return resources.files(__package__).joinpath("data/operator-iam-policy.json").read_text()


def operator_policy() -> dict[str, Any]:
    """The operator's IAM policy for roles with inline policies (``rolePolicies: Inline``, the default)."""
    policy: dict[str, Any] = json.loads(_operator_policy_text())
    return policy


def managed_operator_policy() -> dict[str, Any]:
    """The hardened policy (``rolePolicies: Managed``), as CloudFormation: no inline policies at all, attachments of
    the setup stack's policies besides the AWS managed ones, and explicit denies that hold whatever else the identity
    is given."""
    policy = copy.deepcopy(operator_policy())
    for statement in policy["Statement"]:
        if statement["Sid"] == "RolesCreatedByTheStack":
            statement["Action"] = [a for a in statement["Action"] if a != "iam:PutRolePolicy"]
        if statement["Sid"] == "OnlyTheManagedPoliciesDefenderUses":
            arns = statement["Condition"]["ArnEquals"].pop("iam:PolicyARN")
            statement["Condition"] = {"ArnLike": {"iam:PolicyARN": [*arns, {"Fn::Sub": _SETUP_POLICIES}]}}
    policy["Statement"] += [
        {
            "Sid": "NoInlinePolicies",
            "Effect": "Deny",
            "Action": ["iam:PutRolePolicy", "iam:PutUserPolicy", "iam:PutGroupPolicy"],
            "Resource": "*",
        },
        {
            "Sid": "TheSetupPoliciesStayAsTheAdministratorWroteThem",
            "Effect": "Deny",
            "Action": [
                "iam:CreatePolicy",
                "iam:CreatePolicyVersion",
                "iam:DeletePolicy",
                "iam:DeletePolicyVersion",
                "iam:SetDefaultPolicyVersion",
            ],
            "Resource": {"Fn::Sub": _SETUP_POLICIES},
        },
    ]
    return policy


def _logical_id(name: str) -> str:
    """SSMHostMgmt-ExplorerSetup -> SSMHostMgmtExplorerSetupPolicy (CloudFormation ids are alphanumeric)."""
    stem = "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-") if part)
    return stem if stem.endswith("Policy") else stem + "Policy"


def _managed_policies() -> dict[str, Any]:
    """Every catalog policy of every access level, filled with the default role names."""
    known = {f"role:{key}": name for key, name in RoleNames().model_dump(by_alias=True).items()}
    out: dict[str, Any] = {}
    for role in catalog().roles.values():
        for policy in role.policies:
            document = {"Version": POLICY_VERSION, "Statement": policy.statements}
            out[_logical_id(policy.managed_name)] = {
                "Type": "AWS::IAM::ManagedPolicy",
                "Properties": {
                    "ManagedPolicyName": policy.managed_name,
                    "Path": MANAGED_POLICY_PATH,
                    "Description": f"Microsoft Defender for Cloud - {role.description}",
                    "PolicyDocument": substitute(document, known, _PSEUDO, lambda s: {"Fn::Sub": s}),
                },
            }
    return out


def account_setup_template() -> dict[str, Any]:
    """CloudFormation for one account (deploy it with a StackSet to every account): the operator's role, trusted
    by the principal the operator runs as (with an external id when given), and the catalog's managed policies."""
    return {
        "AWSTemplateFormatVersion": TEMPLATE_VERSION,
        "Description": "defender-operator account setup: the operator's role and Defender's policies (managed)",
        "Parameters": {
            "OperatorPrincipalArn": {
                "Type": "String",
                "Description": "ARN of the identity the operator runs as (its IRSA or hub role)",
                "AllowedPattern": "arn:aws[a-z-]*:iam::[0-9]{12}:role/.+",
            },
            "ExternalId": {
                "Type": "String",
                "Default": "",
                "Description": "External id the operator must present (spec.aws.credentials.externalId); empty: none",
            },
            "OperatorRoleName": {"Type": "String", "Default": "defender-operator"},
        },
        "Conditions": {"HasExternalId": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ExternalId"}, ""]}]}},
        "Resources": {
            "OperatorRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "OperatorRoleName"},
                    "Description": "defender-operator: onboards this account into Microsoft Defender for Cloud",
                    "AssumeRolePolicyDocument": {
                        "Version": POLICY_VERSION,
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": {"Ref": "OperatorPrincipalArn"}},
                                "Action": "sts:AssumeRole",
                                "Condition": {
                                    "Fn::If": [
                                        "HasExternalId",
                                        {"StringEquals": {"sts:ExternalId": {"Ref": "ExternalId"}}},
                                        {"Ref": "AWS::NoValue"},
                                    ]
                                },
                            }
                        ],
                    },
                    "Policies": [
                        {"PolicyName": "defender-operator", "PolicyDocument": managed_operator_policy()}
                    ],
                    "Tags": [MANAGED_BY_TAG],
                },
            },
            **_managed_policies(),
        },
        "Outputs": {"OperatorRoleArn": {"Value": {"Fn::GetAtt": ["OperatorRole", "Arn"]}}},
    }
