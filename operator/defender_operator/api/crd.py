"""Generate the CustomResourceDefinitions (AWSConnector, ClusterOnboardingPolicy, EffectiveOnboardingPolicy) from the pydantic models (the one source of truth).

pydantic emits JSON Schema 2020-12; the API server wants a *structural* OpenAPI v3 schema. The translation inlines
``$ref``s, turns ``anyOf [X, null]`` into an optional X, drops what structural schemas forbid (``title``,
``additionalProperties: false`` beside ``properties``, ``propertyNames``, ``const``), and gives every object-valued
field that has a default model ``default: {}`` so the API server fills in the nested defaults as well.
"""

from typing import Any

from pydantic import BaseModel

from .names import (
    API_VERSION,
    CATEGORIES,
    EFFECTIVE_KIND,
    EFFECTIVE_PLURAL,
    GROUP,
    KIND,
    PLURAL,
    POLICY_KIND,
    POLICY_PLURAL,
    RECORD_KIND,
    RECORD_PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from .policy import ClusterOnboardingPolicySpec, EffectiveOnboardingPolicySpec
from .record import OnboardingRecordSpec
from .schema import CEL_KEY
from .spec import AWSConnectorSpec
from .status import AWSConnectorStatus

_DROPPED_KEYS = {"title", "propertyNames", "$defs"}
_OPTIONAL = "x-defender-operator-optional"  # marks an unwrapped `X | None`: absent means "not set", not "{}"


def _key_rule(names: dict[str, Any]) -> dict[str, Any]:
    """A map's ``propertyNames`` (which structural schemas forbid) as the CEL rule the API server checks instead."""
    checks, said = [], []
    if "minLength" in names:
        checks.append(f"size(k) >= {names['minLength']}")
        said.append(f"at least {names['minLength']}")
    if "maxLength" in names:
        checks.append(f"size(k) <= {names['maxLength']}")
        said.append(f"at most {names['maxLength']}")
    if "pattern" in names:
        checks.append(f"k.matches({names['pattern']!r})")
        said.append(f"matching {names['pattern']}")
    return {
        "rule": f"self.all(k, {' && '.join(checks)})",
        "message": f"keys must be {' and '.join(said)} characters",
    }


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("propertyNames"), dict) and node["propertyNames"]:
        rule = _key_rule(node["propertyNames"])
        node = {**node, CEL_KEY: [*node.get(CEL_KEY, []), rule]}
    if "$ref" in node:
        target = _inline(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        siblings = {k: _inline(v, defs) for k, v in node.items() if k != "$ref"}
        merged = {**target, **siblings}
        if CEL_KEY in target and CEL_KEY in siblings:
            merged[CEL_KEY] = target[CEL_KEY] + siblings[CEL_KEY]
        return merged
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) == 1:
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            merged = _inline({**options[0], **rest}, defs)
            if merged.get("default", 0) is None:
                merged.pop("default")
            merged[_OPTIONAL] = True
            return merged
    return {k: _inline(v, defs) for k, v in node.items() if k not in _DROPPED_KEYS}


def _structural(node: Any) -> Any:
    if isinstance(node, list):
        return [_structural(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _structural(v) for k, v in node.items() if k != _OPTIONAL}
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]  # unknown fields are pruned, and rejected by strict field validation
    if out.get("additionalProperties") is True and out.get("x-kubernetes-preserve-unknown-fields"):
        del out["additionalProperties"]  # a free-form object (a record's copy of a spec): kept as it is
    if "const" in out:
        out["enum"] = [out.pop("const")]
    if out.get("type") == "object" and "properties" in out:
        required = set(out.get("required", []))
        for name, prop in out["properties"].items():
            has_model_default = not node["properties"][name].get(_OPTIONAL) and "default" not in prop
            if (
                prop.get("type") == "object"
                and "properties" in prop
                and name not in required
                and has_model_default
            ):
                prop["default"] = {}
    return out


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of a model, as the CRD embeds it."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    schema: dict[str, Any] = _structural(_inline(raw, raw.get("$defs", {})))
    return schema


def _condition_column(name: str, condition: str, field: str, *, priority: int = 0) -> dict[str, Any]:
    column: dict[str, Any] = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].{field}',
    }
    if priority:
        column["priority"] = priority
    return column


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Account", "type": "string", "jsonPath": ".spec.aws.accountId"},
    {
        "name": "Interval",
        "type": "integer",
        "jsonPath": ".spec.scanIntervalHours",
        "description": "Scan interval (h)",
    },
    {"name": "Plans", "type": "string", "jsonPath": ".status.plans"},
    _condition_column("Ready", "Ready", "status"),
    _condition_column("Reason", "Ready", "reason"),
    {
        "name": "Members",
        "type": "string",
        "jsonPath": ".status.organization.progress",
        "description": "Member accounts deployed, of those targeted (organizations only)",
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    {"name": "Connector", "type": "string", "jsonPath": ".status.azure.connectorName", "priority": 1},
    {"name": "Stack", "type": "string", "jsonPath": ".status.aws.stackName", "priority": 1},
    {"name": "Stack-Status", "type": "string", "jsonPath": ".status.aws.stackStatus", "priority": 1},
    {"name": "Catalog", "type": "string", "jsonPath": ".status.catalog.version", "priority": 1},
    _condition_column("Prerequisites", "Prerequisites", "status", priority=1),
    _condition_column("Message", "Ready", "message", priority=1),
]


def _crd(
    *,
    kind: str,
    plural: str,
    scope: str,
    description: str,
    spec: type[BaseModel],
    status: type[BaseModel] | None = None,
    short_names: tuple[str, ...] = (),
    columns: list[dict[str, Any]] | None = None,
    status_default: dict[str, Any] | None = None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "APIVersion of this object."},
        "kind": {"type": "string", "description": "Kind of this object."},
        "metadata": {"type": "object"},
        "spec": openapi_schema(spec),
    }
    version: dict[str, Any] = {"name": VERSION, "served": True, "storage": True}
    if status is not None:
        properties["status"] = openapi_schema(status)
        version["subresources"] = {"status": {}}
    if status_default is not None:
        properties["status"]["default"] = status_default
    if columns:
        version["additionalPrinterColumns"] = columns
    version["schema"] = {
        "openAPIV3Schema": {
            "type": "object",
            "description": description,
            "required": ["spec"],
            "properties": properties,
        }
    }
    names: dict[str, Any] = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if short_names:
        names["shortNames"] = list(short_names)
    names["categories"] = list(CATEGORIES)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "defender-operator",
                "app.kubernetes.io/part-of": "defender-operator",
            },
        },
        "spec": {"group": GROUP, "names": names, "scope": scope, "versions": [version]},
    }


def custom_resource_definition() -> dict[str, Any]:
    """The AWSConnector CRD."""
    assert KIND.lower() == SINGULAR
    return _crd(
        kind=KIND,
        plural=PLURAL,
        scope="Namespaced",
        description=f"{KIND} ({API_VERSION}) onboards one AWS account, or an AWS Organization through its management "
        "account, into Microsoft Defender for Cloud: IAM roles in AWS (CloudFormation) and a "
        "Microsoft.Security/securityConnectors resource in Azure.",
        spec=AWSConnectorSpec,
        status=AWSConnectorStatus,
        short_names=SHORT_NAMES,
        columns=PRINTER_COLUMNS,
        # An object the operator has not looked at yet reads as observedGeneration 0 (the API server fills the
        # default in when it reads the object), so kstatus, and Flux with it, call it InProgress, not Current.
        status_default={"observedGeneration": 0},
    )


def policy_definitions() -> list[dict[str, Any]]:
    """The cluster-scoped CRDs of tenancy: the admin's ClusterOnboardingPolicy, the operator's summary of them, and
    the operator's OnboardingRecords (what each AWSConnector wrote, where no tenant can write)."""
    return [
        _crd(
            kind=POLICY_KIND,
            plural=POLICY_PLURAL,
            scope="Cluster",
            description=f"{POLICY_KIND} ({API_VERSION}), written by a cluster admin: which namespaces may have "
            "AWSConnectors use the operator's own AWS and Azure identities, for which accounts, roles, tenants, "
            "subscriptions and resource groups (docs/tenancy.md).",
            spec=ClusterOnboardingPolicySpec,
            columns=[
                {"name": "Namespaces", "type": "string", "jsonPath": ".spec.namespaces.names"},
                {"name": "Accounts", "type": "string", "jsonPath": ".spec.aws.accountIds"},
                {"name": "Subscriptions", "type": "string", "jsonPath": ".spec.azure.subscriptionIds"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
        ),
        _crd(
            kind=EFFECTIVE_KIND,
            plural=EFFECTIVE_PLURAL,
            scope="Cluster",
            description=f"{EFFECTIVE_KIND} ({API_VERSION}), written by the operator (do not edit): every "
            f"{POLICY_KIND}'s rule in one object, the parameter of the admission policy that checks AWSConnectors.",
            spec=EffectiveOnboardingPolicySpec,
        ),
        _crd(
            kind=RECORD_KIND,
            plural=RECORD_PLURAL,
            scope="Cluster",
            description=f"{RECORD_KIND} ({API_VERSION}), written by the operator only (do not edit): one per "
            f"{KIND}, named by its uid, saying what the operator wrote for it, with which spec, under which grant. "
            "It is the operator's own proof of ownership and the spec cleanup uses (docs/tenancy.md); one left after "
            "its object is gone lists what may be left in the clouds.",
            spec=OnboardingRecordSpec,
            columns=[
                {"name": "Namespace", "type": "string", "jsonPath": ".spec.object.namespace"},
                {"name": "Object", "type": "string", "jsonPath": ".spec.object.name"},
                {"name": "Account", "type": "string", "jsonPath": ".spec.connector.aws.accountId"},
                {"name": "AWS", "type": "string", "jsonPath": ".spec.written.aws"},
                {"name": "Azure", "type": "string", "jsonPath": ".spec.written.azure"},
                {"name": "Abandoned", "type": "string", "jsonPath": ".spec.abandoned"},
                {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
            ],
        ),
    ]


def all_definitions() -> list[dict[str, Any]]:
    return [custom_resource_definition(), *policy_definitions()]
