"""The AWS side as Terraform (JSON syntax, developer.hashicorp.com/terraform/language/syntax/json).

Same roles and policies as the CloudFormation stack. The Microsoft identity provider is created only when
``oidc_provider_arn`` is empty; pass the ARN of an existing one (Microsoft Sentinel's, say) to keep Terraform from
owning it. Policy documents are JSON strings in which Terraform interpolates ``${...}``.
"""

import json
import re
from typing import TYPE_CHECKING, Any

from ..api.spec import AWSConnectorSpec
from .catalog import MANAGED_POLICY_PATH, catalog
from .cloudformation import member_template
from .iam import MANAGED_BY_TAG, POLICY_VERSION, role_documents
from .placeholders import ciem_oidc_host, substitute
from .ssm import ASSOCIATION_NAME, ASSOCIATION_SCHEDULE, automation_document

if TYPE_CHECKING:
    from .account_setup import SetupOptions

_PSEUDO = {
    "partition": "${data.aws_partition.current.partition}",
    "account": "${data.aws_caller_identity.current.account_id}",
    "dnsSuffix": "${data.aws_partition.current.dns_suffix}",
    "oidcProvider": "${local.oidc_provider_arn}",
    "ciemOidcProvider": "${local.ciem_oidc_provider_arn}",
}
_TAGS = {MANAGED_BY_TAG["Key"]: MANAGED_BY_TAG["Value"]}
_ROLES_PLACEHOLDER = "ASSUMABLE_ROLES"


# deployment_targets.account_filter_type and .accounts on aws_cloudformation_stack_set_instance (the excluded member
# accounts) came with hashicorp/terraform-provider-aws#37898, merged in June 2024 and released by 5.55.0; older 5.x
# providers refuse them at `terraform plan`.
STACK_SET_FILTERS_PROVIDER = ">= 5.55.0"


def _aws_provider(spec: AWSConnectorSpec) -> str:
    org = spec.aws.organization
    return STACK_SET_FILTERS_PROVIDER if org is not None and org.excluded_account_ids else ">= 5.0"


def requirements(name: str, source: str, version: str) -> dict[str, Any]:
    """The ``terraform`` block: the language version JSON syntax with these expressions needs, and the provider."""
    return {
        "required_version": ">= 1.3",
        "required_providers": {name: {"source": source, "version": version}},
    }


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


def _fill(value: Any) -> Any:
    return substitute(value, {}, _PSEUDO, lambda s: s)


def _policy_json(document: dict[str, Any]) -> str:
    return json.dumps(_fill(document), separators=(",", ":"))


def _provider(
    name: str, variable: str, url: str, audiences: list[str], thumbprints: list[str], description: str
) -> tuple[dict[str, Any], dict[str, Any], str]:
    variable_block = {"type": "string", "default": "", "description": description}
    resource = {
        "count": f'${{var.{variable} == "" ? 1 : 0}}',
        "url": url,
        "client_id_list": audiences,
        "thumbprint_list": thumbprints,
        "tags": _TAGS,
    }
    local = f'${{var.{variable} != "" ? var.{variable} : aws_iam_openid_connect_provider.{name}[0].arn}}'
    return variable_block, resource, local


def terraform_configuration(spec: AWSConnectorSpec) -> dict[str, Any]:
    ms = catalog().microsoft_oidc
    variables: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    locals_: dict[str, Any] = {}
    variables["oidc_provider_arn"], providers["microsoft"], locals_["oidc_provider_arn"] = _provider(
        "microsoft",
        "oidc_provider_arn",
        ms.url,
        ms.audiences,
        ms.thumbprints,
        f"ARN of an existing identity provider for https://{ms.host} (e.g. Microsoft Sentinel's); empty creates one.",
    )
    if spec.plans.cspm.enabled and spec.plans.cspm.ciem.enabled:
        variables["ciem_oidc_provider_arn"], providers["ciem"], locals_["ciem_oidc_provider_arn"] = _provider(
            "ciem",
            "ciem_oidc_provider_arn",
            "https://" + ciem_oidc_host(spec),
            [catalog().ciem_audience],
            catalog().ciem_thumbprints,
            f"ARN of an existing identity provider for https://{ciem_oidc_host(spec)}; empty creates one.",
        )

    roles: dict[str, Any] = {}
    inline: dict[str, Any] = {}
    attachments: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    for role in role_documents(spec):
        name = _snake(role.key)
        roles[name] = {
            "name": role.name,
            "description": role.description,
            "assume_role_policy": _policy_json(role.trust),
            "tags": _TAGS,
        }
        if role.key == "ciemDiscovery":
            roles[name]["depends_on"] = ["aws_iam_role.ciem_oidc"]
        for policy_name, document in role.inline_policies.items():
            inline[f"{name}_{_snake(re.sub(r'[^A-Za-z0-9]', '', policy_name))}"] = {
                "name": policy_name,
                "role": f"${{aws_iam_role.{name}.id}}",
                "policy": _policy_json(document),
            }
        for arn in role.managed_policy_arns:
            attachments[f"{name}_{_snake(arn.rsplit('/', 1)[-1])}"] = {
                "role": f"${{aws_iam_role.{name}.name}}",
                "policy_arn": _fill(arn),
            }
        outputs[f"{name}_role_arn"] = {"value": f"${{aws_iam_role.{name}.arn}}"}

    resources: dict[str, Any] = {
        "aws_iam_openid_connect_provider": providers,
        "aws_iam_role": roles,
        "aws_iam_role_policy": inline,
        "aws_iam_role_policy_attachment": attachments,
    }
    if "ssm_automation" in roles:
        resources["aws_ssm_document"] = {
            "arc_host_management": {
                "name": f"DefenderForCloud-ArcHostManagement-{spec.aws.account_id}",
                "document_type": "Automation",
                "document_format": "JSON",
                "target_type": "/AWS::EC2::Instance",
                "content": json.dumps(automation_document()),
                "tags": _TAGS,
            }
        }
        resources["aws_ssm_association"] = {
            "arc_host_management": {
                "association_name": ASSOCIATION_NAME,
                "name": "${aws_ssm_document.arc_host_management.name}",
                "automation_target_parameter_name": "InstanceId",
                "schedule_expression": ASSOCIATION_SCHEDULE,
                "targets": [{"key": "InstanceIds", "values": ["*"]}],
                "parameters": {
                    "AutomationAssumeRole": "${aws_iam_role.ssm_automation.arn}",
                    "IsPolicyAttachAllowed": "true",
                },
            }
        }
    data: dict[str, Any] = {"aws_partition": {"current": {}}, "aws_caller_identity": {"current": {}}}
    delegate = spec.aws.delegated_administrator
    if spec.aws.organization is not None and delegate is None:
        _organization(spec, resources, data)
    about = (
        f"the management account's own identity provider and roles; the member StackSet is the operator's, run "
        f"from delegated administrator {delegate}, and the operator connects Azure"
        if delegate
        else "the operator connects Azure once the roles exist"
    )
    return {
        "//": f"Microsoft Defender for Cloud onboarding of AWS account {spec.aws.account_id}, rendered by "
        f"defender-operator. Apply it in that account; {about}.",
        "terraform": requirements("aws", "hashicorp/aws", _aws_provider(spec)),
        "variable": variables,
        "data": data,
        "locals": locals_,
        "resource": resources,
        "output": outputs,
    }


def literal(text: str) -> str:
    """``text`` as a Terraform string that means exactly ``text``: ``${`` and ``%{`` start Terraform's own
    interpolation and directives, so they are doubled (developer.hashicorp.com/terraform/language/expressions/
    strings, "Escape Sequences")."""
    return text.replace("${", "$${").replace("%{", "%%{")


def _organization(spec: AWSConnectorSpec, resources: dict[str, Any], data: dict[str, Any]) -> None:
    """A management account: the member accounts' StackSet (service-managed, automatic deployment to accounts
    that join the target OUs), with the same template, targets and preferences the operator's StackSet has."""
    org = spec.aws.organization
    assert org is not None
    preferences = [
        {
            "failure_tolerance_percentage": org.failure_tolerance_percentage,
            "max_concurrent_percentage": org.max_concurrent_percentage,
        }
    ]
    units: list[str] = list(org.organizational_unit_ids)
    if not units:  # the root: every member account
        data["aws_organizations_organization"] = {"current": {}}
        units = ["${data.aws_organizations_organization.current.roots[0].id}"]
    targets: dict[str, Any] = {"organizational_unit_ids": units}
    if org.excluded_account_ids:
        targets.update(account_filter_type="DIFFERENCE", accounts=list(org.excluded_account_ids))
    resources["aws_cloudformation_stack_set"] = {
        "members": {
            "name": org.stack_set_name,
            "description": "Microsoft Defender for Cloud roles in the member accounts (defender-operator)",
            "permission_model": "SERVICE_MANAGED",
            "auto_deployment": [{"enabled": True, "retain_stacks_on_account_removal": False}],
            "capabilities": ["CAPABILITY_NAMED_IAM"],
            "template_body": literal(json.dumps(member_template(spec), sort_keys=True)),
            "operation_preferences": preferences,
            "tags": _TAGS,
            "lifecycle": [{"ignore_changes": ["administration_role_arn"]}],
        }
    }
    resources["aws_cloudformation_stack_set_instance"] = {
        "members": {
            "stack_set_name": "${aws_cloudformation_stack_set.members.name}",
            "deployment_targets": [targets],
            "region": spec.deployment.region,
            "operation_preferences": preferences,
            "retain_stack": False,
        }
    }


def account_setup_configuration(options: "SetupOptions | None" = None) -> dict[str, Any]:
    """The account setup stack (:mod:`.account_setup`) as Terraform: the same policies and the same operator role."""
    from .account_setup import (
        ASSUMABLE_ROLES_DESCRIPTION,
        ASSUMABLE_ROLES_POLICY,
        OPERATOR_ROLE_NAME,
        SetupOptions,
        assumable_default,
        assume_roles_statement,
        managed_operator_policy,
        operator_trust,
        setup_policies,
        without_assumable_roles,
    )

    options = options or SetupOptions()
    # The list goes into the document as JSON: a placeholder string, replaced with the quotes around it.
    assume_roles = _policy_json(
        {"Version": POLICY_VERSION, "Statement": [assume_roles_statement(_ROLES_PLACEHOLDER)]}
    ).replace(json.dumps(_ROLES_PLACEHOLDER), "${jsonencode(var.assumable_roles)}")

    principal = "${var.operator_principal_arn}"
    with_external_id = operator_trust(principal, "${var.external_id}")
    without = operator_trust(principal, "")
    del without["Statement"][0]["Condition"]
    policies = {
        _snake(re.sub(r"[^A-Za-z0-9]", "", policy.name)): {
            "name": policy.name,
            "path": MANAGED_POLICY_PATH,
            "description": policy.description,
            "policy": _policy_json(policy.document),
            "tags": _TAGS,
        }
        for policy in setup_policies()
    }
    return {
        "//": "defender-operator account setup: the operator's role and Defender's policies (managed), rendered by "
        "defender-operator. Apply it in every account the operator onboards with rolePolicies Managed.",
        "terraform": requirements("aws", "hashicorp/aws", ">= 5.0"),
        "variable": {
            "operator_principal_arn": {
                "type": "string",
                "description": "ARN of the identity the operator runs as (its IRSA or hub role)",
            },
            "external_id": {
                "type": "string",
                "default": "",
                "description": "External id the operator must present (spec.aws.credentials.externalId); empty: none",
            },
            "operator_role_name": {"type": "string", "default": OPERATOR_ROLE_NAME},
            "assumable_roles": {
                "type": "list(string)",
                "default": assumable_default(options),
                "description": ASSUMABLE_ROLES_DESCRIPTION,
            },
        },
        "data": {"aws_partition": {"current": {}}, "aws_caller_identity": {"current": {}}},
        "resource": {
            "aws_iam_policy": policies,
            "aws_iam_role": {
                "operator": {
                    "name": "${var.operator_role_name}",
                    "description": "defender-operator: onboards this account into Microsoft Defender for Cloud",
                    "assume_role_policy": _either('var.external_id == ""', without, with_external_id),
                    "tags": _TAGS,
                }
            },
            "aws_iam_role_policy": {
                "operator": {
                    "name": "defender-operator",
                    "role": "${aws_iam_role.operator.id}",
                    "policy": _policy_json(managed_operator_policy(without_assumable_roles(options))),
                },
                "assume_roles": {
                    "count": "${length(var.assumable_roles) > 0 ? 1 : 0}",
                    "name": ASSUMABLE_ROLES_POLICY,
                    "role": "${aws_iam_role.operator.id}",
                    "policy": assume_roles,
                },
            },
        },
        "output": {"operator_role_arn": {"value": "${aws_iam_role.operator.arn}"}},
    }


def _either(test: str, when_true: dict[str, Any], when_false: dict[str, Any]) -> str:
    """A Terraform conditional between two JSON documents (as HCL string literals, so ``${...}`` still interpolates)."""
    true_text, false_text = (
        json.dumps(json.dumps(d, separators=(",", ":"))) for d in (when_true, when_false)
    )
    return f"${{{test} ? {true_text} : {false_text}}}"


def hub_configuration() -> dict[str, Any]:
    """The hub (:func:`.account_setup.hub_template`) as Terraform: the operator's own role, trusted through EKS Pod
    Identity or, given an IAM OIDC provider, through IRSA (which CloudFormation cannot express: the condition keys
    carry the issuer), allowed only to assume the spoke role."""
    from .account_setup import HUB_ROLE_NAME, OPERATOR_ROLE_NAME, POD_IDENTITY_TRUST, hub_policy

    filled = {**_PSEUDO, "spokeRole": "${var.spoke_role_name}"}
    organization = {"StringEquals": {"aws:ResourceOrgID": "${var.organization_id}"}}
    in_organization, anywhere = (
        substitute(hub_policy(condition), {}, filled, lambda s: s) for condition in (organization, None)
    )
    pod_identity = {"Version": "2012-10-17", "Statement": [POD_IDENTITY_TRUST]}
    irsa = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Federated": "${var.oidc_provider_arn}"},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {
                    "StringEquals": {
                        "${local.issuer}:sub": "system:serviceaccount:${var.namespace}:${var.service_account}",
                        "${local.issuer}:aud": "sts.amazonaws.com",
                    }
                },
            }
        ],
    }
    return {
        "//": "defender-operator hub: the role the operator runs as, rendered by defender-operator. It may only "
        "assume the spoke role of the account setup in each account.",
        "terraform": requirements("aws", "hashicorp/aws", ">= 5.0"),
        "variable": {
            "hub_role_name": {"type": "string", "default": HUB_ROLE_NAME},
            "spoke_role_name": {
                "type": "string",
                "default": OPERATOR_ROLE_NAME,
                "description": "The role the account setup creates in every account (operator_role_name)",
            },
            "organization_id": {
                "type": "string",
                "default": "",
                "description": "Only spokes in accounts of this organization (aws:ResourceOrgID); empty: any account",
            },
            "oidc_provider_arn": {
                "type": "string",
                "default": "",
                "description": "IAM OIDC provider of the cluster's issuer (IRSA); empty: EKS Pod Identity",
            },
            "cluster_name": {
                "type": "string",
                "default": "",
                "description": "EKS cluster for the Pod Identity association; empty: none",
            },
            "namespace": {"type": "string", "default": "defender-operator"},
            "service_account": {"type": "string", "default": "defender-operator"},
        },
        "data": {"aws_partition": {"current": {}}},
        "locals": {"issuer": '${element(split("oidc-provider/", var.oidc_provider_arn), 1)}'},
        "resource": {
            "aws_iam_role": {
                "hub": {
                    "name": "${var.hub_role_name}",
                    "description": "defender-operator: the operator's identity; assumes the spoke role per account",
                    "assume_role_policy": _either('var.oidc_provider_arn == ""', pod_identity, irsa),
                    "tags": _TAGS,
                }
            },
            "aws_iam_role_policy": {
                "hub": {
                    "name": "assume-the-spokes",
                    "role": "${aws_iam_role.hub.id}",
                    "policy": _either('var.organization_id == ""', anywhere, in_organization),
                }
            },
            "aws_eks_pod_identity_association": {
                "operator": {
                    "count": '${var.cluster_name != "" && var.oidc_provider_arn == "" ? 1 : 0}',
                    "cluster_name": "${var.cluster_name}",
                    "namespace": "${var.namespace}",
                    "service_account": "${var.service_account}",
                    "role_arn": "${aws_iam_role.hub.arn}",
                }
            },
        },
        "output": {"hub_role_arn": {"value": "${aws_iam_role.hub.arn}"}},
    }
