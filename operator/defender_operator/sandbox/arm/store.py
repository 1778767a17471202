"""The ARM emulator's state: security connectors and their health reports, with ARM's semantics.

Behaviour follows the 2024-08-01-preview REST specification of Microsoft.Security/securityConnectors (see
docs/development.md, "ARM emulator"): synchronous PUT (201 create, 200 update), PATCH, DELETE (200, 204 when
absent), list by resource group and by subscription with nextLink paging, read-only fields filled by the service,
an etag that changes on every write, conditional requests, and one connector per AWS account and subscription.

ETags follow ARM's resource-provider contract (github.com/Azure/azure-resource-manager-rpc, v1.0/Addendum.md, "ETags
for Resources"): the ``etag`` property is an entity-tag, quotes included (``"\"<guid>\""``, as Cosmos-backed resource
providers return it), sent back verbatim in ``If-Match``; the comparison is exact. PUT with ``If-Match: *`` on a
missing connector and ``If-None-Match: *`` on an existing one fail with 412; a mismatched ``If-Match`` fails with 412;
DELETE of a missing connector answers 204 whatever the condition.
"""

import copy
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from . import validation

CONNECTOR_API_VERSIONS = ("2024-08-01-preview",)
HEALTH_API_VERSIONS = ("2023-05-01-preview",)
PAID_OFFERINGS = {
    "DefenderCspmAws",
    "DefenderForServersAws",
    "DefenderForContainersAws",
    "DefenderForDatabasesAws",
}
TRIAL = timedelta(days=30)
OFFERING_DESCRIPTIONS = {
    "CspmMonitorAws": "The CSPM monitoring for AWS offering",
    "DefenderCspmAws": "The CSPM P1 for AWS offering",
    "DefenderForServersAws": "The Defender for Servers AWS offering",
    "DefenderForContainersAws": "The Defender for Containers AWS offering",
    "DefenderForDatabasesAws": "The Defender for Databases AWS offering",
}


class ArmError(Exception):
    """An ARM error response: HTTP status plus the ``{"error": {"code", "message", "details"}}`` body."""

    def __init__(self, status: int, code: str, message: str, details: list[str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or []

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = [{"code": self.code, "message": d} for d in self.details]
        return {"error": error}


def _new_etag() -> str:
    return f'"{uuid.uuid4()}"'


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


@dataclass
class Connector:
    subscription: str
    resource_group: str
    name: str
    body: dict[str, Any]
    etag: str
    created_at: str
    created_by: str
    modified_at: str
    modified_by: str
    trial_end: str | None = None

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.Security/securityConnectors/{self.name}"
        )

    @property
    def account(self) -> str:
        return str(self.body["properties"]["hierarchyIdentifier"])

    def view(self) -> dict[str, Any]:
        """The resource as GET returns it: the body plus the read-only fields the service fills in."""
        out = copy.deepcopy(self.body)
        props = out["properties"]
        if self.trial_end:
            props["hierarchyIdentifierTrialEndDate"] = self.trial_end
        props["environmentData"]["accountName"] = f"aws-{self.account}"
        for offering in props["offerings"]:
            offering["description"] = OFFERING_DESCRIPTIONS.get(offering["offeringType"], "")
        out.update(
            {
                "id": self.id,
                "name": self.name,
                "type": "Microsoft.Security/securityConnectors",
                "etag": self.etag,
                "kind": out.get("kind", ""),
                "systemData": {
                    "createdBy": self.created_by,
                    "createdByType": "Application",
                    "createdAt": self.created_at,
                    "lastModifiedBy": self.modified_by,
                    "lastModifiedByType": "Application",
                    "lastModifiedAt": self.modified_at,
                },
            }
        )
        return out


@dataclass
class Health:
    code: str = "Healthy"
    reason: str = ""
    issues: list[dict[str, Any]] = field(default_factory=list)
    changed_at: str = field(default_factory=_now)


_READ_ONLY_TOP = ("id", "name", "type", "systemData")


def _strip_read_only(body: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in copy.deepcopy(body).items() if k not in _READ_ONLY_TOP}
    props = body.get("properties") or {}
    props.pop("hierarchyIdentifierTrialEndDate", None)
    (props.get("environmentData") or {}).pop("accountName", None)
    for offering in props.get("offerings") or []:
        if isinstance(offering, dict):
            offering.pop("description", None)
    body.pop("etag", None)
    return body


def _merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch (RFC 7386): objects merge, everything else replaces, null removes."""
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


class Store:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.connectors: dict[str, Connector] = {}  # lower-cased id -> connector
        self.health: dict[str, Health] = {}

    def reset(self) -> None:
        with self.lock:
            self.connectors.clear()
            self.health.clear()

    def _key(self, subscription: str, resource_group: str, name: str) -> str:
        # ARM ids are case-insensitive.
        return f"/subscriptions/{subscription}/resourcegroups/{resource_group}/{name}".lower()

    def get(self, subscription: str, resource_group: str, name: str) -> Connector:
        connector = self.connectors.get(self._key(subscription, resource_group, name))
        if connector is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.Security/securityConnectors/{name}' under resource group "
                f"'{resource_group}' was not found.",
            )
        return connector

    def _validate(self, body: Any) -> None:
        if not isinstance(body, dict):
            raise ArmError(
                400, "InvalidRequestContent", "The request content was invalid and could not be deserialized."
            )
        problems = validation.errors(body)
        if problems:
            raise ArmError(
                400,
                "InvalidRequestContent",
                "The request content was invalid: " + "; ".join(problems),
                problems,
            )

    def _check_conditions(
        self, existing: Connector | None, if_match: str | None, if_none_match: str | None = None
    ) -> None:
        failed = (
            (if_match == "*" and existing is None)
            or (if_match and if_match != "*" and (existing is None or existing.etag != if_match))
            or (if_none_match == "*" and existing is not None)
        )
        if failed:
            header = "If-Match" if if_match else "If-None-Match"
            raise ArmError(412, "PreconditionFailed", f"The specified precondition '{header}' failed.")

    def _check_account_conflict(self, subscription: str, key: str, account: str) -> None:
        for other_key, other in self.connectors.items():
            if (
                other_key != key
                and other.subscription.lower() == subscription.lower()
                and other.account == account
            ):
                raise ArmError(
                    409,
                    "Conflict",
                    f"AWS account {account} is already connected to this subscription by security connector "
                    f"'{other.id}'.",
                )

    def _trial_end(self, body: dict[str, Any], current: str | None) -> str | None:
        if current:
            return current
        types = {o.get("offeringType") for o in body["properties"]["offerings"]}
        if types & PAID_OFFERINGS:
            return (datetime.now(UTC) + TRIAL).isoformat().replace("+00:00", "Z")
        return None

    def put(
        self,
        subscription: str,
        resource_group: str,
        name: str,
        body: Any,
        caller: str,
        if_match: str | None,
        if_none_match: str | None = None,
    ) -> tuple[int, Connector]:
        with self.lock:
            key = self._key(subscription, resource_group, name)
            self._validate(body)
            clean = _strip_read_only(body)
            existing = self.connectors.get(key)
            self._check_conditions(existing, if_match, if_none_match)
            self._check_account_conflict(subscription, key, str(clean["properties"]["hierarchyIdentifier"]))
            now = _now()
            if existing is None:
                connector = Connector(
                    subscription,
                    resource_group,
                    name,
                    clean,
                    _new_etag(),
                    now,
                    caller,
                    now,
                    caller,
                    self._trial_end(clean, None),
                )
                self.connectors[key] = connector
                self.health[key] = Health()
                return 201, connector
            existing.body, existing.etag = clean, _new_etag()
            existing.modified_at, existing.modified_by = now, caller
            existing.trial_end = self._trial_end(clean, existing.trial_end)
            return 200, existing

    def patch(
        self, subscription: str, resource_group: str, name: str, patch: Any, caller: str, if_match: str | None
    ) -> Connector:
        with self.lock:
            existing = self.get(subscription, resource_group, name)
            if not isinstance(patch, dict):
                raise ArmError(
                    400,
                    "InvalidRequestContent",
                    "The request content was invalid and could not be deserialized.",
                )
            merged = _merge(existing.body, _strip_read_only(patch))
            self.put(subscription, resource_group, name, merged, caller, if_match)
            return existing

    def delete(self, subscription: str, resource_group: str, name: str, if_match: str | None = None) -> bool:
        with self.lock:
            key = self._key(subscription, resource_group, name)
            existing = self.connectors.get(key)
            if existing is None:
                return False
            self._check_conditions(existing, if_match)
            self.health.pop(key, None)
            return self.connectors.pop(key, None) is not None

    def list_connectors(self, subscription: str, resource_group: str | None) -> list[Connector]:
        with self.lock:
            return sorted(
                (
                    c
                    for c in self.connectors.values()
                    if c.subscription.lower() == subscription.lower()
                    and (resource_group is None or c.resource_group.lower() == resource_group.lower())
                ),
                key=lambda c: c.id.lower(),
            )

    # --- health -----------------------------------------------------------------------------------------------------

    def set_health(self, connector_id: str, code: str, reason: str, issues: list[dict[str, Any]]) -> None:
        with self.lock:
            parts = connector_id.strip("/").split("/")
            key = self._key(parts[1], parts[3], parts[-1])
            if key not in self.connectors:
                raise ArmError(404, "ResourceNotFound", f"No connector {connector_id}")
            self.health[key] = Health(code=code, reason=reason, issues=issues)

    def health_reports(self, subscription: str, resource_group: str, name: str) -> list[dict[str, Any]]:
        with self.lock:
            connector = self.get(subscription, resource_group, name)
            health = self.health[self._key(subscription, resource_group, name)]
            report_name = f"{connector.account}-connector"
            return [
                {
                    "id": f"{connector.id}/providers/Microsoft.Security/healthReports/{report_name}",
                    "name": report_name,
                    "type": "Microsoft.Security/healthReports",
                    "properties": {
                        "resourceDetails": {"source": "Aws", "id": connector.id, "connectorId": connector.id},
                        "environmentDetails": {
                            "nativeResourceId": f"arn:aws:::{connector.account}",
                            "environmentHierarchyId": connector.account,
                            "subscriptionId": subscription,
                        },
                        "healthDataClassification": {
                            "component": "Connectors",
                            "scenario": "Onboarding",
                            "scope": "Connectors",
                        },
                        "status": {
                            "code": health.code,
                            "reason": health.reason,
                            # Defender scans on its own schedule; between scans the date stays put.
                            "lastScannedDate": health.changed_at,
                            "statusChangeDate": health.changed_at,
                            "firstEvaluationDate": connector.created_at,
                        },
                        "affectedDefendersPlans": [
                            o["offeringType"] for o in connector.body["properties"]["offerings"]
                        ],
                        "issues": health.issues,
                    },
                }
            ]
