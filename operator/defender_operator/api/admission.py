"""The ValidatingAdmissionPolicy that refuses, at ``kubectl apply``, an AWSConnector no ClusterOnboardingPolicy
allows, and its binding. Generated here (crds/admission.yaml, the chart, the sandbox), so all three are the same.

It applies only where it matters: on create, or when the spec changes, of an object not being deleted, that uses the
operator's own identity on at least one side (an object with Secrets of its own is allowed by default). Its one
parameter is the EffectiveOnboardingPolicy ``effective`` the operator keeps (every policy's rule, patterns as
regexes); the namespace selection is evaluated against ``namespaceObject``. Without that parameter (the operator has
never run) such objects are refused. The same decision, in Python, is :func:`defender_operator.reconcile.tenancy.admit`.
"""

from typing import Any

from .names import API_VERSION, EFFECTIVE_KIND, EFFECTIVE_NAME, GROUP, PLURAL

POLICY_NAME = f"{PLURAL}.{GROUP}"

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
_AWS_OK = (
    f"({_AWS_OWN}) || (r.awsAccountIds.exists(a, a == '*' || a == object.spec.aws.accountId) && "
    "(variables.roleArn != '' ? r.awsRoleArnRegexes.exists(p, variables.roleArn.matches(p)) : "
    "r.awsAmbientIdentity) && (!has(object.spec.aws.eksAccessEntries) || "
    "object.spec.aws.eksAccessEntries != 'Manage' || (has(r.awsEksAccessEntries) && r.awsEksAccessEntries)))"
)
_AZURE_OK = (
    f"({_AZURE_OWN}) || (r.azureAmbientIdentity && "
    "r.azureTenantIds.exists(t, t == '*' || t == object.spec.azure.tenantId) && "
    "r.azureSubscriptionIds.exists(s, s == '*' || s == object.spec.azure.subscriptionId) && "
    "r.azureResourceGroupRegexes.exists(p, object.spec.azure.resourceGroup.matches(p)))"
)
_ADVICE = (
    "'. Without a policy only credentials from Secrets in the object\\'s own namespace can be used "
    "(spec.aws.credentials.secretRef, spec.azure.credentialsSecretRef); a cluster admin grants the operator\\'s "
    "identity with a ClusterOnboardingPolicy (docs/tenancy.md).'"
)


def admission_policy() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "defender-operator"}},
        "spec": {
            # Ignore, not Fail: while an API server starts, the parameter's kind can be briefly unresolvable ("failed
            # to find resource referenced by paramKind"), and Fail would then refuse every update of an AWSConnector,
            # the operator's own finalizer removal included, so deletion would hang. A refusal by the policy itself
            # still refuses; anything admitted during such a window meets the operator's own check.
            "failurePolicy": "Ignore",
            "paramKind": {"apiVersion": API_VERSION, "kind": EFFECTIVE_KIND},
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE", "UPDATE"],
                        "resources": [PLURAL],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "spec-is-new-or-changed",
                    "expression": "request.operation == 'CREATE' || object.spec != oldObject.spec",
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
                    f"aws.ambientIdentity, aws.eksAccessEntries for eksAccessEntries Manage)') + {_ADVICE}",
                    "reason": "Forbidden",
                },
                {
                    "expression": f"variables.applicable.exists(r, {_AZURE_OK})",
                    "messageExpression": "'spec.azure.credentialsSecretRef: the operator\\'s own Azure identity for "
                    "subscription ' + object.spec.azure.subscriptionId + ', resource group ' + "
                    "object.spec.azure.resourceGroup + ' and tenant ' + object.spec.azure.tenantId + ' is not "
                    "allowed in namespace ' + object.metadata.namespace + (size(variables.applicable) == 0 ? ': no "
                    "ClusterOnboardingPolicy selects it' : ': no ClusterOnboardingPolicy for it allows that "
                    f"(azure.ambientIdentity, azure.tenantIds, azure.subscriptionIds, azure.resourceGroups)') + {_ADVICE}",
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
    }


def admission_binding() -> dict[str, Any]:
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": {"app.kubernetes.io/part-of": "defender-operator"}},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "paramRef": {"name": EFFECTIVE_NAME, "parameterNotFoundAction": "Deny"},
        },
    }
