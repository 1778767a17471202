"""ClusterOnboardingPolicy: the cluster admin's say over who may onboard which accounts with which identity.

Without any policy, an AWSConnector may use only credentials from Secrets in its own namespace (the tenant's own
power; a role assumed with those keys is the tenant's own too). Using the operator's own identity (its "ambient"
identity: IRSA, workload identity) needs a policy that selects the object's namespace and allows exactly that: the
AWS account, the role ARN assumed with the operator's identity or the direct use of that identity, and on the Azure
side the tenant, subscription and resource group. Several policies add up; each side that uses the operator's power
must be allowed by one and the same policy (so two policies cannot be combined into a grant neither made).

The shape follows External Secrets' ClusterSecretStore conditions (namespaces by name or label selector) and
cert-manager's rule that only cluster-scoped, admin-owned issuers use ambient credentials (docs/tenancy.md).

For admission, the operator keeps one cluster-scoped EffectiveOnboardingPolicy named ``effective``: every policy's
rule, with its namespace selection and its patterns compiled to regular expressions, which a
ValidatingAdmissionPolicy reads as its one parameter (it evaluates the namespace selection against
``namespaceObject``). A binding evaluates each parameter it selects and needs all of them to pass, so "several
policies add up" can only be checked against such a union.
"""

import re
from typing import Annotated, Literal

from pydantic import Field, StringConstraints, field_validator

from .schema import CamelModel
from .spec import ACCOUNT_ID_PATTERN, UUID_PATTERN

LABEL_KEY = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
ANY = "*"
AccountOrAny = Annotated[str, StringConstraints(pattern=f"({ACCOUNT_ID_PATTERN[1:-1]}|\\*)")]
UuidOrAny = Annotated[str, StringConstraints(pattern=f"^({UUID_PATTERN[1:-1]}|\\*)$")]
# A role ARN where * stands for any run of characters: arn:aws:iam::111122223333:role/defender-*, arn:aws:iam::*:role/x
RoleArnPattern = Annotated[
    str,
    StringConstraints(pattern=r"^arn:(aws[a-z-]*|\*):iam::([0-9]{12}|\*):role/[A-Za-z0-9+=,.@_/*-]{1,512}$"),
]
ResourceGroupPattern = Annotated[str, StringConstraints(pattern=r"^[-A-Za-z0-9_.()*]{1,90}$")]
RoleNamePattern = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9+=,.@_*-]{1,64}$")]


class LabelSelectorRequirement(CamelModel):
    """One requirement of a label selector (metav1.LabelSelectorRequirement)."""

    key: Annotated[str, StringConstraints(pattern=LABEL_KEY, max_length=317)] = Field(
        description="Label key."
    )
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"] = Field(
        description="How the key relates to values."
    )
    values: list[str] = Field(default_factory=list, description="Values for In and NotIn.")


class LabelSelector(CamelModel):
    """Namespaces by their labels (metav1.LabelSelector): every requirement must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict, description="Labels a namespace must carry.")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, description="Requirements on a namespace's labels."
    )

    def matches(self, labels: dict[str, str]) -> bool:
        if any(labels.get(k) != v for k, v in self.match_labels.items()):
            return False
        for r in self.match_expressions:
            present = r.key in labels
            if r.operator == "In" and not (present and labels[r.key] in r.values):
                return False
            if r.operator == "NotIn" and present and labels[r.key] in r.values:
                return False
            if r.operator == "Exists" and not present:
                return False
            if r.operator == "DoesNotExist" and present:
                return False
        return True


class NamespaceSelection(CamelModel):
    """The namespaces a policy applies to: those named, and those whose labels match the selector."""

    names: list[
        Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)]
    ] = Field(
        default_factory=list,
        description="Namespaces by name.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    selector: LabelSelector | None = Field(
        default=None, description="Namespaces by label. An empty selector ({}) selects every namespace."
    )

    def selects(self, name: str, labels: dict[str, str]) -> bool:
        return name in self.names or (self.selector is not None and self.selector.matches(labels))


class AwsGrant(CamelModel):
    """What AWSConnectors in the selected namespaces may do in AWS with the operator's own identity."""

    account_ids: list[AccountOrAny] = Field(
        default_factory=list,
        description="AWS accounts (12 digits) that may be onboarded with the operator's identity; * for any.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    role_arns: list[RoleArnPattern] = Field(
        default_factory=list,
        description="Roles the operator may assume for them (spec.aws.credentials.roleArn without a secretRef); * "
        "matches any characters, e.g. arn:aws:iam::*:role/defender-onboarding.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ambient_identity: bool = Field(
        default=False,
        description="Whether the operator's own identity may be used directly (no roleArn, no secretRef).",
    )
    eks_access_entries: bool = Field(
        default=False,
        description="Whether objects may set spec.aws.eksAccessEntries: Manage with the operator's identity, which "
        "gives Defender's discovery role cluster-admin in every EKS cluster of their accounts that takes access "
        "entries (docs/aws-permissions.md).",
    )
    ciem_tenant_ids: list[UuidOrAny] = Field(
        default_factory=list,
        description="Entra tenants whose identities CIEM may be made to trust with the operator's identity "
        "(spec.plans.cspm.ciem: an identity provider for sts.windows.net/<spec.azure.tenantId>/ and a role with "
        "SecurityAudit and read of every S3 object that trusts oidcSubject, a service principal of that tenant); * "
        "for any. Empty: CIEM is refused.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    organizations: bool = Field(
        default=False,
        description="Whether objects may onboard an AWS Organization (spec.aws.organization) with the operator's "
        "identity: a service-managed StackSet that creates Defender's roles in every member account it targets.",
    )
    member_role_names: list[RoleNamePattern] = Field(
        default_factory=list,
        description="Roles the operator may assume in member accounts of an organization "
        "(spec.aws.organization.memberProviderRoleName; * matches any characters); each member account must also "
        "be in accountIds. Empty: none.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class AzureGrant(CamelModel):
    """Where AWSConnectors in the selected namespaces may write with the operator's own Azure identity."""

    tenant_ids: list[UuidOrAny] = Field(
        default_factory=list,
        description="Entra tenants (spec.azure.tenantId); * for any.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    subscription_ids: list[UuidOrAny] = Field(
        default_factory=list,
        description="Subscriptions connectors may be written to; * for any.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    resource_groups: list[ResourceGroupPattern] = Field(
        default_factory=lambda: [ANY],
        description="Resource groups (names; * matches any characters). Default: any.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    ambient_identity: bool = Field(
        default=False,
        description="Whether the operator's own Azure identity may be used (no spec.azure.credentialsSecretRef).",
    )


class ClusterOnboardingPolicySpec(CamelModel):
    """Which namespaces may use the operator's own identities, for which accounts and subscriptions."""

    namespaces: NamespaceSelection = Field(description="The namespaces this policy applies to.")
    aws: AwsGrant = Field(default_factory=AwsGrant, description="The AWS side.")
    azure: AzureGrant = Field(default_factory=AzureGrant, description="The Azure side.")
    adoption: bool = Field(
        default=False,
        description="Whether objects annotated defender-operator.io/adopt=true may take over, with the operator's "
        "identity, an existing stack, StackSet or connector that carries no mark of theirs (never one of another "
        "live AWSConnector).",
    )


def glob_regex(pattern: str) -> str:
    """A glob with * as an anchored RE2 regular expression, for CEL's matches(). ``*`` matches any characters but
    ``/``, so a role pattern never reaches into another IAM path (role/defender-* is not role/defender-x/Admin)."""
    return "^" + "[^/]*".join(re.escape(part) for part in pattern.split(ANY)) + "$"


class EffectiveRule(CamelModel):
    """One policy's grant, as the admission policy reads it: lists, and regular expressions for the patterns."""

    policy: str = Field(description="The ClusterOnboardingPolicy this rule comes from.")
    namespaces: NamespaceSelection = Field(description="The namespaces it applies to.")
    aws_account_ids: list[str] = Field(default_factory=list, description="Accounts, or * for any.")
    aws_role_arn_regexes: list[str] = Field(
        default_factory=list, description="Role ARN patterns, as regexes."
    )
    aws_ambient_identity: bool = Field(default=False, description="The operator's AWS identity, directly.")
    aws_eks_access_entries: bool = Field(default=False, description="eksAccessEntries Manage allowed.")
    aws_ciem_tenant_ids: list[str] = Field(default_factory=list, description="CIEM tenants, or * for any.")
    aws_organizations: bool = Field(default=False, description="Organizations allowed.")
    aws_member_role_regexes: list[str] = Field(
        default_factory=list, description="Member account role patterns, as regexes."
    )
    adoption: bool = Field(default=False, description="Adoption allowed.")
    azure_tenant_ids: list[str] = Field(default_factory=list, description="Tenants, or * for any.")
    azure_subscription_ids: list[str] = Field(
        default_factory=list, description="Subscriptions, or * for any."
    )
    azure_resource_group_regexes: list[str] = Field(
        default_factory=list, description="Resource group patterns, as regexes."
    )
    azure_ambient_identity: bool = Field(default=False, description="The operator's Azure identity.")

    @field_validator("aws_role_arn_regexes", "azure_resource_group_regexes", "aws_member_role_regexes")
    @classmethod
    def _compiles(cls, values: list[str]) -> list[str]:
        for value in values:
            re.compile(value)
        return values


class EffectiveOnboardingPolicySpec(CamelModel):
    """Written by the operator: the rules of every ClusterOnboardingPolicy, for the admission policy."""

    rules: list[EffectiveRule] = Field(default_factory=list, description="One per policy, in name order.")


def effective_rule(name: str, spec: ClusterOnboardingPolicySpec) -> EffectiveRule:
    return EffectiveRule(
        policy=name,
        namespaces=spec.namespaces,
        aws_account_ids=sorted(spec.aws.account_ids),
        aws_role_arn_regexes=sorted(glob_regex(p) for p in spec.aws.role_arns),
        aws_ambient_identity=spec.aws.ambient_identity,
        aws_eks_access_entries=spec.aws.eks_access_entries,
        aws_ciem_tenant_ids=sorted(spec.aws.ciem_tenant_ids),
        aws_organizations=spec.aws.organizations,
        aws_member_role_regexes=sorted(glob_regex(p) for p in spec.aws.member_role_names),
        adoption=spec.adoption,
        azure_tenant_ids=sorted(spec.azure.tenant_ids),
        azure_subscription_ids=sorted(spec.azure.subscription_ids),
        azure_resource_group_regexes=sorted(glob_regex(p) for p in spec.azure.resource_groups),
        azure_ambient_identity=spec.azure.ambient_identity,
    )
