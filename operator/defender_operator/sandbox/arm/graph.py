"""Microsoft Graph's service principals, as much of Graph as the operator reads ("Get servicePrincipal", v1.0:
learn.microsoft.com/graph/api/serviceprincipal-get, read 2026-12-06).

A service principal is found in the tenant of the caller's token only. Reading one takes the application
permission Application.Read.All (or a higher one): a client without it gets 403 ``Authorization_RequestDenied``
"Insufficient privileges to complete the operation.", an unknown id 404 ``Request_ResourceNotFound``, the codes
and texts Graph answers with (learn.microsoft.com/graph/errors). No client holds it until a test grants it.

``POST /_sandbox/graph`` with ``{"servicePrincipals": [{"tenantId", "id", "displayName", "servicePrincipalNames"}],
"readers": ["<client id>", ...]}`` adds service principals and the clients that may read them.
"""

import re
import threading
from typing import Any

SERVICE_PRINCIPAL = re.compile(r"^/v1\.0/servicePrincipals/(?P<id>[^/]+)$")
FIELDS = ("id", "displayName", "appId", "servicePrincipalNames")


class Directory:
    def __init__(self) -> None:
        self._principals: dict[tuple[str, str], dict[str, Any]] = {}  # (tenant, object id), lower case
        self._readers: set[str] = set()
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self._principals.clear()
            self._readers.clear()

    def configure(self, body: dict[str, Any]) -> None:
        with self._lock:
            for principal in body.get("servicePrincipals") or []:
                key = (str(principal["tenantId"]).lower(), str(principal["id"]).lower())
                self._principals[key] = {k: principal[k] for k in FIELDS if k in principal}
            self._readers |= {str(client).lower() for client in body.get("readers") or []}

    def service_principal(self, client: str, tenant: str, object_id: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            if client.lower() not in self._readers:
                return 403, _error(
                    "Authorization_RequestDenied", "Insufficient privileges to complete the operation."
                )
            found = self._principals.get((tenant.lower(), object_id.lower()))
        if found is None:
            message = (
                f"Resource '{object_id}' does not exist or one of its queried reference-property objects are not "
                "present."
            )
            return 404, _error("Request_ResourceNotFound", message)
        return 200, {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#servicePrincipals/$entity",
            **found,
        }


def _error(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}
