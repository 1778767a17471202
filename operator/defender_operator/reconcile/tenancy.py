"""May this AWSConnector use the operator's own identities? The operator's check, before any cloud call.

The same rules the ValidatingAdmissionPolicy applies at ``kubectl apply`` (charts/.../admission.yaml), decided here
again because admission can be bypassed (objects created before a policy changed, or before the admission policy was
installed): the operator's check is the authority. Pure: the caller passes the policies and the namespace's labels.
"""

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..api.names import ANNOTATION_ADOPT
from ..api.policy import ANY, EffectiveRule, NamespaceSelection
from ..api.spec import AWSConnectorSpec

DEFAULT = "Default"
POLICY_DOC = "docs/tenancy.md"


@dataclass(frozen=True)
class Admission:
    """``allowed_by``: the policy that allows it, or "Default" (own Secrets only); ``refusal`` otherwise.
    ``aws_accounts``: the accounts the allowing policies let the operator's identity act in (member accounts of an
    organization are checked against them one by one: any policy that allows the object on its own may list a
    member); None when the operator's AWS identity is not used."""

    allowed_by: str | None
    refusal: str | None = None
    aws_accounts: tuple[str, ...] | None = None

    def allows_account(self, account: str) -> bool:
        return self.aws_accounts is None or ANY in self.aws_accounts or account in self.aws_accounts


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
    cspm = spec.plans.cspm
    if cspm.enabled and cspm.ciem.enabled and not _any(rule.aws_ciem_tenant_ids, spec.azure.tenant_id):
        return (
            f"aws.ciemTenantIds does not include {spec.azure.tenant_id} (spec.plans.cspm.ciem: its role would "
            "trust an identity of that Entra tenant)"
        )
    org = spec.aws.organization
    if org is not None and not rule.aws_organizations:
        return "aws.organizations is not true (spec.aws.organization)"
    delegate = spec.aws.delegated_administrator
    if delegate is not None and not _any(rule.aws_account_ids, delegate):
        # the account the operator's identity signs in to and runs the StackSet from is granted like accountId
        return f"aws.accountIds does not include {delegate} (spec.aws.organization.delegatedAdministratorAccountId)"
    member_role = org.member_provider_role_name if org is not None else None
    if member_role is not None and not any(
        re.fullmatch(p, member_role) for p in rule.aws_member_role_regexes
    ):
        return (
            f"aws.memberRoleNames does not match {member_role} (spec.aws.organization.memberProviderRoleName)"
        )
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
    spec: AWSConnectorSpec,
    namespace: str,
    labels: dict[str, str],
    rules: list[EffectiveRule],
    adopt: bool = False,
) -> Admission:
    """Whether the object may be reconciled, and by which policy (``adopt``: it carries the adopt annotation)."""
    aws, azure = uses_operator_aws(spec), uses_operator_azure(spec)
    if not aws and not azure:
        return Admission(DEFAULT)
    applicable = [r for r in rules if r.namespaces.selects(namespace, labels)]
    gaps, allowing = [], []
    for rule in sorted(applicable, key=lambda r: r.policy):
        gap = (
            (_aws_gap(rule, spec) if aws else None)
            or (_azure_gap(rule, spec) if azure else None)
            or (None if rule.adoption or not adopt else f"adoption is not true ({ANNOTATION_ADOPT}=true)")
        )
        if gap is None:
            allowing.append(rule)
        else:
            gaps.append(f"{rule.policy}: {gap}")
    if allowing:
        accounts = tuple(dict.fromkeys(a for rule in allowing for a in rule.aws_account_ids))
        return Admission(allowing[0].policy, aws_accounts=accounts if aws else None)
    if not applicable:
        why = f"no ClusterOnboardingPolicy selects namespace {namespace}"
    else:
        why = f"no ClusterOnboardingPolicy for namespace {namespace} allows it ({'; '.join(gaps)})"
    return Admission(
        None,
        f"{_needs(spec)} is not allowed: {why}. Without a policy only credentials from Secrets in the object's own "
        "namespace can be used (spec.aws.credentials.secretRef, spec.azure.credentialsSecretRef); a cluster admin "
        f"grants the operator's identity with a ClusterOnboardingPolicy ({POLICY_DOC}). Nothing is written while it is not "
        "allowed.",
    )


def admit_in_views(
    spec: AWSConnectorSpec,
    namespace: str,
    label_views: Sequence[dict[str, str]],
    rule_views: Sequence[list[EffectiveRule]],
    adopt: bool = False,
) -> Admission:
    """The grant where every view of the namespace's labels and of the policies allows it (``narrower``): the
    operator keeps each from the watch's index and from a fresh list (handlers/tenancy.py), neither of which is
    always the newer."""
    decisions = (
        admit(spec, namespace, labels, rules, adopt) for rules in rule_views for labels in label_views
    )
    return functools.reduce(narrower, decisions)


def admit_left_behind(
    spec: AWSConnectorSpec,
    namespace: str,
    rule_views: Sequence[list[EffectiveRule]],
    allowed_by: str | None,
    adopt: bool = False,
) -> Admission:
    """The cleanup grant of an object whose namespace is gone without it (the namespace controller finalized it
    while its discovery did not list this API: kubernetes/kubernetes#127977; the campaign's seed 67162). No labels
    remain to select the namespace by, so no policy that selects by label could allow the cleanup, and it would stay
    blocked, what it made left in the clouds. The policy the operator's record says allowed the last write
    (``allowed_by``) decides instead, as if it still selected the namespace: only that policy, as it is now, with
    everything else it says (accounts, roles, tenants), and only for a cleanup, which removes only what carries the
    object's mark and the record proves. No tenant can bring this about: a namespace is deleted by whoever may delete
    namespaces, and the caller checks that it is gone."""
    if allowed_by is None or allowed_by == DEFAULT:
        return admit(spec, namespace, {}, [], adopt)
    here = NamespaceSelection(names=[namespace])
    views = [
        [rule.model_copy(update={"namespaces": here}) for rule in view if rule.policy == allowed_by]
        for view in rule_views
    ]
    return admit_in_views(spec, namespace, [{}], views, adopt)


def narrower(first: Admission, second: Admission) -> Admission:
    """What two decisions from two views of the policies (or of the namespace's labels) allow together: a refusal
    by either, else the accounts both let the operator's identity act in. The operator decides from the watch's
    index and from a fresh list (handlers/tenancy.py: rule_views, label_views), neither of which is always the
    newer: a grant holds where both have it."""
    if first.refusal is not None:
        return first
    if second.refusal is not None:
        return second
    if first.aws_accounts is None or second.aws_accounts is None or ANY in second.aws_accounts:
        return first
    if ANY in first.aws_accounts:
        return second
    both = tuple(a for a in first.aws_accounts if a in second.aws_accounts)
    return Admission(first.allowed_by, aws_accounts=both)


def named_for(key: str, asking: str) -> str:
    """Another object's "namespace/name" for a message in the status of ``asking`` ("namespace/name"): only within
    its own namespace. A tenant's status never names another namespace's objects (it would tell any tenant which
    accounts other teams onboard, and under which names)."""
    return key if key.partition("/")[0] == asking.partition("/")[0] else "an object in another namespace"
