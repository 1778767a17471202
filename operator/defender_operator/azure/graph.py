"""Microsoft Graph, read-only: the service principal CIEM's role trusts (Graph v1.0, "Get servicePrincipal").

CIEM signs in to AWS with a token of an Entra application in the customer's own tenant (``plans.cspm.ciem``:
``entraAppName``, whose service principal's object id is ``oidcSubject``); without it, or with another one, the
OidcCiem role trusts nobody who can sign in and CIEM finds nothing while the connector looks Ready. The operator only
reads it: creating it takes Application Administrator rights, which the operator never asks for. Reading it takes the
Graph application permission Application.Read.All ("Get servicePrincipal", learn.microsoft.com/graph/api/
serviceprincipal-get, read 2026-12-06).
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient

from ..errors import RetryableError, TerminalError
from .client import error_message, send


@dataclass(frozen=True)
class ServicePrincipal:
    object_id: str
    display_name: str
    names: list[str]  # servicePrincipalNames: the application id and its identifier URIs


class Graph:
    def __init__(self, pipeline: ARMPipelineClient[Any, Any]) -> None:
        self.pipeline = pipeline

    def service_principal(self, object_id: str) -> ServicePrincipal | None:
        """The service principal with this object id in the credential's tenant; None when there is none."""
        request = HttpRequest(
            "GET",
            self.pipeline.format_url(f"/v1.0/servicePrincipals/{quote(object_id)}"),
            params={"$select": "id,displayName,servicePrincipalNames"},
        )
        response = send(self.pipeline, request, "graph", "GetServicePrincipal", "Microsoft Graph")
        code, message = error_message(response)
        status = response.status_code
        if status == 404:
            return None
        if status == 429 or status >= 500:
            raise RetryableError("GraphUnavailable", f"Microsoft Graph failed: {code}: {message}")
        if status in (401, 403):
            raise TerminalError("GraphAccessDenied", f"Microsoft Graph refused the read: {code}: {message}")
        if status != 200:
            raise TerminalError("GraphRejected", f"Microsoft Graph: {code}: {message}")
        body = response.json()
        return ServicePrincipal(
            object_id=str(body.get("id", object_id)),
            display_name=str(body.get("displayName", "")),
            names=[str(n) for n in body.get("servicePrincipalNames") or []],
        )
