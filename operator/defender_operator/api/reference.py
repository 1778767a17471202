"""docs/reference.md, generated from the same schema as the CRD (so the two cannot disagree).

``defender-operator docs reference > docs/reference.md`` rewrites it; a test fails when it is stale.
"""

import json
from typing import Any

from .crd import openapi_schema
from .names import API_VERSION, KIND
from .spec import AWSConnectorSpec
from .status import AWSConnectorStatus

_HEADER = f"""# AWSConnector reference

`{API_VERSION}`, kind `{KIND}` (short name `awsc`). Generated from the API models by
`defender-operator docs reference`; do not edit by hand. `kubectl explain awsconnector.spec...` shows the same text.

Rules that span fields (CEL in the CRD, and the same checks in `defender-operator render`):

- `spec.aws.accountId`, `spec.azure.subscriptionId`, `spec.azure.resourceGroup`, `spec.azure.connectorName`,
  `spec.deployment.method`, `spec.deployment.stackName`, `spec.deployment.region` and
  `spec.aws.organization.stackSetName` cannot change; `spec.aws.organization` and `spec.azure.connectorName` cannot
  be added or removed after creation.
- `spec.plans.servers.agentlessScanning.enabled: true` needs `spec.plans.servers.subPlan: P2`.
- `spec.plans.cspm.ciem.enabled: true` needs `spec.plans.cspm.ciem.oidcSubject`.
- `spec.aws.credentials.externalId` needs `spec.aws.credentials.roleArn`, and the role must be in `spec.aws.accountId`.
- Lists are sets: duplicates are rejected.

"""


def _type(node: dict[str, Any]) -> str:
    kind = str(node.get("type", "object"))
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and isinstance(node.get("additionalProperties"), dict):
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    if "enum" in node:
        parts.append("one of " + ", ".join(f"`{v}`" for v in node["enum"]))
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    for key, label in (
        ("minimum", "≥"),
        ("maximum", "≤"),
        ("minLength", "min length"),
        ("maxLength", "max length"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    items = node.get("items", {})
    if "enum" in items:
        parts.append(
            f"items: {len(items['enum'])} allowed values"
            if len(items["enum"]) > 8
            else "items one of " + ", ".join(f"`{v}`" for v in items["enum"])
        )
    if "pattern" in items:
        parts.append(f"items match `{items['pattern']}`")
    return "; ".join(parts)


def _rows(node: dict[str, Any], path: str, required: set[str]) -> list[str]:
    rows = []
    for name, prop in node.get("properties", {}).items():
        field = f"{path}.{name}"
        default = prop.get("default")
        shown_default = "" if default is None or default == {} else f"`{json.dumps(default)}`"
        description = str(prop.get("description", "")).replace("|", "\\|").replace("\n", " ")
        req = "yes" if name in required else ""
        rows.append(
            f"| `{field}` | {_type(prop)} | {req} | {shown_default} | {description} | {_constraints(prop)} |"
        )
        target = prop.get("items", prop) if prop.get("type") == "array" else prop
        if target.get("properties"):
            rows += _rows(
                target, field + ("[]" if prop.get("type") == "array" else ""), set(target.get("required", []))
            )
    return rows


def _table(title: str, root: str, schema: dict[str, Any]) -> str:
    header = "| field | type | required | default | description | validation |\n|---|---|---|---|---|---|"
    body = "\n".join(_rows(schema, root, set(schema.get("required", []))))
    return f"## {title}\n\n{header}\n{body}\n"


def reference_markdown() -> str:
    return (
        _HEADER
        + _table("spec", "spec", openapi_schema(AWSConnectorSpec))
        + "\n"
        + _table("status", "status", openapi_schema(AWSConnectorStatus))
    )
