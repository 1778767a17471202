"""Regenerate operator/defender_operator/render/data/iam-catalog.json from the IAM facts of Microsoft's template.

The facts (../shared/reference/defender-aws-iam-facts.json) were extracted from Microsoft's Terraform port of the
Defender onboarding template (Azure/Microsoft-Defender-for-Cloud MultiCloud/AWS/AwsOnboarding.tf @ 20917cec). That
port has bugs; this script copies the data and fixes them, each fix named in FIXES below and in
docs/aws-permissions.md. Run it only when the facts change:

    python tools/import_iam_facts.py ../shared/reference/defender-aws-iam-facts.json

The catalog uses its own placeholders, which the renderers resolve per target (CloudFormation or Terraform):
{partition}, {account}, {dnsSuffix}, {tenant}, {oidcProvider}, {oidcHost}, {ciemOidcProvider}, {ciemOidcHost},
{oidcSubject}, {externalId} and {role:<key>} for the name of another role of the catalog.
"""

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "operator/defender_operator/render/data/iam-catalog.json"

# defaultName in the facts -> the key used by spec.aws.roleNames.
ROLE_KEYS = {
    "CspmMonitorAws": "cspmMonitor",
    "DefenderForCloud-AgentlessScanner": "agentlessScanner",
    "DefenderForCloud-DefenderForServers": "defenderForServers",
    "DefenderForCloud-ArcAutoProvisioning": "arcAutoProvisioning",
    "AWS-MDCSetup-HostMgmtRole-us-east-1-MDCSetup": "ssmAutomation",
    "DefenderForCloud-Containers-K8s": "containersK8s",
    "DefenderForCloud-DataCollection": "dataCollection",
    "DefenderForCloud-Containers-K8s-cloudwatch-to-kinesis": "cloudWatchToKinesis",
    "DefenderForCloud-Containers-K8s-kinesis-to-s3": "kinesisToS3",
    "MDCContainersAgentlessDiscoveryK8sRole": "k8sAgentlessDiscovery",
    "MDCContainersImageAssessmentRole": "imageAssessment",
    "SensitiveDataDiscovery": "sensitiveDataDiscovery",
    "DefenderForCloud-DataSecurityPostureDB": "databasesDspm",
    "DefenderForCloud-Ciem": "ciemDiscovery",
    "DefenderForCloud-OidcCiem": "ciemOidc",
}

# The port's two inline policy names on the SSM automation role are swapped and carry region and configuration id.
POLICY_NAMES = {
    "SSMHostMgmt-CreateAndAttachRoleInlinePolicy": "SSMHostMgmt-ExplorerSetup",
    "AWS-MDCSetup-SSMHostMgmt-CreateAndAttachRoleInlinePolicy-us-east-1-MDCSetup": "SSMHostMgmt-CreateAndAttachRole",
}

# The port's descriptions carry copy-paste slips (caveat 18); each role says what it is for instead.
DESCRIPTIONS = {
    "cspmMonitor": "Foundational CSPM: read-only access for posture assessment",
    "agentlessScanner": "Agentless scanning: snapshots EC2 disks and scans them",
    "defenderForServers": "Defender for Servers: just-in-time network access",
    "arcAutoProvisioning": "Defender for Servers and Databases: installs Azure Arc through Systems Manager",
    "ssmAutomation": "Systems Manager automation that prepares EC2 instances for Azure Arc",
    "containersK8s": "Defender for Containers: EKS audit-log pipeline and cluster configuration",
    "dataCollection": "Defender for Containers: reads the EKS audit-log pipeline",
    "cloudWatchToKinesis": "Defender for Containers: CloudWatch Logs to Kinesis Data Firehose",
    "kinesisToS3": "Defender for Containers: Kinesis Data Firehose to S3",
    "k8sAgentlessDiscovery": "Agentless discovery of EKS clusters",
    "imageAssessment": "Vulnerability assessment of container images in ECR",
    "sensitiveDataDiscovery": "Sensitive data discovery in S3",
    "databasesDspm": "Data security posture and threat protection for RDS databases",
    "ciemOidc": "CIEM: federated with your Entra tenant, assumes the CIEM discovery role",
    "ciemDiscovery": "CIEM: reads IAM and CloudTrail for permissions analysis",
}

MS_HOST = "sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"

# Newer than the Terraform port: Microsoft's "Permissions to install Defender for Containers components in AWS and
# GCP" page (learn.microsoft.com/azure/defender-for-cloud/containers-permissions, read 2026-11-30) grants the
# Containers K8s role and the agentless-discovery role these EKS access-entry actions, with which Defender maps its
# role into clusters whose authentication mode allows access entries. tests/unit/test_permissions.py fails when one
# is missing from the catalog.
EKS_ACCESS_ENTRY_ACTIONS = [
    "eks:CreateAccessEntry",
    "eks:ListAccessEntries",
    "eks:AssociateAccessPolicy",
    "eks:ListAssociatedAccessPolicies",
]
DOCS_ADDITIONS = {
    "containersK8s": EKS_ACCESS_ENTRY_ACTIONS,
    "k8sAgentlessDiscovery": EKS_ACCESS_ENTRY_ACTIONS,
}

FIXES = [
    "CSPM Default access = ReadOnlyAccess plus the billing Deny (the port creates the Deny but never attaches it).",
    "iam:AttacheRolePolicy (not an IAM action) is iam:AttachRolePolicy.",
    "OidcCiem may assume the CIEM discovery role, by name, in any account, as Microsoft's template has it (the "
    "port's ARN has a stray '}'): an organization's management account reaches its members' CIEM roles with it, and "
    "each CIEM role trusts only the OidcCiem role it names; only sts:AssumeRole and sts:TagSession, the STS actions "
    "that apply to a role resource.",
    "Hard-coded 'arn:aws:' becomes the deploying partition.",
    "Duplicate actions are listed once.",
    "Microsoft-federated trusts use StringEquals (the port's StringLike has no wildcard in it).",
    "DataCollection trusts only Microsoft's azuredefender-eks user with the external id, not the Sentinel audience "
    "api://1462b192-... that the identity provider does not list (so that statement could never match).",
    "Service trusts (ssm, logs) are limited to this account with aws:SourceAccount / aws:SourceArn.",
    "iam:PassRole for the Containers pipeline also names the configured role names, so renamed roles keep working.",
    "Role and policy names that embedded a region or tenant come from the spec.",
    "List actions without resource-level permissions (logs:DescribeLogGroups, firehose:ListDeliveryStreams, "
    "sqs:ListQueues) get Resource '*' (scoped to ARNs they never match).",
    "ec2:NewInstanceProfile is compared with ArnEquals (it is an ARN).",
    "The Containers K8s and agentless-discovery roles get the EKS access-entry actions Microsoft's containers-permissions "
    "page lists today (eks:CreateAccessEntry, eks:ListAccessEntries, eks:AssociateAccessPolicy, "
    "eks:ListAssociatedAccessPolicies).",
]


def _sub(value: Any, replacements: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in replacements.items():
            value = value.replace(old, new)
        return value
    if isinstance(value, list):
        return [_sub(v, replacements) for v in value]
    if isinstance(value, dict):
        return {_sub(k, replacements): _sub(v, replacements) for k, v in value.items()}
    return value


# Actions that support no resource-level permissions (Service Authorization Reference: "Resource types" is empty, so
# the statement must say "*"). The port scopes them to ARNs, where IAM never matches them.
UNSCOPED_ACTIONS = {"logs:DescribeLogGroups", "firehose:ListDeliveryStreams", "sqs:ListQueues"}


def _dedupe(statements: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    unscoped: list[str] = []
    for st in statements:
        st = dict(st)
        if isinstance(st.get("Action"), list):
            st["Action"] = list(dict.fromkeys(st["Action"]))
            if st.get("Resource") not in ("*", ["*"]):
                unscoped += [a for a in st["Action"] if a in UNSCOPED_ACTIONS]
                st["Action"] = [a for a in st["Action"] if a not in UNSCOPED_ACTIONS]
        condition = st.get("Condition", {})
        if "ec2:NewInstanceProfile" in condition.get("StringEquals", {}):
            condition["ArnEquals"] = {
                "ec2:NewInstanceProfile": condition.pop("StringEquals")["ec2:NewInstanceProfile"]
            }
        if st.get("Action"):
            out.append({k: st[k] for k in ("Sid", "Effect", "Action", "Resource", "Condition") if k in st})
    if unscoped:
        out.append({"Effect": "Allow", "Action": sorted(set(unscoped)), "Resource": "*"})
    return out


def _trust(role: dict[str, Any], key: str) -> list[dict[str, Any]]:
    statements = []
    for t in role["trust"]:
        principal = t["principal"]
        if key == "dataCollection" and "Federated" in principal:
            continue
        if "Federated" in principal and MS_HOST in principal["Federated"][0]:
            aud = next(c["values"][0] for c in t["conditions"] if c["variable"].endswith(":aud"))
            statements.append(
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": "{oidcProvider}"},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            "{oidcHost}:aud": aud,
                            "sts:RoleSessionName": "MicrosoftDefenderForClouds_{tenant}",
                        }
                    },
                }
            )
        elif "Federated" in principal:  # CIEM: the customer's own tenant
            statements.append(
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": "{ciemOidcProvider}"},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            "{ciemOidcHost}:aud": "api://mciem-aws-oidc-app",
                            "{ciemOidcHost}:sub": "{oidcSubject}",
                        }
                    },
                }
            )
        elif "Service" in principal:
            service = principal["Service"][0]
            condition: dict[str, Any] = {}
            for c in t["conditions"]:
                condition.setdefault(c["test"], {})[c["variable"]] = (
                    "{account}" if "account_id" in c["values"][0] else c["values"][0]
                )
            if service == "ssm.amazonaws.com":
                condition.setdefault("StringEquals", {})["aws:SourceAccount"] = "{account}"
            if service == "logs.amazonaws.com":
                condition.setdefault("StringLike", {})["aws:SourceArn"] = "arn:{partition}:logs:*:{account}:*"
            st: dict[str, Any] = {
                "Effect": "Allow",
                "Principal": {"Service": service},
                "Action": "sts:AssumeRole",
            }
            if condition:
                st["Condition"] = condition
            statements.append(st)
        else:  # an AWS principal
            arn = principal["AWS"][0]
            if key == "ciemDiscovery":
                arn = "arn:{partition}:iam::{account}:role/{role:ciemOidc}"
            st = {"Effect": "Allow", "Principal": {"AWS": arn}, "Action": "sts:AssumeRole"}
            if key == "dataCollection":
                st["Condition"] = {"StringEquals": {"sts:ExternalId": "{externalId}"}}
            statements.append(st)
    return statements


def main(facts_path: str) -> None:
    facts = json.loads(Path(facts_path).read_text())
    replacements = {
        "${local.partition}": "{partition}",
        "arn:aws:": "arn:{partition}:",
        "${local.account_id}": "{account}",
        "${local.aws_dns_suffix}": "{dnsSuffix}",
        "${var.client_tenant}": "{tenant}",
        "iam:AttacheRolePolicy": "iam:AttachRolePolicy",
        "AWS-MDCSetup-HostMgmtRole-us-east-1-MDCSetup": "{role:ssmAutomation}",
    }
    roles: dict[str, Any] = {}
    for role in facts["roles"]:
        key = ROLE_KEYS[role["defaultName"]]
        policies = []
        for p in role.get("customPolicies", []):
            statements = _dedupe(_sub(p["statements"], replacements))
            name = POLICY_NAMES.get(p["name"], _sub(p["name"], replacements))
            if key == "ciemOidc":
                statements = [
                    {
                        "Effect": "Allow",
                        "Action": ["sts:AssumeRole", "sts:TagSession"],
                        "Resource": "arn:{partition}:iam::*:role/{role:ciemDiscovery}",
                    }
                ]
            if key == "containersK8s":
                for st in statements:
                    if st["Action"] == ["iam:PassRole"]:
                        st["Resource"] = [
                            *st["Resource"],
                            *(
                                "arn:{partition}:iam::{account}:role/{role:" + k + "}"
                                for k in ("cloudWatchToKinesis", "kinesisToS3")
                            ),
                        ]
            for st in statements:  # the EKS statement grows the actions Microsoft documents today
                if "eks:DescribeCluster" in st["Action"]:
                    st["Action"] = [
                        *st["Action"],
                        *(a for a in DOCS_ADDITIONS.get(key, []) if a not in st["Action"]),
                    ]
            access = {
                "default": ["Default"],
                "leastPrivilege": ["LeastPrivilege"],
                "both": ["Default", "LeastPrivilege"],
            }
            policies.append({"name": name, "access": access[p["appliesTo"]], "statements": statements})
        managed = {
            "Default": [a.rsplit("/", 1)[-1] for a in role["managedPolicies"]["default"]],
            "LeastPrivilege": [a.rsplit("/", 1)[-1] for a in role["managedPolicies"]["leastPrivilege"]],
        }
        roles[key] = {
            "description": DESCRIPTIONS[key],
            "plans": role["plans"],
            "trust": _trust(role, key),
            "managedPolicies": managed,
            "policies": policies,
        }
    provider = facts["oidcProviders"][0]
    catalog = {
        "source": {k: facts["source"][k] for k in ("repo", "path", "commit", "date")},
        "fixes": FIXES,
        "microsoftOidc": {
            "url": provider["url"],
            "host": MS_HOST,
            "thumbprints": provider["thumbprints"],
            "audiences": provider["clientIdList"],
        },
        "ciemOidc": {
            "audience": "api://mciem-aws-oidc-app",
            "thumbprints": facts["oidcProviders"][1]["thumbprints"],
        },
        "roles": roles,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(catalog, indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/reference/defender-aws-iam-facts.json")
