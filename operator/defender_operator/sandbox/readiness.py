"""Waiting for a background service to answer, and failing fast (with its log) when it dies instead."""

import ssl
import time
import urllib.error
import urllib.request

from .processes import Recorded

READY_TIMEOUT = 60.0


class NotReady(RuntimeError):
    """A sandbox service did not come up; the message points at the log to read."""


def wait_ready(
    record: Recorded, url: str, what: str, context: ssl.SSLContext | None = None, expect: bytes | None = None
) -> None:
    """Poll ``url`` until it answers (with ``expect`` in the body, when given)."""
    deadline = time.monotonic() + READY_TIMEOUT
    last = ""
    while time.monotonic() < deadline:
        if not record.alive():
            raise NotReady(f"{what} exited; see {record.log}")
        try:
            with urllib.request.urlopen(url, context=context, timeout=2) as response:
                body = response.read()
                if expect is None or expect in body:
                    return
                last = body.decode(errors="replace")[:200]
        except urllib.error.HTTPError as exc:
            if expect is None:
                return  # it answers: that is all "ready" means for the emulators
            last = str(exc)
        except (urllib.error.URLError, ConnectionError, TimeoutError, ssl.SSLError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise NotReady(f"{what} not ready after {READY_TIMEOUT:.0f}s ({last}); see {record.log}")
