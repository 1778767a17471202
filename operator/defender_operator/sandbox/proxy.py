"""A fault-injecting loopback proxy for either emulator, for when the operator runs as a separate process.

Point the operator's endpoint (AWS_ENDPOINT_URL, or the ARM endpoint) at the proxy; it forwards every request to the
upstream and, when a fault rule matches, answers in that service's own error format instead: AWS query-protocol
``Throttling`` (HTTP 400, as botocore's retry handler expects: botocore/data/_retry.json), ARM ``429`` with
``Retry-After``, a 5xx, extra latency, or a reset connection.

Run as ``python -m defender_operator.sandbox.proxy --port N --upstream URL [--service aws|arm] [--cert C --key K
--upstream-ca CA]``; ``POST|DELETE /_proxy/faults`` manages the rules (see :mod:`.faults`), ``GET|DELETE /_proxy/stats``
counts (or resets the counts of) forwarded and faulted requests, per operation.
"""

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import struct
import threading
import time
import urllib.parse
from http.client import HTTPConnection, HTTPSConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from .faults import FaultRule, FaultTable
from .tls import TLSServer, tls_context

_AWS_ERROR = (
    "<ErrorResponse><Error><Type>{type}</Type><Code>{code}</Code><Message>{message}</Message></Error>"
    "<RequestId>{rid}</RequestId></ErrorResponse>"
)
_AWS_DEFAULTS = {  # status -> (type, code, message) when the rule names no code
    400: ("Sender", "Throttling", "Rate exceeded"),
    429: ("Sender", "Throttling", "Rate exceeded"),
    403: ("Sender", "AccessDenied", "User is not authorized to perform this operation (injected)"),
}
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
}


class ProxyState:
    def __init__(self, upstream: str, service: str, upstream_ca: str | None) -> None:
        self.upstream = urllib.parse.urlsplit(upstream)
        self.service = service
        self.upstream_context = ssl.create_default_context(cafile=upstream_ca) if upstream_ca else None
        self.faults = FaultTable()
        self.stats: dict[str, Any] = {"forwarded": 0, "faulted": 0, "operations": {}}
        self.lock = threading.Lock()

    def connection(self) -> HTTPConnection:
        host, port = self.upstream.hostname or "127.0.0.1", self.upstream.port
        if self.upstream.scheme == "https":
            return HTTPSConnection(host, port, context=self.upstream_context, timeout=60)
        return HTTPConnection(host, port, timeout=60)


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, the body waits for the client's delayed ACK
    # of the headers (about 40 ms on Linux), a delay no cloud's front end adds to every response.
    disable_nagle_algorithm = True
    state: ProxyState

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, rule: FaultRule, rest_json: bool = False) -> bool:
        time.sleep(rule.latency)
        if rule.drop:
            # An abortive close (RST), as a load balancer that drops the connection does.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return True
        if rule.status is None:
            return False
        rid = str(time.time_ns())
        service = rule.service or self.state.service
        kind, code, message = _AWS_DEFAULTS.get(
            rule.status, ("Receiver", "InternalFailure", "Injected failure")
        )
        if service == "aws" and rest_json:
            # REST-JSON services (EKS) answer {"message"} with the code in x-amzn-ErrorType
            # (smithy.io/2.0/aws/protocols/aws-restjson1-protocol.html, "Operation error serialization").
            body = json.dumps({"message": message}).encode()
            headers = {
                "Content-Type": "application/json",
                "x-amzn-ErrorType": rule.code or code,
                "x-amzn-RequestId": rid,
            }
            self._reply(rule.status, body, headers)
        elif service == "aws":
            xml = _AWS_ERROR.format(type=kind, code=rule.code or code, message=message, rid=rid)
            self._reply(rule.status, xml.encode(), {"Content-Type": "text/xml", "x-amzn-RequestId": rid})
        else:
            code = "TooManyRequests" if rule.status == 429 else "InternalServerError"
            headers = {"Content-Type": "application/json"}
            if rule.retry_after is not None:
                headers["Retry-After"] = f"{rule.retry_after:g}"
            body = json.dumps({"error": {"code": code, "message": "Injected fault."}}).encode()
            self._reply(rule.status, body, headers)
        return True

    def _handle(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/_proxy/"):
            self._control(method, body)
            return
        text = urllib.parse.unquote_plus(body.decode(errors="ignore"))
        action = dict(urllib.parse.parse_qsl(body.decode(errors="ignore"))).get("Action", "") if body else ""
        target = self.headers.get("X-Amz-Target", "")
        rule = self.state.faults.take(method, f"{self.path} {action or target}".strip(), text)
        if rule is not None and rule.kill_pid_file is not None:
            self._forward(method, body, action, target)  # the write takes effect...
            with contextlib.suppress(OSError, ValueError):  # ...and the caller dies before it hears of it
                os.killpg(int(Path(rule.kill_pid_file).read_text()), signal.SIGKILL)
            self.close_connection = True
            return
        if rule is not None and rule.drop and rule.after:
            with self.state.lock:
                self.state.stats["faulted"] += 1
            self._forward(method, body, action, target)  # the write takes effect...
            self._fault(rule)  # ...and its answer is lost on the way back
            return
        if rule is not None:
            with self.state.lock:
                self.state.stats["faulted"] += 1
            if self._fault(
                rule, rest_json=not (action or target or self.headers.get("Content-Type", "").endswith("xml"))
            ):
                return
        status, data, out = self._forward(method, body, action, target)
        self._reply(status, data, out)

    def _forward(
        self, method: str, body: bytes, action: str, target: str
    ) -> tuple[int, bytes, dict[str, str]]:
        upstream = self.state.connection()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Host"] = self.state.upstream.netloc
        upstream.request(method, self.path, body=body or None, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        with self.state.lock:
            self.state.stats["forwarded"] += 1
            operation = action or target.rsplit(".", 1)[-1] or f"{method} {self.path.split('?')[0]}"
            operations = self.state.stats["operations"]
            operations[operation] = operations.get(operation, 0) + 1
        out = {k: v for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP | {"content-length"}}
        return response.status, data, out

    def _control(self, method: str, body: bytes) -> None:
        if self.path == "/_proxy/faults" and method == "POST":
            self.state.faults.add(FaultRule.from_json(json.loads(body or b"{}")))
        elif self.path == "/_proxy/faults" and method == "DELETE":
            self.state.faults.clear()
        elif self.path == "/_proxy/stats" and method == "DELETE":
            with self.state.lock:
                self.state.stats = {"forwarded": 0, "faulted": 0, "operations": {}}
        elif self.path == "/_proxy/stats" and method == "GET":
            with self.state.lock:
                self._reply(200, json.dumps(self.state.stats).encode(), {"Content-Type": "application/json"})
            return
        self._reply(200, b'{"ok": true}', {"Content-Type": "application/json"})

    do_GET = lambda self: self._handle("GET")  # noqa: E731
    do_PUT = lambda self: self._handle("PUT")  # noqa: E731
    do_PATCH = lambda self: self._handle("PATCH")  # noqa: E731
    do_POST = lambda self: self._handle("POST")  # noqa: E731
    do_DELETE = lambda self: self._handle("DELETE")  # noqa: E731
    do_HEAD = lambda self: self._handle("HEAD")  # noqa: E731


def make_proxy(
    host: str,
    port: int,
    upstream: str,
    service: str,
    cert: str | None = None,
    key: str | None = None,
    upstream_ca: str | None = None,
) -> ThreadingHTTPServer:
    handler = type(
        "BoundProxyHandler", (ProxyHandler,), {"state": ProxyState(upstream, service, upstream_ca)}
    )
    if cert and key:
        return TLSServer((host, port), handler, tls_context(cert, key))
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="fault-injecting proxy in front of an emulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--service", choices=["aws", "arm"], default="aws")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--upstream-ca")
    args = parser.parse_args(argv)
    server = make_proxy(
        args.host, args.port, args.upstream, args.service, args.cert, args.key, args.upstream_ca
    )
    print(f"proxy listening on {args.port} -> {args.upstream}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
