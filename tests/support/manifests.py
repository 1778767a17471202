"""Manifests for tests: a valid base, and a table of bad ones with the field each must be rejected on.

The same table runs against ``defender-operator render`` (pydantic) and against the real API server (OpenAPI schema
and CEL), so the two validators cannot drift apart.
"""

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Manifest = dict[str, Any]


def base_manifest(name: str = "acme", namespace: str = "default", account: str = "111122223333") -> Manifest:
    return {
        "apiVersion": "defender-operator.io/v1alpha1",
        "kind": "AWSConnector",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "azure": {
                "subscriptionId": "11111111-2222-3333-4444-555555555555",
                "tenantId": "99999999-8888-7777-6666-555555555555",
                "resourceGroup": "defender-connectors",
                "location": "westeurope",
            },
            "aws": {"accountId": account, "regions": ["us-east-1"]},
        },
    }


def _set(path: str, value: Any) -> Callable[[Manifest], None]:
    def mutate(m: Manifest) -> None:
        node = m
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = value

    return mutate


@dataclass(frozen=True)
class BadCase:
    id: str
    mutate: Callable[[Manifest], None]
    field: str  # the field path the error must name
    on_update: bool = False  # a transition rule: only an update of an existing object can break it

    def apply(self, manifest: Manifest) -> Manifest:
        out = copy.deepcopy(manifest)
        self.mutate(out)
        return out


BAD_CASES: list[BadCase] = [
    BadCase("account-id-short", _set("spec.aws.accountId", "12345"), "spec.aws.accountId"),
    BadCase("account-id-letters", _set("spec.aws.accountId", "11112222333a"), "spec.aws.accountId"),
    BadCase("interval-5", _set("spec.scanIntervalHours", 5), "spec.scanIntervalHours"),
    BadCase("region-mars", _set("spec.aws.regions", ["mars-1"]), "spec.aws.regions[0]"),
    BadCase("region-duplicate", _set("spec.aws.regions", ["us-east-1", "us-east-1"]), "spec.aws.regions"),
    BadCase(
        "subscription-not-uuid", _set("spec.azure.subscriptionId", "not-a-guid"), "spec.azure.subscriptionId"
    ),
    BadCase("tenant-not-uuid", _set("spec.azure.tenantId", "1234"), "spec.azure.tenantId"),
    BadCase(
        "resource-group-trailing-dot", _set("spec.azure.resourceGroup", "rg."), "spec.azure.resourceGroup"
    ),
    BadCase("location-aws-style", _set("spec.azure.location", "eu-west-1"), "spec.azure.location"),
    BadCase("unknown-field", _set("spec.plans.servers.turbo", True), "spec.plans.servers.turbo"),
    # CRD and operator once disagreed: the API server took a 129-character tag key the operator could not parse.
    BadCase("tag-key-129", _set("spec.azure.tags", {"k" * 129: "v"}), "spec.azure.tags"),
    BadCase(
        "exclusion-tag-key-129",
        _set(
            "spec.plans.cspm", {"enabled": True, "agentlessVmScanning": {"exclusionTags": {"k" * 129: "v"}}}
        ),
        "spec.plans.cspm.agentlessVmScanning.exclusionTags",
    ),
    BadCase("tags-51", _set("spec.azure.tags", {f"k{i}": "v" for i in range(51)}), "spec.azure.tags"),
    BadCase(
        "agentless-with-p1",
        _set("spec.plans.servers", {"subPlan": "P1", "agentlessScanning": {"enabled": True}}),
        "spec.plans.servers.agentlessScanning",
    ),
    BadCase("subplan-p3", _set("spec.plans.servers.subPlan", "P3"), "spec.plans.servers.subPlan"),
    BadCase(
        "va-provider",
        _set("spec.plans.servers.vulnerabilityAssessment.provider", "Nessus"),
        "spec.plans.servers.vulnerabilityAssessment.provider",
    ),
    BadCase(
        "retention-zero",
        _set("spec.plans.containers.auditLogs.retentionDays", 0),
        "spec.plans.containers.auditLogs.retentionDays",
    ),
    BadCase(
        "ciem-without-subject",
        _set("spec.plans.cspm.ciem", {"enabled": True}),
        "spec.plans.cspm.ciem.oidcSubject",
    ),
    BadCase("access-typo", _set("spec.access", "LeastPrivileged"), "spec.access"),
    BadCase("deletion-policy", _set("spec.deletionPolicy", "Retain"), "spec.deletionPolicy"),
    BadCase(
        "external-id-without-role",
        _set("spec.aws.credentials", {"externalId": "abc123"}),
        "spec.aws.credentials.externalId",
    ),
    BadCase(
        "role-in-other-account",
        _set("spec.aws.credentials", {"roleArn": "arn:aws:iam::999999999999:role/onboarding"}),
        "spec.aws.credentials",
    ),
    BadCase(
        "role-name-too-long",
        _set("spec.aws.roleNames.cspmMonitor", "x" * 65),
        "spec.aws.roleNames.cspmMonitor",
    ),
    BadCase(
        "stack-name", _set("spec.deployment.stackName", "1-starts-with-digit"), "spec.deployment.stackName"
    ),
    # The operator's IAM policy allows stacks and StackSets under DefenderForCloud- only (issue 28).
    BadCase(
        "stack-name-outside-the-policy",
        _set("spec.deployment.stackName", "Onboarding"),
        "spec.deployment.stackName",
    ),
    BadCase(
        "stack-set-name-outside-the-policy",
        _set("spec.aws.organization", {"stackSetName": "Members"}),
        "spec.aws.organization.stackSetName",
    ),
    BadCase(
        "terraform-with-member-provider-role",
        lambda m: (
            _set("spec.aws.organization", {"memberProviderRoleName": "OrganizationAccountAccessRole"})(m),
            _set("spec.deployment.method", "Terraform")(m),
        ),
        "spec.deployment",
    ),
    BadCase(
        "delegated-administrator-is-the-management-account",
        lambda m: _set(
            "spec.aws.organization", {"delegatedAdministratorAccountId": m["spec"]["aws"]["accountId"]}
        )(m),
        "spec.aws.organization.delegatedAdministratorAccountId",
    ),
    BadCase(
        "role-outside-the-delegated-administrator",
        lambda m: (
            _set("spec.aws.organization", {"delegatedAdministratorAccountId": "210987654321"})(m),
            _set(
                "spec.aws.credentials",
                {"roleArn": f"arn:aws:iam::{m['spec']['aws']['accountId']}:role/defender-onboarding"},
            )(m),
        ),
        "spec.aws.credentials.roleArn",
    ),
    BadCase(
        "terraform-with-delegated-administrator",
        lambda m: (
            _set("spec.aws.organization", {"delegatedAdministratorAccountId": "210987654321"})(m),
            _set("spec.deployment.method", "Terraform")(m),
        ),
        "spec.deployment",
    ),
    BadCase(
        "excluded-account",
        _set("spec.aws.organization", {"excludedAccountIds": ["12"]}),
        "spec.aws.organization.excludedAccountIds[0]",
    ),
    BadCase(
        "secret-name",
        _set("spec.azure.credentialsSecretRef", {"name": "Not_A_Name"}),
        "spec.azure.credentialsSecretRef.name",
    ),
    BadCase(
        "change-account-id", _set("spec.aws.accountId", "999988887777"), "spec.aws.accountId", on_update=True
    ),
    BadCase(
        "change-subscription",
        _set("spec.azure.subscriptionId", "22222222-2222-3333-4444-555555555555"),
        "spec.azure.subscriptionId",
        on_update=True,
    ),
    BadCase(
        "change-resource-group",
        _set("spec.azure.resourceGroup", "elsewhere"),
        "spec.azure.resourceGroup",
        on_update=True,
    ),
    BadCase(
        "add-connector-name",
        _set("spec.azure.connectorName", "renamed"),
        "spec.azure.connectorName",
        on_update=True,
    ),
]
