"""An HTTPS server for the emulators and the fault proxy, in a module of its own: the fault proxy starts with every
test's operator, and importing the ARM emulator for it cost 1.5 s a start (jsonschema builds its format grammars on
import)."""

import ssl
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class TLSServer(ThreadingHTTPServer):
    """Serves HTTPS; the TLS handshake runs in the request's thread, so one slow client cannot stall the rest."""

    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext
    ) -> None:
        super().__init__(address, handler)
        self.context = context

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), address


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    return context
