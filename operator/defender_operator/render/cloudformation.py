"""CloudFormation templates: the stack for the onboarded account, and the StackSet template for member accounts.

The Microsoft identity provider is *not* in the account's stack: an account holds one provider per issuer, Microsoft
Sentinel may own it already, and a stack that created it could delete it on rollback
(aws-cloudformation/cloudformation-coverage-roadmap#1048). The operator manages it beside the stack and passes its
ARN in as a parameter. Member accounts have no operator, so the member template creates the provider unless told it
already exists.
"""

from typing import Any

from ..api.spec import AWSConnectorSpec
from .catalog import catalog
from .iam import MANAGED_BY_TAG, RoleDocument, role_documents
from .placeholders import ciem_oidc_host, substitute
from .ssm import ASSOCIATION_NAME, ASSOCIATION_SCHEDULE, automation_document

TEMPLATE_VERSION = "2010-09-09"
OIDC_PARAMETER = "OidcProviderArn"
CIEM_OIDC_PARAMETER = "CiemOidcProviderArn"
PSEUDO = {"partition": "${AWS::Partition}", "account": "${AWS::AccountId}", "dnsSuffix": "${AWS::URLSuffix}"}


def _sub(value: str) -> dict[str, str]:
    return {"Fn::Sub": value}


def output_key(role: RoleDocument) -> str:
    """Stack output that carries a role's ARN, e.g. CspmMonitorRoleArn."""
    return role.logical_id + "Arn"


def _role_resource(role: RoleDocument, providers: dict[str, Any]) -> dict[str, Any]:
    def fill(value: Any) -> Any:
        return substitute(value, {}, PSEUDO, _sub, providers)

    properties: dict[str, Any] = {
        "RoleName": role.name,
        "Description": role.description,
        "AssumeRolePolicyDocument": fill(role.trust),
        "Tags": [MANAGED_BY_TAG],
    }
    if role.managed_policy_arns:
        properties["ManagedPolicyArns"] = [fill(arn) for arn in role.managed_policy_arns]
    if role.inline_policies:
        properties["Policies"] = [
            {"PolicyName": name, "PolicyDocument": fill(doc)} for name, doc in role.inline_policies.items()
        ]
    return {"Type": "AWS::IAM::Role", "Properties": properties}


def _ssm_resources(spec: AWSConnectorSpec) -> dict[str, Any]:
    automation_role = "SsmAutomationRole"
    return {
        "ArcHostManagementDocument": {
            "Type": "AWS::SSM::Document",
            "Properties": {
                "DocumentType": "Automation",
                "DocumentFormat": "JSON",
                "TargetType": "/AWS::EC2::Instance",
                "Content": automation_document(),
                "Tags": [MANAGED_BY_TAG],
            },
        },
        "ArcHostManagementAssociation": {
            "Type": "AWS::SSM::Association",
            "Properties": {
                "AssociationName": ASSOCIATION_NAME,
                "Name": {"Ref": "ArcHostManagementDocument"},
                "AutomationTargetParameterName": "InstanceId",
                "ScheduleExpression": ASSOCIATION_SCHEDULE,
                "Targets": [{"Key": "InstanceIds", "Values": ["*"]}],
                "Parameters": {
                    "AutomationAssumeRole": [{"Fn::GetAtt": [automation_role, "Arn"]}],
                    "IsPolicyAttachAllowed": ["true"],
                },
            },
        },
    }


def _template(
    spec: AWSConnectorSpec,
    description: str,
    providers: dict[str, Any],
    extra_resources: dict[str, Any],
    member: bool = False,
) -> dict[str, Any]:
    roles = role_documents(spec, member)
    resources: dict[str, Any] = dict(extra_resources)
    for role in roles:
        resources[role.logical_id] = _role_resource(role, providers)
    # IAM refuses a trust policy that names a role that does not exist yet (CIEM discovery trusts the OIDC role).
    if "CiemDiscoveryRole" in resources and "CiemOidcRole" in resources:
        resources["CiemDiscoveryRole"]["DependsOn"] = "CiemOidcRole"
    if "SsmAutomationRole" in resources:
        resources.update(_ssm_resources(spec))
    return {
        "AWSTemplateFormatVersion": TEMPLATE_VERSION,
        "Description": description,
        "Resources": resources,
        "Outputs": {
            output_key(role): {
                "Description": f"ARN of the {role.name} role",
                "Value": {"Fn::GetAtt": [role.logical_id, "Arn"]},
            }
            for role in roles
        },
    }


def _uses_ciem(spec: AWSConnectorSpec) -> bool:
    return spec.plans.cspm.enabled and spec.plans.cspm.ciem.enabled


def stack_template(spec: AWSConnectorSpec) -> dict[str, Any]:
    """The stack deployed in the onboarded (or management) account."""
    parameters: dict[str, Any] = {
        OIDC_PARAMETER: {
            "Type": "String",
            "Description": "ARN of the IAM identity provider for https://" + catalog().microsoft_oidc.host,
            "AllowedPattern": r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/sts\.windows\.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/$",
        }
    }
    providers: dict[str, Any] = {"oidcProvider": {"Ref": OIDC_PARAMETER}}
    if _uses_ciem(spec):
        parameters[CIEM_OIDC_PARAMETER] = {
            "Type": "String",
            "Description": f"ARN of the IAM identity provider for https://{ciem_oidc_host(spec)} (CIEM)",
            "AllowedPattern": r"^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/sts\.windows\.net/[0-9a-fA-F-]{36}/$",
        }
        providers["ciemOidcProvider"] = {"Ref": CIEM_OIDC_PARAMETER}
    template = _template(
        spec,
        f"Microsoft Defender for Cloud onboarding of AWS account {spec.aws.account_id} "
        "(managed by defender-operator; change the AWSConnector, not this stack)",
        providers,
        {},
    )
    return {**template, "Parameters": parameters}


def _provider_resource(
    url: str, audiences: list[str], thumbprints: list[str], condition: str
) -> dict[str, Any]:
    return {
        "Type": "AWS::IAM::OIDCProvider",
        "Condition": condition,
        "Properties": {
            "Url": url,
            "ClientIdList": audiences,
            "ThumbprintList": thumbprints,
            "Tags": [MANAGED_BY_TAG],
        },
    }


def _provider_reference(condition: str, resource: str, host: str) -> dict[str, Any]:
    existing = _sub("arn:${AWS::Partition}:iam::${AWS::AccountId}:oidc-provider/" + host)
    return {"Fn::If": [condition, {"Ref": resource}, existing]}


def member_template(spec: AWSConnectorSpec) -> dict[str, Any]:
    """The StackSet template for member accounts of an organization."""
    ms = catalog().microsoft_oidc
    org = spec.aws.organization
    existing = org is not None and (
        org.member_oidc_provider_exists or org.member_provider_role_name is not None
    )
    create_default = "false" if existing else "true"  # the operator puts the audiences on it through the role
    parameters: dict[str, Any] = {
        "CreateOidcProvider": {
            "Type": "String",
            "AllowedValues": ["true", "false"],
            "Default": create_default,
            "Description": f"Create the identity provider for https://{ms.host}; false when the account has one "
            "(e.g. from Microsoft Sentinel).",
        }
    }
    conditions: dict[str, Any] = {
        "CreateOidcProviderCondition": {"Fn::Equals": [{"Ref": "CreateOidcProvider"}, "true"]}
    }
    resources = {
        "MicrosoftOidcProvider": _provider_resource(
            ms.url, ms.audiences, ms.thumbprints, "CreateOidcProviderCondition"
        )
    }
    providers = {
        "oidcProvider": _provider_reference("CreateOidcProviderCondition", "MicrosoftOidcProvider", ms.host)
    }
    # No CIEM identity provider or CIEM OIDC role in members: Defender signs in to the management account's OIDC
    # role, which assumes each member's CIEM discovery role (that role trusts it by ARN).
    template = _template(
        spec,
        "Microsoft Defender for Cloud onboarding of a member account of the organization managed from "
        f"{spec.aws.account_id} (managed by defender-operator)",
        providers,
        resources,
        member=True,
    )
    return {**template, "Parameters": parameters, "Conditions": conditions}
