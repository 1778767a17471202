"""May this AWSConnector use the operator's own identities? The operator's check, before any cloud call.

The same rules the ValidatingAdmissionPolicy applies at ``kubectl apply`` (charts/.../admission.yaml), decided here
again because admission can be bypassed (objects created before a policy changed, or before the admission policy was
installed): the operator's check is the authority. Pure: the caller passes the policies and the namespace's labels.
"""

import re
from dataclasses import dataclass

from ..api.policy import ANY, EffectiveRule
from ..api.spec import AWSConnectorSpec

DEFAULT = "Default"
POLICY_DOC = "docs/tenancy.md"


@dataclass(frozen=True)
class Admission:
    """``allowed_by``: the policy that allows it, or "Default" (own Secrets only); ``refusal`` otherwise."""

    allowed_by: str | None
    refusal: str | None = None


def uses_operator_aws(spec: AWSConnectorSpec) -> bool:
    """Without a Secret of its own, the AWS calls are signed with the operator's identity (directly, or to assume
    spec.aws.credentials.roleArn)."""
    creds = spec.aws.credentials
    return not (creds is not None and creds.secret_ref is not None)


def uses_operator_azure(spec: AWSConnectorSpec) -> bool:
    return spec.azure.credentials_secret_ref is None


def _any(values: list[str], value: str) -> bool:
    return ANY in values or value in values


def _aws_gap(rule: EffectiveRule, spec: AWSConnectorSpec) -> str | None:
    """What the rule lacks for the AWS side; None when it allows it."""
    account = spec.aws.account_id
    if not _any(rule.aws_account_ids, account):
        return f"aws.accountIds does not include {account}"
    role = spec.aws.credentials.role_arn if spec.aws.credentials else None
    if role is not None:
        if not any(re.fullmatch(p, role) for p in rule.aws_role_arn_regexes):
            return f"aws.roleArns does not match {role}"
    elif not rule.aws_ambient_identity:
        return "aws.ambientIdentity is not true"
    if spec.aws.eks_access_entries == "Manage" and not rule.aws_eks_access_entries:
        return "aws.eksAccessEntries is not true (spec.aws.eksAccessEntries: Manage)"
    return None


def _azure_gap(rule: EffectiveRule, spec: AWSConnectorSpec) -> str | None:
    azure = spec.azure
    if not rule.azure_ambient_identity:
        return "azure.ambientIdentity is not true"
    if not _any(rule.azure_tenant_ids, azure.tenant_id):
        return f"azure.tenantIds does not include {azure.tenant_id}"
    if not _any(rule.azure_subscription_ids, azure.subscription_id):
        return f"azure.subscriptionIds does not include {azure.subscription_id}"
    if not any(re.fullmatch(p, azure.resource_group) for p in rule.azure_resource_group_regexes):
        return f"azure.resourceGroups does not match {azure.resource_group}"
    return None


def _needs(spec: AWSConnectorSpec) -> str:
    wants = []
    if uses_operator_aws(spec):
        role = spec.aws.credentials.role_arn if spec.aws.credentials else None
        wants.append(
            f"spec.aws.credentials.roleArn {role} assumed with the operator's identity"
            if role
            else "spec.aws.credentials: the operator's own AWS identity (no secretRef)"
        )
    if uses_operator_azure(spec):
        wants.append("spec.azure.credentialsSecretRef: the operator's own Azure identity")
    return " and ".join(wants)


def admit(
    spec: AWSConnectorSpec, namespace: str, labels: dict[str, str], rules: list[EffectiveRule]
) -> Admission:
    """Whether the object may be reconciled, and by which policy."""
    aws, azure = uses_operator_aws(spec), uses_operator_azure(spec)
    if not aws and not azure:
        return Admission(DEFAULT)
    applicable = [r for r in rules if r.namespaces.selects(namespace, labels)]
    gaps = []
    for rule in sorted(applicable, key=lambda r: r.policy):
        gap = (_aws_gap(rule, spec) if aws else None) or (_azure_gap(rule, spec) if azure else None)
        if gap is None:
            return Admission(rule.policy)
        gaps.append(f"{rule.policy}: {gap}")
    if not applicable:
        why = f"no ClusterOnboardingPolicy selects namespace {namespace}"
    else:
        why = f"no ClusterOnboardingPolicy for namespace {namespace} allows it ({'; '.join(gaps)})"
    return Admission(
        None,
        f"{_needs(spec)} is not allowed: {why}. Without a policy only credentials from Secrets in the object's own "
        "namespace can be used (spec.aws.credentials.secretRef, spec.azure.credentialsSecretRef); a cluster admin "
        f"grants the operator's identity with a ClusterOnboardingPolicy ({POLICY_DOC}). Nothing was written.",
    )
