"""A proxy between the operator and the sandbox's API server that leaves the operator's API group out of discovery
until the test reveals it, as a kube-apiserver that has just started does for a moment: it answers ``/apis`` before
its CRD informer has synced and the custom resources' discovery is installed (kubernetes/kubernetes#71218; the
chaos campaign's seed 59299 met it after an API-server restart). Everything else passes through unchanged,
watches streamed. The operator talks plain HTTP to it; it talks to the API server as the sandbox's admin."""

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


class DiscoveryGap:
    def __init__(self, plane: ControlPlane, group: str, state: Path) -> None:
        parts = urlsplit(plane.server)
        assert parts.hostname and parts.port
        context = ssl.create_default_context(cafile=str(plane.ca_file))
        context.load_cert_chain(str(plane.pki / "admin.crt"), str(plane.pki / "admin.key"))
        self.group = group
        self.hiding = True
        gap = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _forward(self) -> None:
                path = self.path.split("?")[0].rstrip("/")
                # the group's own discovery documents: /apis/<group> and /apis/<group>/<version>
                if gap.hiding and path.startswith(f"/apis/{gap.group}") and path.count("/") <= 3:
                    self.send_error(404)
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
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
                    if gap.hiding and path == "/apis" and response.status == 200:
                        groups = json.loads(response.read())
                        groups["groups"] = [g for g in groups["groups"] if g["name"] != gap.group]
                        payload = json.dumps(groups).encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(payload)))
                        self.end_headers()
                        self.wfile.write(payload)
                        return
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
        threading.Thread(target=self.server.serve_forever, daemon=True, name="discovery-gap").start()
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig = state / "discovery-gap.kubeconfig"
        self.kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "gap", "cluster": {"server": url}}],
                    "users": [{"name": "gap", "user": {}}],
                    "contexts": [{"name": "gap", "context": {"cluster": "gap", "user": "gap"}}],
                    "current-context": "gap",
                }
            )
        )

    def reveal(self) -> None:
        """The API server's discovery now lists the group, as it does once its CRD informer has synced."""
        self.hiding = False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
