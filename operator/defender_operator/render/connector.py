"""The Microsoft.Security/securityConnectors body for api-version 2024-08-01-preview.

The body is built from the spec alone: role ARNs follow from the account id and the role names, because every role
is created with an explicit name and the default path. The operator checks that the stack's outputs agree before it
sends the body (see reconcile/). Disabled capabilities are sent as ``{"enabled": false}`` without a role, because the
role does not exist then.
"""

from typing import Any

from ..api.spec import ArcAutoProvisioning, AWSConnectorSpec, TagMap
from .catalog import required_roles, role_name
from .placeholders import data_collection_external_id

API_VERSION = "2024-08-01-preview"
RESOURCE_TYPE = "Microsoft.Security/securityConnectors"


def role_arn(spec: AWSConnectorSpec, key: str, partition: str = "aws") -> str:
    return f"arn:{partition}:iam::{spec.aws.account_id}:role/{role_name(spec, key)}"


def default_role_arns(spec: AWSConnectorSpec) -> dict[str, str]:
    """The ARN of every role the spec needs, as the stack will create them."""
    return {key: role_arn(spec, key) for key in required_roles(spec)}


def _switch(enabled: bool, arn: str | None) -> dict[str, Any]:
    return {"enabled": True, "cloudRoleArn": arn} if enabled and arn else {"enabled": False}


def _vm_scanners(enabled: bool, arn: str | None, exclusion_tags: TagMap) -> dict[str, Any]:
    scanners = _switch(enabled, arn)
    if scanners["enabled"]:
        scanners["configuration"] = {
            "scanningMode": "Default",
            "exclusionTags": dict(sorted(exclusion_tags.items())),
        }
    return scanners


def _arc(arc: ArcAutoProvisioning, arn: str | None) -> dict[str, Any]:
    section = _switch(arc.enabled, arn)
    if section["enabled"]:
        configuration = {"proxy": arc.proxy, "privateLinkScope": arc.private_link_scope}
        section["configuration"] = {k: v for k, v in configuration.items() if v}
    return section


def _offerings(spec: AWSConnectorSpec, arns: dict[str, str]) -> list[dict[str, Any]]:
    p = spec.plans
    offerings: list[dict[str, Any]] = [
        {"offeringType": "CspmMonitorAws", "nativeCloudConnection": {"cloudRoleArn": arns["cspmMonitor"]}}
    ]
    if p.cspm.enabled:
        c = p.cspm
        cspm: dict[str, Any] = {
            "offeringType": "DefenderCspmAws",
            "vmScanners": _vm_scanners(
                c.agentless_vm_scanning.enabled,
                arns.get("agentlessScanner"),
                c.agentless_vm_scanning.exclusion_tags,
            ),
            "dataSensitivityDiscovery": _switch(
                c.sensitive_data_discovery.enabled, arns.get("sensitiveDataDiscovery")
            ),
            "databasesDspm": _switch(c.databases_dspm.enabled, arns.get("databasesDspm")),
            "mdcContainersImageAssessment": _switch(
                c.container_image_assessment.enabled, arns.get("imageAssessment")
            ),
            "mdcContainersAgentlessDiscoveryK8s": _switch(
                c.kubernetes_discovery.enabled, arns.get("k8sAgentlessDiscovery")
            ),
        }
        if c.ciem.enabled:
            cspm["ciem"] = {
                "ciemDiscovery": {"cloudRoleArn": arns["ciemDiscovery"]},
                "ciemOidc": {
                    "cloudRoleArn": arns["ciemOidc"],
                    "azureActiveDirectoryAppName": c.ciem.entra_app_name,
                },
            }
        offerings.append(cspm)
    if p.servers.enabled:
        s = p.servers
        offerings.append(
            {
                "offeringType": "DefenderForServersAws",
                "defenderForServers": {"cloudRoleArn": arns["defenderForServers"]},
                "arcAutoProvisioning": _arc(s.arc_auto_provisioning, arns.get("arcAutoProvisioning")),
                "mdeAutoProvisioning": {"enabled": s.defender_for_endpoint.enabled, "configuration": {}},
                "vaAutoProvisioning": {
                    "enabled": s.vulnerability_assessment.enabled,
                    "configuration": {"type": s.vulnerability_assessment.provider},
                },
                "subPlan": {"type": s.sub_plan},
                "vmScanners": _vm_scanners(
                    s.agentless_scanning_on, arns.get("agentlessScanner"), s.agentless_scanning.exclusion_tags
                ),
            }
        )
    if p.containers.enabled:
        k = p.containers
        containers: dict[str, Any] = {
            "offeringType": "DefenderForContainersAws",
            "kubernetesService": {"cloudRoleArn": arns["containersK8s"]},
            "enableAuditLogsAutoProvisioning": k.audit_logs.enabled,
            "enableDefenderAgentAutoProvisioning": k.defender_sensor.enabled,
            "enablePolicyAgentAutoProvisioning": k.policy_agent.enabled,
            "mdcContainersImageAssessment": _switch(k.image_assessment.enabled, arns.get("imageAssessment")),
            "mdcContainersAgentlessDiscoveryK8s": _switch(
                k.kubernetes_discovery.enabled, arns.get("k8sAgentlessDiscovery")
            ),
            "vmScanners": _vm_scanners(
                k.node_scanning.enabled, arns.get("agentlessScanner"), k.node_scanning.exclusion_tags
            ),
        }
        if k.audit_logs.enabled:
            containers.update(
                {
                    "kubernetesDataCollection": {"cloudRoleArn": arns["dataCollection"]},
                    "cloudWatchToKinesis": {"cloudRoleArn": arns["cloudWatchToKinesis"]},
                    "kinesisToS3": {"cloudRoleArn": arns["kinesisToS3"]},
                    "kubeAuditRetentionTime": k.audit_logs.retention_days,
                    "dataCollectionExternalId": data_collection_external_id(spec),
                }
            )
        offerings.append(containers)
    if p.databases.enabled:
        d = p.databases
        offerings.append(
            {
                "offeringType": "DefenderForDatabasesAws",
                "arcAutoProvisioning": _arc(d.arc_auto_provisioning, arns.get("arcAutoProvisioning")),
                "rds": _switch(d.rds.enabled, arns.get("databasesThreatProtection")),
                "databasesDspm": _switch(d.dspm.enabled, arns.get("databasesDspm")),
            }
        )
    return offerings


def connector_body(spec: AWSConnectorSpec, role_arns: dict[str, str] | None = None) -> dict[str, Any]:
    """The PUT body. ``role_arns`` are the stack's outputs; by default, the ARNs the stack will create."""
    arns = default_role_arns(spec) if role_arns is None else role_arns
    environment: dict[str, Any] = {
        "environmentType": "AwsAccount",
        "regions": sorted(spec.aws.regions),
        "scanInterval": spec.scan_interval_hours,
    }
    if spec.aws.organization is not None:
        environment["organizationalData"] = {
            "organizationMembershipType": "Organization",
            "stacksetName": spec.aws.organization.stack_set_name,
            "excludedAccountIds": sorted(spec.aws.organization.excluded_account_ids),
        }
    body: dict[str, Any] = {
        "location": spec.azure.location,
        "properties": {
            "hierarchyIdentifier": spec.aws.account_id,
            "environmentName": "AWS",
            "environmentData": environment,
            "offerings": _offerings(spec, arns),
        },
    }
    if spec.azure.tags:
        body["tags"] = dict(sorted(spec.azure.tags.items()))
    return body
