"""The ARM emulator's HTTPS server: Microsoft.Security connectors, health reports and pricings (a subscription's
Defender plans), an Entra token endpoint, Microsoft Graph's service principals (``graph.py``, ``POST
/_sandbox/graph``), and control endpoints for tests.

Run as ``python -m defender_operator.sandbox.arm.server --port N --cert C --key K``. azure-identity's
ClientSecretCredential and WorkloadIdentityCredential sign in against ``/{tenant}/oauth2/v2.0/token`` (authority =
this server, instance discovery off); azure-mgmt-core's ARM pipeline then calls the resource endpoints with the
bearer token, which must be one this server issued.

Control endpoints (no authentication; loopback only):
``POST /_sandbox/reset``; ``GET|DELETE /_sandbox/requests`` (request log);
``POST|DELETE /_sandbox/faults`` (``{"method", "pathPattern", "count", "status", "retryAfter", "latency", "drop"}``);
``POST /_sandbox/health`` (``{"connectorId", "status": "Healthy"|"NotHealthy", "reason", "issues": [...]}``);
``POST /_sandbox/clients`` (``{"clientId": "secret"}``: the only secrets the token endpoint accepts; default any
client with secret "sandbox"); ``POST /_sandbox/subscriptions`` (``{"subscriptionId": "tenantId"}``: subscriptions
that belong to another tenant than the default one).

Tenants, as ARM enforces them: a token is issued for the tenant in the token URL, and every request under
``/subscriptions/{id}`` with a token of another tenant than the subscription's fails with 401
``InvalidAuthenticationTokenTenant`` (the message ARM sends; every subscription is in the sandbox tenant unless
registered otherwise). ``GET /subscriptions/{id}`` answers the subscription with its ``tenantId``
(Microsoft.Resources "Subscriptions - Get", api-version 2022-12-01).

Role assignments, opt-in per client: ``POST /_sandbox/role-assignments`` (``{"clientId": ["/subscriptions/s/
resourceGroups/rg", ...]}``; ``null`` lifts the restriction) gives that client the operator's role (every action it
needs) at those scopes and nowhere else. A request outside them fails with 403 ``AuthorizationFailed`` and ARM's
message naming the action and the scope (learn.microsoft.com/azure/role-based-access-control/troubleshooting,
"No permissions to perform action"); a role assigned at a scope holds for everything beneath it (RBAC inheritance,
learn.microsoft.com/azure/role-based-access-control/scope-overview). ``GET /subscriptions/{id}`` answers any client
holding an assignment inside the subscription, as ARM lists a subscription to a principal with a role on one of its
resource groups only. Clients without an entry are not restricted.
"""

import argparse
import json
import re
import secrets
import threading
import time
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler
from typing import Any

from ..faults import FaultRule, FaultTable
from ..tls import TLSServer, tls_context
from . import graph
from .graph import Directory
from .pricings import PRICING_API_VERSIONS, Pricings
from .store import CONNECTOR_API_VERSIONS, HEALTH_API_VERSIONS, ArmError, Store

_CONNECTOR = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Security/"
    r"securityConnectors/(?P<name>[^/]+)$",
    re.IGNORECASE,
)
_LIST_RG = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Security/securityConnectors$",
    re.IGNORECASE,
)
_LIST_SUB = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Security/securityConnectors$", re.IGNORECASE
)
_HEALTH = re.compile(
    r"^(?P<connector>/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.Security/"
    r"securityConnectors/(?P<name>[^/]+))/providers/Microsoft\.Security/healthReports(/(?P<report>[^/]+))?$",
    re.IGNORECASE,
)
_PRICINGS = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/providers/Microsoft\.Security/pricings(/(?P<name>[^/]+))?$",
    re.IGNORECASE,
)
_SUBSCRIPTION = re.compile(r"^/subscriptions/(?P<sub>[^/]+)(/.*)?$", re.IGNORECASE)
_OPENID = re.compile(r"^/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration$")
_TOKEN = re.compile(r"^/(?P<tenant>[^/]+)/oauth2/v2\.0/token$")
_TOKEN_LIFETIME = 3600
DEFAULT_SECRET = "sandbox"
DEFAULT_TENANT = "99999999-8888-7777-6666-555555555555"
SUBSCRIPTION_API_VERSIONS = ("2022-12-01", "2021-01-01", "2020-01-01")


class State:
    def __init__(self, page_size: int) -> None:
        self.store = Store()
        self.pricings = Pricings()
        self.directory = Directory()
        self.faults = FaultTable()
        self.page_size = page_size
        self.requests: list[dict[str, Any]] = []
        self.tokens: dict[str, tuple[str, float, str]] = {}  # token -> (client id, expiry, tenant)
        self.subscriptions: dict[str, str] = {}  # subscription (lower case) -> tenant, when not the default
        self.clients: dict[str, str] | None = None  # None: any client id with the default secret
        # client id -> scopes (lower case) of its role assignments; clients without an entry are unrestricted
        self.assignments: dict[str, list[str]] = {}
        self.lock = threading.Lock()

    def reset(self) -> None:
        self.store.reset()
        self.pricings.reset()
        self.directory.reset()
        self.faults.clear()
        with self.lock:
            self.requests.clear()
            self.clients = None
            self.subscriptions.clear()
            self.assignments.clear()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the client's delayed ACK
    # of the headers (about 40 ms on Linux), a delay no cloud's front end adds to every response.
    disable_nagle_algorithm = True
    state: State  # set on the subclass by make_server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # --- plumbing ---------------------------------------------------------------------------------------------------

    def _body(self) -> Any:
        raw = self._raw
        if not raw:
            return None
        content_type = self.headers.get("Content-Type", "")
        if "application/x-www-form-urlencoded" in content_type:
            return dict(urllib.parse.parse_qsl(raw.decode()))
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ArmError(
                400, "InvalidRequestContent", f"The request content was not valid JSON: {exc}"
            ) from exc

    def _send(self, status: int, payload: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("x-ms-request-id", secrets.token_hex(8))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)
        self._status = status

    def _handle(self, method: str) -> None:
        self._status = 0
        length = int(self.headers.get("Content-Length") or 0)
        self._raw = self.rfile.read(length) if length else b""  # read first: keep-alive needs it consumed
        parsed = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(parsed.query))
        path = parsed.path.rstrip("/") or "/"
        started = time.monotonic()
        try:
            if path.startswith("/_sandbox/"):
                self._control(method, path)
                return
            fault = self.state.faults.take(method, self.path)
            if fault is not None:
                time.sleep(fault.latency)
                if fault.drop:
                    self.close_connection = True
                    self.connection.shutdown(2)
                    self._status = -1
                    return
                if fault.status:
                    headers = (
                        {"Retry-After": f"{fault.retry_after:g}"} if fault.retry_after is not None else {}
                    )
                    code = "TooManyRequests" if fault.status == 429 else "InternalServerError"
                    self._send(fault.status, {"error": {"code": code, "message": "Injected fault."}}, headers)
                    return
            self._route(method, path, query)
        except ArmError as exc:
            self._send(exc.status, exc.body())
        except Exception as exc:  # an emulator bug must still answer, like ARM's own 500s
            traceback.print_exc()
            self._send(500, {"error": {"code": "InternalServerError", "message": f"Emulator error: {exc!r}"}})
        finally:
            if not path.startswith("/_sandbox/"):
                with self.state.lock:
                    self.state.requests.append(
                        {
                            "method": method,
                            "path": path,
                            "query": query,
                            "status": self._status,
                            "seconds": round(time.monotonic() - started, 4),
                        }
                    )

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731

    # --- Entra ID -----------------------------------------------------------------------------------------------------

    def _base(self) -> str:
        port = self.server.server_address[1]  # type: ignore[index]
        host = self.headers.get("Host") or f"127.0.0.1:{port}"
        return f"https://{host}"

    def _openid(self, tenant: str) -> None:
        base = f"{self._base()}/{tenant}"
        self._send(
            200,
            {
                "issuer": f"{base}/v2.0",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "tenant_region_scope": "WW",
            },
        )

    def _token(self, tenant: str) -> None:
        form = self._body() or {}
        client_id = form.get("client_id", "")
        if form.get("grant_type") != "client_credentials":
            raise_token_error(
                self, "unsupported_grant_type", "AADSTS70003: only client_credentials is supported here."
            )
            return
        if "client_assertion" in form:
            if not form["client_assertion"].strip():
                raise_token_error(
                    self,
                    "invalid_client",
                    "AADSTS700024: Client assertion is not within its valid time range.",
                )
                return
        else:
            allowed = self.state.clients
            expected = allowed.get(client_id) if allowed is not None else DEFAULT_SECRET
            if expected is None or form.get("client_secret") != expected:
                raise_token_error(
                    self,
                    "invalid_client",
                    f"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is "
                    f"the client secret value, not the client secret ID, for a secret added to app '{client_id}'.",
                )
                return
        token = "sandbox." + secrets.token_urlsafe(24)
        with self.state.lock:
            self.state.tokens[token] = (client_id, time.time() + _TOKEN_LIFETIME, tenant.lower())
        self._send(
            200,
            {
                "token_type": "Bearer",
                "expires_in": _TOKEN_LIFETIME,
                "ext_expires_in": _TOKEN_LIFETIME,
                "access_token": token,
            },
        )

    def _caller(self, path: str = "") -> str:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        with self.state.lock:
            entry = self.state.tokens.get(token)
        if not auth.startswith("Bearer ") or entry is None or entry[1] < time.time():
            raise ArmError(
                401,
                "InvalidAuthenticationToken",
                "The access token is invalid.",
            )
        self._token_tenant = entry[2]
        if m := _SUBSCRIPTION.match(path):
            owner = self._tenant_of(m["sub"])
            if entry[2] != owner:
                raise ArmError(
                    401,
                    "InvalidAuthenticationTokenTenant",
                    f"The access token is from the wrong issuer 'https://sts.windows.net/{entry[2]}/'. It must match "
                    f"the tenant 'https://sts.windows.net/{owner}/' associated with this subscription. Please use the "
                    f"authority (URL) 'https://login.windows.net/{owner}' to get the token.",
                )
        return entry[0]

    def _authorize(self, caller: str, method: str, path: str) -> None:
        with self.state.lock:
            scopes = self.state.assignments.get(caller.lower())
        if scopes is None:
            return
        target = path.lower().rstrip("/")
        if (m := _SUBSCRIPTION.match(path)) and m.group(2) is None:
            allowed = any(s == target or s.startswith(target + "/") for s in scopes)
        else:
            allowed = any(target == s or target.startswith(s + "/") for s in scopes)
        if not allowed:
            raise ArmError(
                403,
                "AuthorizationFailed",
                f"The client '{caller}' with object id '{caller}' does not have authorization to perform action "
                f"'{_action(method, path)}' over scope '{path}' or the scope is invalid. If access was recently "
                "granted, please refresh your credentials.",
            )

    def _tenant_of(self, subscription: str) -> str:
        with self.state.lock:
            return self.state.subscriptions.get(subscription.lower(), DEFAULT_TENANT)

    # --- ARM ------------------------------------------------------------------------------------------------------------

    def _api_version(self, query: dict[str, str], supported: tuple[str, ...]) -> None:
        version = query.get("api-version")
        if not version:
            raise ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        if version not in supported:
            raise ArmError(
                400,
                "InvalidApiVersionParameter",
                f"The api-version '{version}' is invalid. The supported versions are '{', '.join(supported)}'.",
            )

    def _route(self, method: str, path: str, query: dict[str, str]) -> None:
        tenant = _OPENID.match(path)
        if tenant and method == "GET":
            self._openid(tenant["tenant"])
            return
        tenant = _TOKEN.match(path)
        if tenant and method == "POST":
            self._token(tenant["tenant"])
            return
        caller = self._caller(path)
        if (principal := graph.SERVICE_PRINCIPAL.match(path)) and method == "GET":
            self._send(*self.state.directory.service_principal(caller, self._token_tenant, principal["id"]))
            return
        self._authorize(caller, method, path)
        store = self.state.store
        if (m := _SUBSCRIPTION.match(path)) and m.group(2) is None:
            self._api_version(query, SUBSCRIPTION_API_VERSIONS)
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on subscriptions.")
            sub = m["sub"]
            self._send(
                200,
                {
                    "id": f"/subscriptions/{sub}",
                    "subscriptionId": sub,
                    "tenantId": self._tenant_of(sub),
                    "displayName": f"sandbox {sub[:8]}",
                    "state": "Enabled",
                },
            )
            return
        if m := _PRICINGS.match(path):
            self._api_version(query, PRICING_API_VERSIONS)
            pricings = self.state.pricings
            if method == "GET" and m["name"]:
                self._send(200, pricings.get(m["sub"], m["name"]))
            elif method == "GET":
                self._send(200, {"value": pricings.list(m["sub"])})
            elif method == "PUT" and m["name"]:
                self._send(200, pricings.put(m["sub"], m["name"], self._body()))
            else:
                raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on pricings.")
            return
        if m := _HEALTH.match(path):
            self._api_version(query, HEALTH_API_VERSIONS)
            if method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{method} is not supported on health reports.")
            reports = store.health_reports(m["sub"], m["rg"], m["name"])
            if m["report"]:
                match = [r for r in reports if r["name"].lower() == m["report"].lower()]
                if not match:
                    raise ArmError(404, "ResourceNotFound", f"Health report {m['report']} was not found.")
                self._send(200, match[0])
            else:
                self._send(200, {"value": reports})
            return
        if m := _CONNECTOR.match(path):
            self._api_version(query, CONNECTOR_API_VERSIONS)
            sub, rg, name = m["sub"], m["rg"], m["name"]
            if method == "GET":
                self._send(200, store.get(sub, rg, name).view())
            elif method == "PUT":
                status, connector = store.put(
                    sub,
                    rg,
                    name,
                    self._body(),
                    caller,
                    self.headers.get("If-Match"),
                    self.headers.get("If-None-Match"),
                )
                self._send(status, connector.view())
            elif method == "PATCH":
                connector = store.patch(sub, rg, name, self._body(), caller, self.headers.get("If-Match"))
                self._send(200, connector.view())
            elif method == "DELETE":
                self._send(200 if store.delete(sub, rg, name, self.headers.get("If-Match")) else 204)
            else:
                raise ArmError(405, "MethodNotAllowed", f"{method} is not supported.")
            return
        m = _LIST_RG.match(path) or _LIST_SUB.match(path)
        if m and method == "GET":
            self._api_version(query, CONNECTOR_API_VERSIONS)
            connectors = store.list_connectors(m["sub"], m.groupdict().get("rg"))
            start = int(query.get("$skipToken", "0"))
            page = connectors[start : start + self.state.page_size]
            result: dict[str, Any] = {"value": [c.view() for c in page]}
            if start + self.state.page_size < len(connectors):
                next_query = urllib.parse.urlencode(
                    {**query, "$skipToken": str(start + self.state.page_size)}
                )
                result["nextLink"] = f"{self._base()}{path}?{next_query}"
            self._send(200, result)
            return
        raise ArmError(404, "NotFound", f"No route for {method} {path}.")

    # --- control --------------------------------------------------------------------------------------------------------

    def _control(self, method: str, path: str) -> None:
        state = self.state
        if path == "/_sandbox/reset" and method == "POST":
            state.reset()
        elif path == "/_sandbox/requests":
            if method == "DELETE":
                with state.lock:
                    state.requests.clear()
            else:
                with state.lock:
                    self._send(200, {"requests": list(state.requests)})
                return
        elif path == "/_sandbox/faults":
            if method == "DELETE":
                state.faults.clear()
            else:
                state.faults.add(FaultRule.from_json(self._body() or {}))
        elif path == "/_sandbox/health" and method == "POST":
            body = self._body() or {}
            state.store.set_health(
                body["connectorId"],
                body.get("status", "Healthy"),
                body.get("reason", ""),
                body.get("issues", []),
            )
        elif path == "/_sandbox/clients" and method == "POST":
            state.clients = dict(self._body() or {})
        elif path == "/_sandbox/role-assignments" and method == "POST":
            with state.lock:
                for client, scopes in (self._body() or {}).items():
                    if scopes is None:
                        state.assignments.pop(client.lower(), None)
                    else:
                        state.assignments[client.lower()] = [s.lower().rstrip("/") for s in scopes]
        elif path == "/_sandbox/graph" and method == "POST":
            state.directory.configure(self._body() or {})
        elif path == "/_sandbox/subscriptions" and method == "POST":
            with state.lock:
                state.subscriptions.update({k.lower(): v.lower() for k, v in (self._body() or {}).items()})
        else:
            raise ArmError(404, "NotFound", f"No control endpoint {method} {path}.")
        self._send(200, {"ok": True})


def _action(method: str, path: str) -> str:
    """The RBAC action ARM checks for a request (Microsoft.Security and Microsoft.Resources operations)."""
    if _HEALTH.match(path):
        return "Microsoft.Security/healthReports/read"
    if _PRICINGS.match(path):
        return f"Microsoft.Security/pricings/{'write' if method == 'PUT' else 'read'}"
    if _CONNECTOR.match(path) or _LIST_RG.match(path) or _LIST_SUB.match(path):
        verb = {"GET": "read", "PUT": "write", "PATCH": "write", "DELETE": "delete"}.get(method, "read")
        return f"Microsoft.Security/securityConnectors/{verb}"
    return "Microsoft.Resources/subscriptions/read"


def raise_token_error(handler: Handler, error: str, description: str) -> None:
    """An OAuth2 error response as Entra ID sends it (RFC 6749 section 5.2 plus the AADSTS text)."""
    handler._send(
        401 if error == "invalid_client" else 400, {"error": error, "error_description": description}
    )


def make_server(host: str, port: int, cert: str, key: str, page_size: int = 50) -> TLSServer:
    handler = type("BoundHandler", (Handler,), {"state": State(page_size)})
    return TLSServer((host, port), handler, tls_context(cert, key))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Azure Resource Manager emulator for Microsoft.Security connectors"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--page-size", type=int, default=50)
    args = parser.parse_args(argv)
    server = make_server(args.host, args.port, args.cert, args.key, args.page_size)
    print(f"ARM emulator listening on https://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
