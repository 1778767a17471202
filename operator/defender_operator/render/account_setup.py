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
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

from ..api.spec import RoleNames
from .catalog import MANAGED_POLICY_PATH, catalog
from .cloudformation import PSEUDO, TEMPLATE_VERSION
from .iam import MANAGED_BY_TAG, POLICY_VERSION
from .placeholders import substitute

# The setup stack's policies, as a placeholder ARN pattern each renderer fills for its account.
SETUP_POLICIES = "arn:{partition}:iam::{account}:policy" + MANAGED_POLICY_PATH + "*"
OPERATOR_ROLE_NAME = "defender-operator"
ASSUMABLE_ROLES_POLICY = "defender-operator-assume-roles"


@dataclass(frozen=True)
class SetupPolicy:
    name: str
    description: str
    document: dict[str, Any]  # with the deferred placeholders {partition}, {account}, {dnsSuffix}


@cache
def _operator_policy_text() -> str:
    return resources.files(__package__).joinpath("data/operator-iam-policy.json").read_text()


@dataclass(frozen=True)
class SetupOptions:
    """What the administrator narrows the operator's identity to (``aws-setup`` flags).

    ``ciem_tenants``: Entra tenants CIEM may trust besides Microsoft's issuer (``--ciem-tenant``); a provider for any
    tenant would let whoever reaches the operator make a role trust an identity of their own tenant.
    ``assume_roles``: the roles the operator may assume (``--assume-role``, a role name or an ARN pattern), which
    should be the ``aws.roleArns`` and ``aws.memberRoleNames`` of the ClusterOnboardingPolicies. None by default:
    an identity that onboards its own account assumes nothing, and ``sts:AssumeRole`` on ``*`` would reach every
    role that trusts the account (in a management account, ``OrganizationAccountAccessRole`` in every member, which
    is administrator there: docs/production.md); ``*`` says so explicitly."""

    ciem_tenants: tuple[str, ...] = ()
    assume_roles: tuple[str, ...] = ()


def assumable(role: str) -> str:
    """An ``--assume-role`` value as a Resource: a bare role name is that role in any account; ``*`` any role."""
    return role if role.startswith("arn:") or role == "*" else f"arn:aws:iam::*:role/{role}"


ASSUME_ROLES_SID = "AssumeOnboardingRoles"


def assume_roles_statement(resource: Any) -> dict[str, Any]:
    """The one statement that lets the operator's identity assume roles: those of ``resource``."""
    return {"Sid": ASSUME_ROLES_SID, "Effect": "Allow", "Action": ["sts:AssumeRole"], "Resource": resource}


def assumable_resource(options: SetupOptions) -> Any:
    """``--assume-role`` values as the statement's Resource (``*`` alone when any of them is ``*``)."""
    roles = sorted({assumable(r) for r in options.assume_roles})
    return "*" if "*" in roles else roles


def operator_policy(options: SetupOptions = SetupOptions()) -> dict[str, Any]:
    """The operator's IAM policy for roles with inline policies (``rolePolicies: Inline``, the default), narrowed by
    ``options``: identity providers for Microsoft's issuer and the named CIEM tenants, AssumeRole on the named roles."""
    policy: dict[str, Any] = json.loads(_operator_policy_text())
    for statement in policy["Statement"]:
        if statement["Sid"] == "IdentityProviders" and options.ciem_tenants:
            microsoft = statement["Resource"]
            prefix = microsoft.rsplit("sts.windows.net/", 1)[0]
            statement["Resource"] = [
                microsoft,
                *(f"{prefix}sts.windows.net/{t}/" for t in options.ciem_tenants),
            ]
    policy["Statement"] = [
        assume_roles_statement(assumable_resource(options)) if each["Sid"] == ASSUME_ROLES_SID else each
        for each in policy["Statement"]
        if each["Sid"] != ASSUME_ROLES_SID or options.assume_roles
    ]
    return policy


# What a delegated administrator's identity calls (organization.delegatedAdministratorAccountId): the StackSet with
# CallAs DELEGATED_ADMIN, the organization's accounts, and what CloudFormation reads with the caller's permissions to
# accept it as delegated administrator (organizations:ListDelegatedAdministrators: hashicorp/terraform-provider-aws
# #37069; CloudFormation User Guide, stacksets-orgs-delegated-admin.html).
DELEGATED_STACKSET_ACTIONS = (
    "cloudformation:DescribeStackSet",
    "cloudformation:ListStackInstances",
    "cloudformation:CreateStackSet",
    "cloudformation:UpdateStackSet",
    "cloudformation:DeleteStackSet",
    "cloudformation:CreateStackInstances",
    "cloudformation:DeleteStackInstances",
    "cloudformation:DescribeStackSetOperation",
    "cloudformation:ListStackSetOperationResults",
    "cloudformation:TagResource",
)


def delegated_admin_policy(options: SetupOptions = SetupOptions()) -> dict[str, Any]:
    """The whole IAM policy of the operator's identity in a delegated administrator account: Defender's StackSets by
    name, the organization's structure, and (``--assume-role``) the member role; no IAM, stack or EKS right at all,
    since nothing is written in the management account itself."""
    inline = {s["Sid"]: s for s in operator_policy(options)["Statement"]}
    stack_set_resources = [
        r for r in inline["Stack"]["Resource"] if ":stack/" not in r and ":changeSet/" not in r
    ]
    organizations = copy.deepcopy(inline["OrganizationRoot"])
    organizations["Action"] = sorted({*organizations["Action"], "organizations:ListDelegatedAdministrators"})
    statements = [
        inline["WhoAmI"],
        organizations,
        {
            "Sid": "DefendersStackSetsAsDelegatedAdministrator",
            "Effect": "Allow",
            "Action": list(DELEGATED_STACKSET_ACTIONS),
            "Resource": stack_set_resources,
        },
    ]
    if ASSUME_ROLES_SID in inline:
        statements.append(inline[ASSUME_ROLES_SID])
    return {"Version": POLICY_VERSION, "Statement": statements}


def managed_operator_policy(options: SetupOptions = SetupOptions()) -> dict[str, Any]:
    """The hardened policy (``rolePolicies: Managed``): no inline policies at all, attachments of the setup stack's
    policies besides the AWS managed ones, and explicit denies that hold whatever else the identity is given."""
    policy = copy.deepcopy(operator_policy(options))
    for statement in policy["Statement"]:
        if statement["Sid"] == "RolesCreatedByTheStack":
            statement["Action"] = [a for a in statement["Action"] if a != "iam:PutRolePolicy"]
        if statement["Sid"] == "OnlyTheManagedPoliciesDefenderUses":
            arns = statement["Condition"]["ArnEquals"].pop("iam:PolicyARN")
            statement["Condition"] = {"ArnLike": {"iam:PolicyARN": [*arns, SETUP_POLICIES]}}
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
            "Resource": SETUP_POLICIES,
        },
    ]
    return policy


def setup_policies() -> list[SetupPolicy]:
    """Every catalog policy of every access level, filled with the default role names."""
    known = {f"role:{key}": name for key, name in RoleNames().model_dump(by_alias=True).items()}
    keep = {name: "{" + name + "}" for name in ("partition", "account", "dnsSuffix")}
    return [
        SetupPolicy(
            name=policy.managed_name,
            description=f"Microsoft Defender for Cloud - {role.description}",
            document=substitute(
                {"Version": POLICY_VERSION, "Statement": policy.statements}, known, keep, lambda text: text
            ),
        )
        for role in catalog().roles.values()
        for policy in role.policies
    ]


def operator_trust(principal: Any, external_id: Any) -> dict[str, Any]:
    """Trust of the operator's role: the principal the operator runs as, presenting the external id."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": principal},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"sts:ExternalId": external_id}},
            }
        ],
    }


# --- CloudFormation --------------------------------------------------------------------------------------------------


def _cloudformation(value: Any) -> Any:
    return substitute(value, {}, PSEUDO, lambda text: {"Fn::Sub": text})


def _logical_id(name: str) -> str:
    """SSMHostMgmt-ExplorerSetup -> SSMHostMgmtExplorerSetupPolicy (CloudFormation ids are alphanumeric)."""
    stem = "".join(part[:1].upper() + part[1:] for part in name.replace("_", "-").split("-") if part)
    return stem if stem.endswith("Policy") else stem + "Policy"


ASSUMABLE_ROLES_DESCRIPTION = (
    "ARNs (or ARN patterns) of the roles the operator may assume: the aws.roleArns of your ClusterOnboardingPolicies, "
    "and each of their aws.memberRoleNames as arn:aws:iam::*:role/<name>; empty: none; * : every role that trusts "
    "this account (in a management account, OrganizationAccountAccessRole in every member)"
)


def assumable_default(options: SetupOptions) -> list[str]:
    """The ``--assume-role`` values as the default of the setup's parameter of assumable roles (empty: none). A list:
    Terraform's variable takes it as it is; CloudFormation's CommaDelimitedList joins it (an IAM role name may hold a
    comma, which only the Terraform form keeps whole)."""
    resource = assumable_resource(options) if options.assume_roles else []
    return ["*"] if resource == "*" else list(resource)


def without_assumable_roles(options: SetupOptions) -> SetupOptions:
    """The options for the role's main policy when the roles to assume are the setup's own parameter."""
    return replace(options, assume_roles=())


def account_setup_template(options: SetupOptions = SetupOptions()) -> dict[str, Any]:
    """CloudFormation for one account (deploy it with a StackSet to every account): the operator's role, trusted
    by the principal the operator runs as (with an external id when given), and the catalog's managed policies.
    The roles it may assume are a parameter (``AssumableRoles``, ``--assume-role`` its default), held in a policy
    of their own that exists only when the parameter names a role, so the checked-in template serves a management
    account too without regenerating it."""
    trust = operator_trust({"Ref": "OperatorPrincipalArn"}, {"Ref": "ExternalId"})
    statement = trust["Statement"][0]
    statement["Condition"] = {"Fn::If": ["HasExternalId", statement["Condition"], {"Ref": "AWS::NoValue"}]}
    policies = {
        _logical_id(policy.name): {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "ManagedPolicyName": policy.name,
                "Path": MANAGED_POLICY_PATH,
                "Description": policy.description,
                "PolicyDocument": _cloudformation(policy.document),
            },
        }
        for policy in setup_policies()
    }
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
            "OperatorRoleName": {"Type": "String", "Default": OPERATOR_ROLE_NAME},
            "AssumableRoles": {
                "Type": "CommaDelimitedList",
                "Default": ",".join(assumable_default(options)),
                "Description": ASSUMABLE_ROLES_DESCRIPTION,
            },
        },
        "Conditions": {
            "HasExternalId": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ExternalId"}, ""]}]},
            "MayAssumeRoles": {
                "Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "AssumableRoles"}]}, ""]}]
            },
        },
        "Resources": {
            "OperatorRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "OperatorRoleName"},
                    "Description": "defender-operator: onboards this account into Microsoft Defender for Cloud",
                    "AssumeRolePolicyDocument": trust,
                    "Policies": [
                        {
                            "PolicyName": "defender-operator",
                            "PolicyDocument": _cloudformation(
                                managed_operator_policy(without_assumable_roles(options))
                            ),
                        }
                    ],
                    "Tags": [MANAGED_BY_TAG],
                },
            },
            "AssumableRolesPolicy": {
                "Type": "AWS::IAM::Policy",
                "Condition": "MayAssumeRoles",
                "Properties": {
                    "PolicyName": ASSUMABLE_ROLES_POLICY,
                    "Roles": [{"Ref": "OperatorRole"}],
                    "PolicyDocument": {
                        "Version": POLICY_VERSION,
                        "Statement": [assume_roles_statement({"Ref": "AssumableRoles"})],
                    },
                },
            },
            **policies,
        },
        "Outputs": {"OperatorRoleArn": {"Value": {"Fn::GetAtt": ["OperatorRole", "Arn"]}}},
    }


# --- The hub: the identity the operator runs as, which may only assume the spokes ------------------------------------

HUB_ROLE_NAME = "defender-operator-hub"
SETUP_STACK_SET_NAME = "defender-operator-setup"
# EKS Pod Identity's trust (docs.aws.amazon.com/eks/latest/userguide/pod-id-role.html): the agent assumes the role
# and tags the session with the cluster, namespace and service account.
POD_IDENTITY_TRUST = {
    "Effect": "Allow",
    "Principal": {"Service": "pods.eks.amazonaws.com"},
    "Action": ["sts:AssumeRole", "sts:TagSession"],
}


def hub_policy(organization_condition: Any) -> dict[str, Any]:
    """All the hub may do: assume the spoke role, by its name, in any account (of the organization, when given).
    Its holder gets at most what the spokes' hardened policy allows; it cannot act in the hub account itself.
    Placeholders ``{partition}`` and ``{spokeRole}`` are left for the target language."""
    statement: dict[str, Any] = {
        "Sid": "AssumeOnlyTheSpokeRoles",
        "Effect": "Allow",
        "Action": "sts:AssumeRole",
        "Resource": "arn:{partition}:iam::*:role/{spokeRole}",
    }
    if organization_condition is not None:
        statement["Condition"] = organization_condition
    return {"Version": POLICY_VERSION, "Statement": [statement]}


def hub_template() -> dict[str, Any]:
    """CloudFormation for the hub account: the operator's own role (EKS Pod Identity, with the association when a
    cluster is named), allowed only to assume the spoke role the setup stack creates in each account."""
    organization = {
        "Fn::If": [
            "HasOrganization",
            {"StringEquals": {"aws:ResourceOrgID": {"Ref": "OrganizationId"}}},
            {"Ref": "AWS::NoValue"},
        ]
    }
    return {
        "AWSTemplateFormatVersion": TEMPLATE_VERSION,
        "Description": "defender-operator hub: the role the operator runs as; it may only assume the spoke roles",
        "Parameters": {
            "HubRoleName": {"Type": "String", "Default": HUB_ROLE_NAME},
            "SpokeRoleName": {
                "Type": "String",
                "Default": OPERATOR_ROLE_NAME,
                "Description": "The role the account setup stack creates in every account (OperatorRoleName)",
            },
            "OrganizationId": {
                "Type": "String",
                "Default": "",
                "AllowedPattern": "^(o-[a-z0-9]{10,32})?$",
                "Description": "Only spokes in accounts of this organization (aws:ResourceOrgID); empty: any account",
            },
            "ClusterName": {
                "Type": "String",
                "Default": "",
                "Description": "EKS cluster the operator runs in (creates the Pod Identity association); empty: none",
            },
            "Namespace": {"Type": "String", "Default": "defender-operator"},
            "ServiceAccount": {"Type": "String", "Default": "defender-operator"},
        },
        "Conditions": {
            "HasOrganization": {"Fn::Not": [{"Fn::Equals": [{"Ref": "OrganizationId"}, ""]}]},
            "HasCluster": {"Fn::Not": [{"Fn::Equals": [{"Ref": "ClusterName"}, ""]}]},
        },
        "Resources": {
            "HubRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": {"Ref": "HubRoleName"},
                    "Description": "defender-operator: the operator's identity; assumes the spoke role per account",
                    "AssumeRolePolicyDocument": {
                        "Version": POLICY_VERSION,
                        "Statement": [POD_IDENTITY_TRUST],
                    },
                    "Policies": [
                        {
                            "PolicyName": "assume-the-spokes",
                            "PolicyDocument": substitute(
                                hub_policy(organization),
                                {},
                                {**PSEUDO, "spokeRole": "${SpokeRoleName}"},
                                lambda text: {"Fn::Sub": text},
                            ),
                        }
                    ],
                    "Tags": [MANAGED_BY_TAG],
                },
            },
            "PodIdentity": {
                "Type": "AWS::EKS::PodIdentityAssociation",
                "Condition": "HasCluster",
                "Properties": {
                    "ClusterName": {"Ref": "ClusterName"},
                    "Namespace": {"Ref": "Namespace"},
                    "ServiceAccount": {"Ref": "ServiceAccount"},
                    "RoleArn": {"Fn::GetAtt": ["HubRole", "Arn"]},
                },
            },
        },
        "Outputs": {"HubRoleArn": {"Value": {"Fn::GetAtt": ["HubRole", "Arn"]}}},
    }


def setup_stack_set_template(options: SetupOptions = SetupOptions()) -> dict[str, Any]:
    """CloudFormation for the organization's management account: a service-managed StackSet that deploys the
    account setup stack to every account of the given OUs, and to accounts as they join them."""
    # The members' operator roles onboard their own accounts and assume nothing: the roles to assume are a matter
    # of the management account's own setup stack (docs/production.md), never rolled out to every member.
    member = without_assumable_roles(options)
    body = json.dumps(account_setup_template(member), separators=(",", ":"), sort_keys=True)
    passed = ("OperatorPrincipalArn", "ExternalId", "OperatorRoleName")
    setup = account_setup_template(member)["Parameters"]
    return {
        "AWSTemplateFormatVersion": TEMPLATE_VERSION,
        "Description": "defender-operator account setup in every account of the given OUs (service-managed StackSet)",
        "Parameters": {
            **{name: setup[name] for name in passed},
            "OrganizationalUnitIds": {
                "Type": "CommaDelimitedList",
                "Description": "OUs (or the root) whose accounts the operator onboards",
            },
        },
        "Resources": {
            "AccountSetup": {
                "Type": "AWS::CloudFormation::StackSet",
                "Properties": {
                    "StackSetName": SETUP_STACK_SET_NAME,
                    "Description": "defender-operator account setup: the operator's role and Defender's policies",
                    "PermissionModel": "SERVICE_MANAGED",
                    "AutoDeployment": {"Enabled": True, "RetainStacksOnAccountRemoval": False},
                    "Capabilities": ["CAPABILITY_NAMED_IAM"],
                    "ManagedExecution": {"Active": True},
                    "OperationPreferences": {"FailureTolerancePercentage": 10, "MaxConcurrentPercentage": 25},
                    "Parameters": [
                        {"ParameterKey": name, "ParameterValue": {"Ref": name}} for name in passed
                    ],
                    "StackInstancesGroup": [
                        {
                            "DeploymentTargets": {"OrganizationalUnitIds": {"Ref": "OrganizationalUnitIds"}},
                            "Regions": [{"Ref": "AWS::Region"}],
                        }
                    ],
                    "TemplateBody": body,
                },
            }
        },
    }
