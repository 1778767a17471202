"""The Microsoft.Security/securityConnectors resource, sent as raw JSON through the ARM pipeline, and its health.

Observe with GET; PUT only when the live body differs from the desired one (read-only fields ignored). Writes are
conditional, as ARM's resource-provider contract defines (azure-resource-manager-rpc, "ETags for Resources"): a create
sends ``If-None-Match: *`` so a connector that someone else made after our GET is never overwritten, and an update
or delete sends ``If-Match`` with the etag exactly as the GET returned it (the value is already an entity-tag, quotes
included), so only the connector that was read and checked is changed. Health comes from the connector's
health reports (api-version 2023-05-01-preview, the one azure-mgmt-security 7.0.0 uses).
"""

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.core import ARMPipelineClient

from ..errors import RetryableError, TerminalError
from ..render.connector import API_VERSION
from ..writes import Writing, unrecorded
from .client import error_message, send

HEALTH_API_VERSION = "2023-05-01-preview"
PRICING_API_VERSION = (
    "2024-01-01"  # Microsoft.Security pricings, the stable version azure-mgmt-security 7.0.0 uses
)
SUBSCRIPTION_API_VERSION = "2022-12-01"
_READ_ONLY = ("id", "name", "type", "systemData", "etag")


def connector_id(subscription: str, resource_group: str, name: str) -> str:
    return (
        f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Security/"
        f"securityConnectors/{name}"
    )


def comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A connector body without what the service fills in, so a GET can be compared with what we would PUT."""
    out = {k: v for k, v in json.loads(json.dumps(body)).items() if k not in _READ_ONLY}
    if not out.get("kind"):
        out.pop("kind", None)
    if not out.get("tags"):
        out.pop("tags", None)
    props = out.get("properties", {})
    props.pop("hierarchyIdentifierTrialEndDate", None)
    env = props.get("environmentData", {})
    env.pop("accountName", None)
    if "regions" in env:
        env["regions"] = sorted(env["regions"])
    offerings = []
    for offering in props.get("offerings", []):
        offering.pop("description", None)
        offerings.append(offering)
    props["offerings"] = sorted(offerings, key=lambda o: str(o.get("offeringType")))
    return out


@dataclass(frozen=True)
class ObservedConnector:
    id: str
    etag: str | None
    body: dict[str, Any]

    @property
    def tags(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in (self.body.get("tags") or {}).items()}

    @property
    def created(self) -> str | None:
        """systemData.createdAt: the second proof of ownership (reconcile/proofs.py)."""
        value = (self.body.get("systemData") or {}).get("createdAt")
        return str(value) if value else None

    @property
    def account(self) -> str:
        return str(self.body.get("properties", {}).get("hierarchyIdentifier", ""))

    @property
    def trial_end_date(self) -> str | None:
        value = self.body.get("properties", {}).get("hierarchyIdentifierTrialEndDate")
        return str(value) if value else None


@dataclass(frozen=True)
class HealthIssueReport:
    key: str
    name: str | None
    description: str | None
    remediation: str | None


@dataclass(frozen=True)
class HealthReport:
    status: str  # Healthy | NotHealthy | NotApplicable | Unknown
    issues: list[HealthIssueReport]
    last_scanned: str | None


class VerifiedSubscriptions:
    """Subscriptions one credential has found reachable and in the expected tenant, for an hour (as the AWS identity
    behind long-lived keys is asked again hourly): many AWS accounts are onboarded into one subscription, whose
    tenant does not change from one object or pass to the next, so it is read once, not before every first write."""

    TTL = 60 * 60

    def __init__(self) -> None:
        self._until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return self._until.get(key, 0.0) > time.monotonic()

    def add(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._until[key] = time.monotonic() + self.TTL


class Connectors:
    def __init__(
        self,
        pipeline: ARMPipelineClient[Any, Any],
        subscription: str,
        tenant: str,
        planned: list[str] | None = None,
        writing: Writing = unrecorded,
        verified: VerifiedSubscriptions | None = None,
    ) -> None:
        """With ``planned``, writes are not made but described there (``defender-operator plan``). Before its first
        write, the adapter checks that ``subscription`` is reachable and belongs to ``tenant`` (unless ``verified``,
        shared by the adapters of one credential, says it did lately)."""
        self.pipeline, self.subscription, self.tenant, self.planned = pipeline, subscription, tenant, planned
        self.writing = writing
        self._verified = verified if verified is not None else VerifiedSubscriptions()

    @property
    def dry_run(self) -> bool:
        return self.planned is not None

    def _send(
        self,
        operation: str,
        method: str,
        path: str,
        api_version: str | None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> HttpResponse:
        """``path`` is an ARM path, or a full nextLink (which carries its own api-version)."""
        request = HttpRequest(
            method,
            self.pipeline.format_url(path),
            params={"api-version": api_version} if api_version else None,
            json=body,
            headers=headers,
        )
        return send(self.pipeline, request, "security", operation, "Azure Resource Manager")

    def _raise(self, response: HttpResponse, action: str) -> None:
        code, message = error_message(response)
        status = response.status_code
        text = f"{action} failed: {code}: {message}"
        if code == "InvalidAuthenticationTokenTenant":
            raise TerminalError(
                "AzureTenantMismatch",
                f"{text}. The Azure credentials are for another tenant than subscription {self.subscription}'s; "
                "check spec.azure.tenantId and the identity used (nothing was written)",
            )
        if status == 429 or status >= 500 or status == 408:
            raise RetryableError("AzureUnavailable" if status != 429 else "AzureThrottled", text)
        if status in (401, 403):
            raise TerminalError("AzureAccessDenied", text)
        if status == 409:
            raise TerminalError("ConnectorConflict", text)
        if status == 412:
            raise RetryableError("ConnectorChangedConcurrently", text)
        if status == 404 and code in ("ResourceGroupNotFound", "SubscriptionNotFound"):
            raise TerminalError(code, text)
        raise TerminalError("ConnectorRejected", text)

    def verify_subscription(self) -> None:
        """The subscription is reachable with these credentials and belongs to the tenant the spec names (ARM
        "Subscriptions - Get"), checked before the adapter's first write unless this credential verified it within
        the hour (:class:`VerifiedSubscriptions`)."""
        if (self.subscription, self.tenant.lower()) in self._verified:
            return
        path = f"/subscriptions/{self.subscription}"
        response = self._send("GetSubscription", "GET", path, SUBSCRIPTION_API_VERSION)
        if response.status_code != 200:
            self._raise(response, f"reading subscription {self.subscription}")
        owner = str(response.json().get("tenantId", ""))
        if owner.lower() != self.tenant.lower():
            raise TerminalError(
                "AzureTenantMismatch",
                f"subscription {self.subscription} belongs to tenant {owner}, not spec.azure.tenantId {self.tenant}; "
                "nothing was written",
            )
        self._verified.add((self.subscription, self.tenant.lower()))

    def observe(self, resource_group: str, name: str) -> ObservedConnector | None:
        path = connector_id(self.subscription, resource_group, name)
        response = self._send("GetSecurityConnector", "GET", path, API_VERSION)
        if response.status_code == 404 and error_message(response)[0] in ("ResourceNotFound", "NotFound"):
            return None
        if response.status_code != 200:
            self._raise(response, "reading the connector")
        body = response.json()
        return ObservedConnector(id=str(body.get("id", path)), etag=body.get("etag"), body=body)

    def put(
        self, resource_group: str, name: str, body: dict[str, Any], etag: str | None
    ) -> ObservedConnector:
        path = connector_id(self.subscription, resource_group, name)
        if self.planned is not None:
            self.planned.append(f"{'update' if etag else 'create'} connector {path}")
            return ObservedConnector(id=path, etag=etag, body=body)
        self.verify_subscription()
        headers = {"If-Match": etag} if etag else {"If-None-Match": "*"}
        with self.writing():
            response = self._send("PutSecurityConnector", "PUT", path, API_VERSION, body, headers)
        if response.status_code not in (200, 201):
            self._raise(response, "writing the connector")
        written = response.json()
        return ObservedConnector(id=str(written.get("id", path)), etag=written.get("etag"), body=written)

    def delete(self, resource_group: str, name: str, etag: str | None) -> None:
        """Delete the connector that was read with ``etag`` (and nothing that replaced it since)."""
        path = connector_id(self.subscription, resource_group, name)
        if self.planned is not None:
            self.planned.append(f"delete connector {path}")
            return
        with self.writing():
            headers = {"If-Match": etag} if etag else None
        response = self._send("DeleteSecurityConnector", "DELETE", path, API_VERSION, headers=headers)
        if response.status_code not in (200, 204, 404):
            self._raise(response, "deleting the connector")

    def members_of(self, management_account: str, resource_group: str) -> tuple[dict[str, str], str]:
        """Member connectors Defender created for an organization (member account -> connector id), and the scope
        they were looked for in: the subscription, or, when the operator's role is assigned on resource groups only
        (ARM refuses the subscription-wide list), the management connector's resource group."""
        subscription = f"/subscriptions/{self.subscription}"
        try:
            return self._members_in(subscription, management_account), subscription
        except TerminalError as exc:
            if exc.reason != "AzureAccessDenied":
                raise
        scope = f"{subscription}/resourceGroups/{resource_group}"
        return self._members_in(scope, management_account), scope

    def _members_in(self, scope: str, management_account: str) -> dict[str, str]:
        link: str | None = f"{scope}/providers/Microsoft.Security/securityConnectors"
        members: dict[str, str] = {}
        while link:
            version = API_VERSION if link.startswith("/") else None
            response = self._send("ListSecurityConnectors", "GET", link, version)
            if response.status_code != 200:
                self._raise(response, "listing connectors")
            page = response.json()
            for connector in page.get("value", []):
                props = connector.get("properties", {})
                org = props.get("environmentData", {}).get("organizationalData") or {}
                if (
                    org.get("organizationMembershipType") == "Member"
                    and org.get("parentHierarchyId") == management_account
                ):
                    members[str(props.get("hierarchyIdentifier"))] = str(connector.get("id"))
            link = page.get("nextLink")
        return members

    def pricing_tiers(self) -> dict[str, str]:
        """The subscription's Defender plans (Microsoft.Security "Pricings - List"): plan name -> Free or Standard.
        A read at subscription scope: a role assigned only on resource groups is refused (AzureAccessDenied)."""
        path = f"/subscriptions/{self.subscription}/providers/Microsoft.Security/pricings"
        response = self._send("ListPricings", "GET", path, PRICING_API_VERSION)
        if response.status_code != 200:
            self._raise(response, "reading the subscription's Defender plans")
        return {
            str(p.get("name", "")): str((p.get("properties") or {}).get("pricingTier", ""))
            for p in response.json().get("value", [])
        }

    def health(self, resource_group: str, name: str) -> HealthReport:
        path = (
            connector_id(self.subscription, resource_group, name)
            + "/providers/Microsoft.Security/healthReports"
        )
        response = self._send("ListHealthReports", "GET", path, HEALTH_API_VERSION)
        if response.status_code != 200:
            self._raise(response, "reading health reports")
        reports = response.json().get("value", [])
        if not reports:
            return HealthReport(status="Unknown", issues=[], last_scanned=None)
        codes = [str(r.get("properties", {}).get("status", {}).get("code", "Unknown")) for r in reports]
        worst = next(
            (c for c in ("NotHealthy", "Unknown", "Healthy", "NotApplicable") if c in codes), "Unknown"
        )
        issues = [
            HealthIssueReport(
                key=str(i.get("issueKey", "")),
                name=i.get("issueName"),
                description=i.get("issueDescription"),
                remediation=i.get("remediationSteps"),
            )
            for r in reports
            for i in r.get("properties", {}).get("issues") or []
        ]
        scanned = [r.get("properties", {}).get("status", {}).get("lastScannedDate") for r in reports]
        return HealthReport(
            status=worst, issues=issues, last_scanned=max((s for s in scanned if s), default=None)
        )
