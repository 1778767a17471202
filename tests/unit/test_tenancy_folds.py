"""A policy's watch event folds the admission policy's parameter; the API server may be away right then (restarting,
overloaded: campaign seed 44081). The handler runs here as Kopf runs it, on a Runtime built as start-up builds it,
against a stand-in API server that answers every request with one status (or a port nothing listens on)."""

import asyncio
import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from defender_operator.handlers.runtime import Runtime
from defender_operator.handlers.tenancy import policy_changed
from tests.support.runtime import handler_runtime, memo_of

INDEXES: dict[str, Any] = {"policies": {}, "namespace_labels": {}, "awsconnectors": {}}


@contextmanager
def api_server(status: int | None) -> Iterator[str]:
    """The address of an API server answering every request with ``status``; None: nothing listens there."""
    if status is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        yield f"http://127.0.0.1:{port}"
        return

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": %d}' % status
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def runtime_at(host: str) -> Runtime:
    configuration = client.Configuration()
    configuration.host, configuration.retries = host, False
    return handler_runtime(client.ApiClient(configuration))


def changed(runtime: Runtime) -> None:
    memo = memo_of(runtime)
    spec = {"namespaces": {"names": ["a"]}}
    asyncio.run(policy_changed(name="p", spec=spec, meta={}, type="MODIFIED", memo=memo, **INDEXES))


@pytest.mark.parametrize("status", [None, 503, 429], ids=["unreachable", "503", "429"])
def test_a_fold_that_meets_an_absent_api_server_is_left_to_the_relist_not_raised(
    status: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Kopf logs an event handler's exception as an error and drops the event (it retries no event handler): an
    API server restarting is no error, and the policies are listed again within policy_relist_seconds."""
    with api_server(status) as host, caplog.at_level(logging.WARNING, logger="defender_operator"):
        runtime = runtime_at(host)
        try:
            changed(runtime)
        finally:
            runtime.workers.close()
    assert "the policies could not be folded, the API server is away" in caplog.text


def test_a_fold_the_api_server_refuses_is_still_an_error() -> None:
    """A refusal (403: the ServiceAccount lost its grant) is for a person to see: raised, so Kopf logs it."""
    with api_server(403) as host:
        runtime = runtime_at(host)
        try:
            with pytest.raises(ApiException) as refused:
                changed(runtime)
        finally:
            runtime.workers.close()
    assert refused.value.status == 403
