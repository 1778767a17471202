"""A proxy between the operator and the sandbox's API server that holds open the moments a test needs, so that it
does not depend on timing luck:

- it can leave the operator's API group out of discovery until the test reveals it, as a kube-apiserver that has
  just started does for a moment: it answers ``/apis`` before its CRD informer has synced and the custom resources'
  discovery is installed (kubernetes/kubernetes#71218; the chaos campaign's seed 59299 met it after an API-server
  restart);
- it can hold the operator's requests of one kind (a method and a part of the path) until the test lets them go,
  so that the test acts while the operator's call is under way (the campaign's seed 62200: an object gone between
  its first pass's record and its status).

Everything else passes through unchanged, watches streamed. The operator talks plain HTTP to it; it talks to the API
server as the sandbox's admin."""

import http.client
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from defender_operator.sandbox.controlplane import ControlPlane

# hop-by-hop headers (RFC 9110, 7.6.1) and the length, which the proxy sets itself
HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
}


class Hold:
    """Requests held at the proxy: ``reached`` is set when the first arrives; each waits until :meth:`release`, and
    the API server's answers to them are in ``answers`` (their statuses, in order)."""

    def __init__(self, method: str, fragment: str, naming: str) -> None:
        self.method, self.fragment, self.naming = method, fragment, naming.encode()
        self.reached, self._released = threading.Event(), threading.Event()
        self.answers: list[int] = []

    def matches(self, method: str, path: str, body: bytes | None) -> bool:
        return (
            method == self.method
            and self.fragment in path
            and self.naming in (body or b"")
            and not self._released.is_set()
        )

    def wait(self) -> None:
        self.reached.set()
        self._released.wait(timeout=300)  # a test that never lets go fails on its own bound first

    def release(self) -> None:
        self._released.set()


class ApiProxy:
    def __init__(self, plane: ControlPlane, state: Path, hidden_group: str | None = None) -> None:
        parts = urlsplit(plane.server)
        assert parts.hostname and parts.port
        context = ssl.create_default_context(cafile=str(plane.ca_file))
        context.load_cert_chain(str(plane.pki / "admin.crt"), str(plane.pki / "admin.key"))
        self.group = hidden_group
        self.hiding = hidden_group is not None
        self.holds: list[Hold] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                # the group's own discovery documents: /apis/<group> and /apis/<group>/<version>
                if proxy.hiding and path.startswith(f"/apis/{proxy.group}") and path.count("/") <= 3:
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                held = [hold for hold in proxy.holds if hold.matches(self.command, path, body)]
                for hold in held:
                    hold.wait()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP | {"content-length"}}
                if (
                    path == "/apis"
                ):  # the plain APIGroupList (not aggregated discovery), uncompressed, to rewrite
                    headers = {
                        k: v for k, v in headers.items() if k.lower() not in ("accept", "accept-encoding")
                    }
                    headers["Accept"] = "application/json"
                upstream = http.client.HTTPSConnection(parts.hostname, parts.port, context=context)
                try:
                    upstream.request(self.command, self.path, body=body, headers=headers)
                    response = upstream.getresponse()
                    if proxy.hiding and path == "/apis" and response.status == 200:
                        groups = json.loads(response.read())
                        groups["groups"] = [g for g in groups["groups"] if g["name"] != proxy.group]
                        payload = json.dumps(groups).encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
                    for hold in held:
                        hold.answers.append(response.status)
                    self.send_response(response.status)
                    for key, value in response.getheaders():
                        if key.lower() not in HOP | {"content-length"}:
                            self.send_header(key, value)
                    self.end_headers()  # HTTP/1.0: the body ends when the connection closes
                    while chunk := response.read1(65536):
                        self.wfile.write(chunk)
                        self.wfile.flush()
                except OSError:
                    pass  # the operator hung up (a watch it stopped), or the API server did
                finally:
                    upstream.close()

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True, name="api-proxy").start()
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig = state / "api-proxy.kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "proxy", "cluster": {"server": url}}],
                    "users": [{"name": "proxy", "user": {}}],
                    "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
                    "current-context": "proxy",
                }
            )
        )

    def reveal(self) -> None:
        """The API server's discovery now lists the group, as it does once its CRD informer has synced."""
        self.hiding = False

    def hold(self, method: str, fragment: str, naming: str) -> Hold:
        """Hold the operator's ``method`` requests whose path has ``fragment`` and whose body has ``naming`` (the
        test's namespace, say: other tests' objects pass) until the test releases them."""
        hold = Hold(method, fragment, naming)
        self.holds.append(hold)
        return hold

    def close(self) -> None:
        for hold in self.holds:
            hold.release()
        self.server.shutdown()
        self.server.server_close()
