"""Microsoft.Security/pricings: the Defender plans of a subscription, as ARM serves them.

Follows the REST specification (Microsoft.Security "Pricings", stable api-version 2024-01-01: Pricings_List, _Get,
_Update; see docs/development.md, "ARM emulator"): one pricing per Defender plan at subscription scope, named by the
plan (``VirtualMachines``, ``Containers``, ``SqlServerVirtualMachines``, ...), with ``properties.pricingTier`` Free
or Standard and an optional ``subPlan``. A subscription no one has changed has every plan on Free, as a new Azure
subscription has; ``PUT`` turns one on or off. Names outside the specification's list are refused.
"""

import threading
from datetime import UTC, datetime
from typing import Any

from .store import ArmError

PRICING_API_VERSIONS = ("2024-01-01",)
PLANS = (
    "VirtualMachines",
    "SqlServers",
    "AppServices",
    "StorageAccounts",
    "SqlServerVirtualMachines",
    "KeyVaults",
    "Arm",
    "OpenSourceRelationalDatabases",
    "CosmosDbs",
    "Containers",
    "CloudPosture",
    "Api",
    "AI",
)
TIERS = ("Free", "Standard")


class Pricings:
    def __init__(self) -> None:
        self._plans: dict[
            tuple[str, str], dict[str, Any]
        ] = {}  # (subscription, plan) -> properties, when changed
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._plans.clear()

    @staticmethod
    def _name(name: str) -> str:
        found = next((p for p in PLANS if p.lower() == name.lower()), None)
        if found is None:
            raise ArmError(404, "ResourceNotFound", f"The pricing '{name}' was not found.")
        return found

    def _view(self, subscription: str, plan: str) -> dict[str, Any]:
        properties = self._plans.get((subscription.lower(), plan)) or {"pricingTier": "Free"}
        return {
            "id": f"/subscriptions/{subscription}/providers/Microsoft.Security/pricings/{plan}",
            "name": plan,
            "type": "Microsoft.Security/pricings",
            "properties": {"freeTrialRemainingTime": "PT0S", **properties},
        }

    def list(self, subscription: str) -> list[dict[str, Any]]:
        with self._lock:
            return [self._view(subscription, plan) for plan in PLANS]

    def get(self, subscription: str, name: str) -> dict[str, Any]:
        plan = self._name(name)
        with self._lock:
            return self._view(subscription, plan)

    def put(self, subscription: str, name: str, body: Any) -> dict[str, Any]:
        plan = self._name(name)
        properties = (body or {}).get("properties") if isinstance(body, dict) else None
        tier = (properties or {}).get("pricingTier")
        if tier not in TIERS:
            raise ArmError(
                400,
                "InvalidInputJson",
                f"properties.pricingTier must be one of {', '.join(TIERS)}, not {tier!r}.",
            )
        stored: dict[str, Any] = {"pricingTier": tier}
        if tier == "Standard":
            stored["enablementTime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            if properties and properties.get("subPlan"):
                stored["subPlan"] = str(properties["subPlan"])
        with self._lock:
            self._plans[(subscription.lower(), plan)] = stored
            return self._view(subscription, plan)
