"""Fault rules shared by the ARM emulator and the fault-injecting proxy.

A rule matches a request by method and a regular expression on the path (query included), in the proxy optionally
also one on the request's body, form-decoded (``bodyPattern``: one stack's name, so one object's calls fail among
many), and applies to the next
``count`` matching requests: an HTTP error (429 with Retry-After, 500, 503, ...), added latency, a dropped
connection (the socket is closed without a response; with ``after``, in the proxy, once the request reached the
emulator and took effect: the answer is lost, as when a connection breaks on its way back), or, in the proxy, the
caller killed: the request reaches the emulator and takes effect, then the process group whose id is in the file
``killPidFile`` (read then: whichever process the caller is by that time, restarts included) gets SIGKILL before
any answer comes back (the unluckiest moment for a crash: the write happened, the caller never learnt it).
"""

import re
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultRule:
    method: str = "*"
    path_pattern: str = ".*"
    body_pattern: str | None = None
    count: int = 1
    status: int | None = None
    code: str | None = None  # the error code in the body (AWS), e.g. AccessDenied
    retry_after: float | None = None
    latency: float = 0.0
    drop: bool = False
    after: bool = False  # drop only once the request took effect (the proxy)
    kill_pid_file: str | None = None
    service: str | None = None  # for the proxy: the error body format ("aws-query", "arm")
    _regex: re.Pattern[str] = field(init=False, repr=False)
    _body_regex: re.Pattern[str] | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.path_pattern)
        self._body_regex = re.compile(self.body_pattern) if self.body_pattern is not None else None

    def matches(self, method: str, path: str, body: str = "") -> bool:
        return (
            self.count > 0
            and self.method in ("*", method)
            and self._regex.search(path) is not None
            and (self._body_regex is None or self._body_regex.search(body) is not None)
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FaultRule":
        return cls(
            method=str(data.get("method", "*")).upper(),
            path_pattern=str(data.get("pathPattern", ".*")),
            body_pattern=str(data["bodyPattern"]) if data.get("bodyPattern") is not None else None,
            count=int(data.get("count", 1)),
            status=int(data["status"]) if data.get("status") is not None else None,
            code=data.get("code"),
            retry_after=float(data["retryAfter"]) if data.get("retryAfter") is not None else None,
            latency=float(data.get("latency", 0.0)),
            drop=bool(data.get("drop", False)),
            after=bool(data.get("after", False)),
            kill_pid_file=data.get("killPidFile"),
            service=data.get("service"),
        )


class FaultTable:
    """Thread-safe list of rules; each match uses up one of the rule's count."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def take(self, method: str, path: str, body: str = "") -> FaultRule | None:
        with self._lock:
            for rule in self._rules:
                if rule.matches(method, path, body):
                    rule.count -= 1
                    return rule
        return None
