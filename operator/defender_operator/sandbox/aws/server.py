"""moto in server mode with this project's fixes, plus a small control endpoint.

Run as ``python -m defender_operator.sandbox.aws.server --port N [--async-stack-seconds S]``. Clients reach it through
the standard ``AWS_ENDPOINT_URL``. ``POST /moto-api/reset`` resets all state, as in stock moto; ``GET/POST
/_sandbox/config`` reads or sets ``{"asyncStackSeconds": S}`` while it runs.
"""

import argparse
import json
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

from . import cloudformation_fixes, drift, iam_fixes, stackset_fixes

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


def apply_fixes(async_stack_seconds: float = 0.0) -> None:
    iam_fixes.apply()
    cloudformation_fixes.apply()
    drift.apply()
    stackset_fixes.apply()
    cloudformation_fixes.Settings.async_seconds = async_stack_seconds


class App:
    """moto's WSGI app, serialised under one lock (moto's backends are not thread-safe, and stack timers share them)."""

    def __init__(self) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == CONFIG_PATH:
            return self._config(environ, start_response)
        with cloudformation_fixes.LOCK:
            if path == "/moto-api/reset":
                cloudformation_fixes.cancel_pending()
                drift.reset()
            return list(self.moto(environ, start_response))

    def _config(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.loads(environ["wsgi.input"].read(length) or b"{}")
            cloudformation_fixes.Settings.async_seconds = float(body.get("asyncStackSeconds", 0))
        payload = json.dumps({"asyncStackSeconds": cloudformation_fixes.Settings.async_seconds}).encode()
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
    apply_fixes(args.async_stack_seconds)
    server = make_server(args.host, args.port, App(), threaded=True, request_handler=MotoRequestHandler)
    print(f"moto listening on http://{args.host}:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
