"""moto in server mode with this project's fixes, plus a small control endpoint.

Run as ``python -m defender_operator.sandbox.aws.server --port N [--async-stack-seconds S]``. Clients reach it through
the standard ``AWS_ENDPOINT_URL``. ``POST /moto-api/reset`` resets all state, as in stock moto; ``GET/POST
/_sandbox/config`` reads or sets ``{"asyncStackSeconds": S, "pageSize": N, "enforceIamAccounts": [...],
"iamPropagationSeconds": P}`` while it runs (a POST changes the keys it names; a reset clears the accounts whose IAM
principals are authorized and IAM's propagation delay, ``propagation.py``).
"""

import argparse
import json
import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from . import authorization, delays, propagation

CONFIG_PATH = "/_sandbox/config"
StartResponse = Callable[..., Any]


def set_default_account(account: str) -> None:
    """The account that requests with unknown credentials (the sandbox's) belong to.

    moto's ``MOTO_ACCOUNT_ID`` would also force every request into that account, breaking cross-account role
    assumption (which real AWS supports and the operator uses), so the default is set where moto looks it up.
    """
    import moto.core.models
    import moto.iam.models

    moto.core.models.DEFAULT_ACCOUNT_ID = account
    moto.iam.models.DEFAULT_ACCOUNT_ID = account  # type: ignore[attr-defined]


# Services whose models the fixes patch. moto imports a service's models on the service's first request; its
# CloudFormation parser imports the models of some 30 services and takes about 1.2 s, most of the emulator's start-up.
FIXED_SERVICES = frozenset({"cloudformation", "iam", "eks", "organizations", "ssm"})


class App:
    """moto's WSGI app with the fixes, serialised under one lock (moto's backends are not thread-safe, and stack
    timers share them).

    The fixes are applied on the first request to a fixed service, as moto itself loads services, and also in the
    background right after start (``main``): the server accepts requests at once, and a request that arrives
    while the fixes are still loading waits for them.
    """

    def __init__(self) -> None:
        self.moto = DomainDispatcherApplication(self._backend_app)
        self._fixes_lock = threading.Lock()
        self._fixed = False

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CONFIG_PATH:
            return self._config(environ, start_response)
        with delays.LOCK:
            if path == "/moto-api/reset":
                self._reset_fixes()
            return list(self.moto(environ, start_response))

    def _backend_app(self, service: Any) -> Any:
        if service in FIXED_SERVICES:
            self.apply_fixes()
        return create_backend_app(service)

    def apply_fixes(self) -> None:
        with self._fixes_lock:
            if self._fixed:
                return
            from . import (
                cloudformation_fixes,
                delegated_admin,
                drift,
                eks_fixes,
                iam_fixes,
                ssm_fixes,
                stackset_fixes,
            )

            iam_fixes.apply()
            eks_fixes.apply()
            cloudformation_fixes.apply()
            drift.apply()
            stackset_fixes.apply()
            delegated_admin.apply()
            ssm_fixes.apply()
            propagation.apply()
            self._fixed = True

    def _reset_fixes(self) -> None:
        delays.cancel_pending()
        authorization.Settings.accounts = frozenset()
        propagation.reset()
        with self._fixes_lock:
            if self._fixed:
                from . import drift

                drift.reset()

    def _config(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            if "asyncStackSeconds" in body:
                delays.Settings.async_seconds = float(body["asyncStackSeconds"])
            if "pageSize" in body:
                delays.Settings.page_size = int(body["pageSize"])
            if "enforceIamAccounts" in body:
                authorization.Settings.accounts = frozenset(body["enforceIamAccounts"])
            if "iamPropagationSeconds" in body:
                propagation.Settings.seconds = float(body["iamPropagationSeconds"])
        payload = json.dumps(
            {
                "asyncStackSeconds": delays.Settings.async_seconds,
                "pageSize": delays.Settings.page_size,
                "enforceIamAccounts": sorted(authorization.Settings.accounts),
                "iamPropagationSeconds": propagation.Settings.seconds,
            }
        ).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="moto server with defender-operator's fixes")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--async-stack-seconds", type=float, default=0.0)
    parser.add_argument("--account", default="123456789012", help="account of the default credentials")
    args = parser.parse_args(argv)
    set_default_account(args.account)
    delays.Settings.async_seconds = args.async_stack_seconds
    authorization.install()
    app = App()
    server = make_server(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=app.apply_fixes, name="warm-up", daemon=True).start()
    print(f"moto listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
