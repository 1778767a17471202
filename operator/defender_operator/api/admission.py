"""The ValidatingAdmissionPolicy that refuses, at ``kubectl apply``, an AWSConnector no ClusterOnboardingPolicy
allows, and its binding. Generated here (crds/admission.yaml, the chart, the sandbox), so all three are the same.

It applies only where it matters: on create, or when the spec changes, of an object not being deleted, that uses the
operator's own identity on at least one side (an object with Secrets of its own is allowed by default). Its one
parameter is the EffectiveOnboardingPolicy ``effective`` the operator keeps (every policy's rule, patterns as
regexes); the namespace selection is evaluated against ``namespaceObject``. Without that parameter (the operator has
never run) such objects are refused. The same decision, in Python, is :func:`defender_operator.reconcile.tenancy.admit`.
"""

from typing import Any

from .names import (
    ANNOTATION_ADOPT,
    ANNOTATION_PAUSED,
    ANNOTATION_RECONCILE_REQUESTED_AT,
    API_VERSION,
    EFFECTIVE_KIND,
    EFFECTIVE_NAME,
    GROUP,
    PLURAL,
)
from .spec import AWSConnectorSpec

POLICY_NAME = f"{PLURAL}.{GROUP}"
FROZEN_NAME = f"{PLURAL}-deleting.{GROUP}"
HANDLER_STATE_NAME = f"{PLURAL}-handler-state.{GROUP}"
USER_ANNOTATIONS = (ANNOTATION_ADOPT, ANNOTATION_PAUSED, ANNOTATION_RECONCILE_REQUESTED_AT)


def _adopt(obj: str) -> str:
    """The adopt annotation's value on ``obj`` (object or oldObject), '' when it has none."""
    return (
        f"(has({obj}.metadata.annotations) && '{ANNOTATION_ADOPT}' in {obj}.metadata.annotations ? "
        f"{obj}.metadata.annotations['{ANNOTATION_ADOPT}'] : '')"
    )


_AWS_OWN = "has(object.spec.aws.credentials) && has(object.spec.aws.credentials.secretRef)"
_AZURE_OWN = "has(object.spec.azure.credentialsSecretRef)"
_SELECTS = (
    "r.namespaces.names.exists(n, n == object.metadata.namespace) || (has(r.namespaces.selector) && "
    "r.namespaces.selector.matchLabels.all(k, k in variables.labels && variables.labels[k] == "
    "r.namespaces.selector.matchLabels[k]) && r.namespaces.selector.matchExpressions.all(e, "
    "e.operator == 'In' ? (e.key in variables.labels && variables.labels[e.key] in e.values) : "
    "e.operator == 'NotIn' ? !(e.key in variables.labels && variables.labels[e.key] in e.values) : "
    "e.operator == 'Exists' ? e.key in variables.labels : !(e.key in variables.labels)))"
)
_ADOPTION_OK = "(!variables.adopt || (has(r.adoption) && r.adoption))"
_CIEM_ON = (
    "has(object.spec.plans) && has(object.spec.plans.cspm) && has(object.spec.plans.cspm.enabled) && "
    "object.spec.plans.cspm.enabled && has(object.spec.plans.cspm.ciem) && has(object.spec.plans.cspm.ciem.enabled) "
    "&& object.spec.plans.cspm.ciem.enabled"
)
_AWS_OK = (
    f"({_AWS_OWN}) || (r.awsAccountIds.exists(a, a == '*' || a == object.spec.aws.accountId) && "
    "(variables.roleArn != '' ? r.awsRoleArnRegexes.exists(p, variables.roleArn.matches(p)) : "
    "r.awsAmbientIdentity) && (!has(object.spec.aws.eksAccessEntries) || "
    "object.spec.aws.eksAccessEntries != 'Manage' || (has(r.awsEksAccessEntries) && r.awsEksAccessEntries)) && "
    f"(!({_CIEM_ON}) || (has(r.awsCiemTenantIds) && "
    "r.awsCiemTenantIds.exists(t, t == '*' || t == object.spec.azure.tenantId))) && "
    "(!has(object.spec.aws.organization) || (has(r.awsOrganizations) && r.awsOrganizations)) && "
    "(!has(object.spec.aws.organization) || !has(object.spec.aws.organization.delegatedAdministratorAccountId) || "
    "r.awsAccountIds.exists(a, a == '*' || a == object.spec.aws.organization.delegatedAdministratorAccountId)) && "
    "(!has(object.spec.aws.organization) || !has(object.spec.aws.organization.memberProviderRoleName) || "
    "(has(r.awsMemberRoleRegexes) && r.awsMemberRoleRegexes.exists(p, "
    f"object.spec.aws.organization.memberProviderRoleName.matches(p)))) && {_ADOPTION_OK})"
)
_AZURE_OK = (
    f"({_AZURE_OWN}) || (r.azureAmbientIdentity && "
    "r.azureTenantIds.exists(t, t == '*' || t == object.spec.azure.tenantId) && "
    "r.azureSubscriptionIds.exists(s, s == '*' || s == object.spec.azure.subscriptionId) && "
    f"r.azureResourceGroupRegexes.exists(p, object.spec.azure.resourceGroup.matches(p)) && {_ADOPTION_OK})"
)
_ADVICE = (
    "'. Without a policy only credentials from Secrets in the object\\'s own namespace can be used "
    "(spec.aws.credentials.secretRef, spec.azure.credentialsSecretRef); a cluster admin grants the operator\\'s "
    "identity with a ClusterOnboardingPolicy (docs/tenancy.md).'"
)


def admission_policy() -> dict[str, Any]:
    return _policy(
        POLICY_NAME,
        {
            # Ignore, not Fail: while an API server starts, the parameter's kind can be briefly unresolvable ("failed
            # to find resource referenced by paramKind"), and Fail would then refuse every update of an AWSConnector,
            # the operator's own finalizer removal included, so deletion would hang. A refusal by the policy itself
            # still refuses; anything admitted during such a window meets the operator's own check.
            "failurePolicy": "Ignore",
            "paramKind": {"apiVersion": API_VERSION, "kind": EFFECTIVE_KIND},
            "matchConstraints": _on("CREATE", "UPDATE"),
            "matchConditions": [
                {
                    "name": "spec-or-adoption-is-new-or-changed",
                    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec || "
                    f"{_adopt('object')} != {_adopt('oldObject')}",
                },
                {"name": "not-being-deleted", "expression": "!has(object.metadata.deletionTimestamp)"},
                {
                    "name": "uses-the-operators-identity",
                    "expression": f"!({_AWS_OWN}) || !({_AZURE_OWN})",
                },
            ],
            "variables": [
                {
                    "name": "labels",
                    "expression": "has(namespaceObject.metadata.labels) ? namespaceObject.metadata.labels : {}",
                },
                {
                    "name": "roleArn",
                    "expression": "has(object.spec.aws.credentials) && has(object.spec.aws.credentials.roleArn) ? "
                    "object.spec.aws.credentials.roleArn : ''",
                },
                {"name": "adopt", "expression": f"{_adopt('object')}.lowerAscii() == 'true'"},
                {"name": "applicable", "expression": f"params.spec.rules.filter(r, {_SELECTS})"},
            ],
            "validations": [
                {
                    "expression": f"variables.applicable.exists(r, {_AWS_OK})",
                    "messageExpression": "'spec.aws.credentials: ' + (variables.roleArn != '' ? 'assuming ' + "
                    "variables.roleArn + ' with the operator\\'s identity' : 'the operator\\'s own AWS identity') + "
                    "' for account ' + object.spec.aws.accountId + ' is not allowed in namespace ' + "
                    "object.metadata.namespace + (size(variables.applicable) == 0 ? ': no ClusterOnboardingPolicy "
                    "selects it' : ': no ClusterOnboardingPolicy for it allows that (aws.accountIds, aws.roleArns, "
                    "aws.ambientIdentity, aws.eksAccessEntries for eksAccessEntries Manage, aws.ciemTenantIds for "
                    "CIEM, aws.organizations, aws.memberRoleNames and the accountIds of organization.delegatedAdministratorAccountId "
                    "for an organization, adoption for the "
                    f"{ANNOTATION_ADOPT} annotation)') + {_ADVICE}",
                    "reason": "Forbidden",
                },
                {
                    "expression": f"variables.applicable.exists(r, {_AZURE_OK})",
                    "messageExpression": "'spec.azure.credentialsSecretRef: the operator\\'s own Azure identity for "
                    "subscription ' + object.spec.azure.subscriptionId + ', resource group ' + "
                    "object.spec.azure.resourceGroup + ' and tenant ' + object.spec.azure.tenantId + ' is not "
                    "allowed in namespace ' + object.metadata.namespace + (size(variables.applicable) == 0 ? ': no "
                    "ClusterOnboardingPolicy selects it' : ': no ClusterOnboardingPolicy for it allows that "
                    "(azure.ambientIdentity, azure.tenantIds, azure.subscriptionIds, azure.resourceGroups, adoption "
                    f"for the {ANNOTATION_ADOPT} annotation)') + {_ADVICE}",
                    "reason": "Forbidden",
                },
                {
                    "expression": f"variables.applicable.exists(r, ({_AWS_OK}) && ({_AZURE_OK}))",
                    "message": "spec.aws.credentials, spec.azure.credentialsSecretRef: each side is allowed by a "
                    "different ClusterOnboardingPolicy, but one policy must allow both (docs/tenancy.md).",
                    "reason": "Forbidden",
                },
            ],
        },
    )


def admission_binding() -> dict[str, Any]:
    return _binding(POLICY_NAME, paramRef={"name": EFFECTIVE_NAME, "parameterNotFoundAction": "Deny"})


def _unchanged(field: str) -> str:
    new, old = f"object.spec.{field}", f"oldObject.spec.{field}"
    return f"(has({new}) == has({old}) && (!has({new}) || {new} == {old}))"


def frozen_policy() -> dict[str, Any]:
    """Once an AWSConnector is being deleted its spec is frozen, but for ``deletionPolicy`` (Orphan is the way out of
    a cleanup that cannot finish): cleanup acts on the spec the operator last reconciled, never on credentials,
    accounts or roles patched in after ``kubectl delete`` (and the operator ignores such changes: it cleans up from
    its own record). No parameter, so nothing can make it unresolvable: it fails closed."""
    fields = [
        f.alias or name for name, f in AWSConnectorSpec.model_fields.items() if name != "deletion_policy"
    ]
    return _policy(
        FROZEN_NAME,
        {
            "failurePolicy": "Fail",
            "matchConstraints": _on("UPDATE"),
            "matchConditions": [
                {"name": "being-deleted", "expression": "has(oldObject.metadata.deletionTimestamp)"},
            ],
            "validations": [
                {
                    "expression": " && ".join(_unchanged(field) for field in fields),
                    "message": "spec is frozen once the AWSConnector is being deleted: cleanup uses the spec it was "
                    "last reconciled with; only spec.deletionPolicy may change (Orphan releases the object and "
                    "leaves both clouds as they are).",
                    "reason": "Forbidden",
                }
            ],
        },
    )


def frozen_binding() -> dict[str, Any]:
    return _binding(FROZEN_NAME)


def handler_state_policy() -> dict[str, Any]:
    """No AWSConnector is created with the operator's own annotations on it. Kopf keeps each handler's state in an
    annotation of the object (``defender-operator.io/cleanup``: done, or retried at a time), and believes it: an
    object created with ``{"success": true}`` there would be let go without its cleanup when deleted, its stack and
    connector left behind, by a user who may only create. Only the annotations meant for users pass (adopt, paused,
    reconcile-requested-at); the operator writes its own later, on objects that exist. No parameter: it fails
    closed."""
    allowed = ", ".join(f"'{a}'" for a in USER_ANNOTATIONS)
    return _policy(
        HANDLER_STATE_NAME,
        {
            "failurePolicy": "Fail",
            "matchConstraints": _on("CREATE"),
            "validations": [
                {
                    "expression": "!has(object.metadata.annotations) || object.metadata.annotations.all(k, "
                    f"!k.startsWith('{GROUP}/') || k in [{allowed}])",
                    "message": f"metadata.annotations: the only {GROUP}/ annotations an AWSConnector may be "
                    f"created with are {', '.join(USER_ANNOTATIONS)}; the others are the operator's own state",
                    "reason": "Forbidden",
                }
            ],
        },
    )


def handler_state_binding() -> dict[str, Any]:
    return _binding(HANDLER_STATE_NAME)


_LABELS = {"app.kubernetes.io/part-of": "defender-operator"}


def _on(*operations: str) -> dict[str, Any]:
    """A policy's matchConstraints: AWSConnectors, in any version, on ``operations``."""
    rule = {"apiGroups": [GROUP], "apiVersions": ["*"], "operations": list(operations), "resources": [PLURAL]}
    return {"resourceRules": [rule]}


def _policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "spec": spec,
    }


def _binding(name: str, **spec: Any) -> dict[str, Any]:
    """The binding of policy ``name``: it refuses (Deny) what the policy does not validate."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name, "labels": dict(_LABELS)},
        "spec": {"policyName": name, "validationActions": ["Deny"], **spec},
    }


def admission_objects() -> list[dict[str, Any]]:
    """Everything admission needs, as crds/admission.yaml, the chart and the sandbox install it."""
    return [
        admission_policy(),
        admission_binding(),
        frozen_policy(),
        frozen_binding(),
        handler_state_policy(),
        handler_state_binding(),
    ]
