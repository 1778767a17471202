"""Structured logs: one JSON object per line (or plain text for a terminal), through the standard logging module
that Kopf and the SDKs use too, with every secret redacted at every level.

At DEBUG the SDKs print what they send and receive: botocore the AssumeRole answer (SecretAccessKey, SessionToken),
azure-identity token responses, the Kubernetes client the Secrets it reads. So every line passes through
:class:`Redactor` before it is written: values the operator has read as secrets (registered by ``credentials.py``
with :func:`secret`, each under the Secret or session it came from, and let go with it) are replaced wherever they
appear, and so are the values of fields that carry credentials in AWS, Entra and HTTP wire formats, whoever's they
are (Python reprs of header dicts included, whose values are bytes). The Kubernetes client's body dumps are also
capped at INFO, because a Secret arrives there base64-encoded.

The cost of a line does not grow with the number of secrets known: they are found by their first ``MIN_SECRET``
characters in one pass over the line. Values shorter than that are not registered (an account id has 12 digits, a
namespace or a reason a few letters: blanking every occurrence of such values in everyone's logs would hide more
than it protects; the credential fields' patterns still catch them in wire formats).
"""

import base64
import json
import logging
import re
import sys
import threading
from collections.abc import Iterable
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}
# Kopf's per-object logger adds these to every record: the object reference (kept, as "object") and internals.
_KOPF_INTERNALS = {"settings", "k8s_skip", "k8s_ref"}
REDACTED = "[redacted]"
MIN_SECRET = 16  # shorter values are too likely to be ordinary words, ids or names
MAX_SECRET = 8192  # longer ones are no credential (an STS session token is about 1 KiB)

_FIELD_PATTERNS = [  # each keeps <pre> and <post> and replaces what is between
    # XML (AWS query protocol answers): <SecretAccessKey>...</SecretAccessKey>
    re.compile(r"(?P<pre><(?P<tag>SecretAccessKey|SessionToken|SecurityToken)>)[^<]*(?P<post></(?P=tag)>)"),
    # JSON and Python reprs: "SecretAccessKey": "...", 'client_secret': '...'
    re.compile(
        r"""(?P<pre>(?P<q>["'])(?:SecretAccessKey|SessionToken|secretAccessKey|sessionToken|aws_secret_access_key|"""
        r"""aws_session_token|clientSecret|client_secret|access_token|refresh_token|id_token|password)(?P=q)"""
        r"""\s*[:=]\s*[bu]?(?P<v>["']))[^"']*(?P<post>(?P=v))"""
    ),
    # form bodies and query strings: client_secret=...&
    re.compile(
        r"(?P<pre>(?:client_secret|client_assertion|refresh_token|password|X-Amz-Security-Token)=)[^&\s'\"]+(?P<post>)"
    ),
    # headers: Authorization: Bearer ..., X-Amz-Security-Token: ...
    # headers, also as Python reprs of header dicts with bytes values: 'X-Amz-Security-Token': b'...'
    re.compile(r"(?P<pre>[Aa]uthorization['\"]?\s*[:=]\s*b?['\"]?)[^'\"\n]+(?P<post>)"),
    re.compile(r"(?P<pre>[Xx]-[Aa]mz-[Ss]ecurity-[Tt]oken['\"]?\s*[:=]\s*b?['\"]?)[^'\"\s,}]+(?P<post>)"),
]


class Redactor(logging.Filter):
    """Replaces secrets in a record's final text (message, arguments, exception and extra fields).

    Values are held by owners (a Secret, an assumed-role session): ``hold(owner, values)`` replaces what the owner
    held (a Secret read again after a rotation holds its new values only), ``release(owner)`` lets go of what only
    that owner held, so the set follows the credentials in use, not every credential ever read. Values longer than
    MAX_SECRET are not registered (no credential is that long; a tenant's megabyte of "secret" would cost everyone).

    ``redact(text, namespace)`` for what is written into one object (its status, its Events), and for a log line
    about one object, looks only for the operator's own and assumed credentials and the Secrets of that namespace:
    a tenant cannot make the operator blank another namespace's messages by storing their words in its own Secret.
    Lines about no object (the SDKs' wire dumps, the operator's own) are searched for every value held."""

    def __init__(self) -> None:
        super().__init__()
        self._holders: dict[str, set[object]] = {}  # value (and its base64) -> owners holding it
        self._owned: dict[object, set[str]] = {}  # owner -> its values
        self._by_prefix: dict[str, set[str]] = {}  # first MIN_SECRET characters -> values
        self._lock = threading.Lock()

    def add(self, value: str | None, owner: object = None) -> None:
        if not value or not MIN_SECRET <= len(value) <= MAX_SECRET:
            return
        encoded = base64.b64encode(value.encode("utf-8", "surrogateescape")).decode()
        with self._lock:
            for each in (value, encoded):
                self._holders.setdefault(each, set()).add(owner)
                self._owned.setdefault(owner, set()).add(each)
                self._by_prefix.setdefault(each[:MIN_SECRET], set()).add(each)

    def hold(self, owner: object, values: Iterable[str]) -> None:
        """``owner`` holds exactly ``values`` from now on (what it held before and holds no more is let go)."""
        self.release(owner)
        for value in values:
            self.add(value, owner)

    def release(self, owner: object) -> None:
        with self._lock:
            for value in self._owned.pop(owner, set()):
                holders = self._holders.get(value, set())
                holders.discard(owner)
                if not holders:
                    del self._holders[value]
                    bucket = self._by_prefix.get(value[:MIN_SECRET], set())
                    bucket.discard(value)
                    if not bucket:
                        del self._by_prefix[value[:MIN_SECRET]]

    def __len__(self) -> int:
        with self._lock:
            return len(self._holders)

    def redact(self, text: str, namespace: str | None = None) -> str:
        text = self._known(text, namespace)
        for pattern in _FIELD_PATTERNS:
            text = pattern.sub(_replace_value, text)
        return text

    def _visible(self, value: str, namespace: str | None) -> bool:
        if namespace is None:
            return True
        return any(
            not (isinstance(o, tuple) and len(o) == 3 and o[0] == "secret") or o[1] == namespace
            for o in self._holders.get(value, ())
        )

    def _known(self, text: str, namespace: str | None = None) -> str:
        """One pass over ``text``: at each position, the values that start with the next MIN_SECRET characters."""
        with self._lock:
            if not self._by_prefix:
                return text
            prefixes = self._by_prefix
            out, i, start, end = [], 0, 0, len(text) - MIN_SECRET + 1
            while i < end:
                candidates = prefixes.get(text[i : i + MIN_SECRET])
                match = max(
                    (v for v in candidates or () if text.startswith(v, i) and self._visible(v, namespace)),
                    key=len,
                    default=None,
                )
                if match is None:
                    i += 1
                    continue
                out.append(text[start:i])
                out.append(REDACTED)
                i = start = i + len(match)
        return "".join(out) + text[start:] if out else text

    def filter(self, record: logging.LogRecord) -> bool:
        namespace = _namespace_of(record)
        record.msg, record.args = self.redact(record.getMessage(), namespace), None
        if record.exc_info:
            record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info), namespace)
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD and isinstance(value, str):
                setattr(record, key, self.redact(value, namespace))
        return True


def _namespace_of(record: logging.LogRecord) -> str | None:
    """The namespace of the object a record is about ("" for a cluster-scoped one; None when it is about no object,
    as the SDKs' wire dumps are): a line about one object can hold only its own namespace's Secrets and the
    operator's credentials, so a tenant's Secret blanks nothing in the lines about another namespace's objects."""
    ref = record.__dict__.get("k8s_ref")
    if isinstance(ref, dict):
        return str(ref.get("namespace") or "")
    named = record.__dict__.get("object")
    if isinstance(named, str):
        return named.split("/", 1)[0] if "/" in named else ""
    return None


def _replace_value(match: re.Match[str]) -> str:
    return f"{match['pre']}{REDACTED}{match['post']}"


REDACTOR = Redactor()


def secret(value: str | None, owner: object = None) -> str | None:
    """Register ``value`` as a secret (never to be printed), held by ``owner`` (None: for the process's life), and
    return it unchanged."""
    REDACTOR.add(value, owner)
    return value


def forget_secrets(owner: object) -> None:
    """``owner``'s credentials are no longer in use: its values need not be looked for any more."""
    REDACTOR.release(owner)


def _fields(record: logging.LogRecord) -> dict[str, str | int | float | bool | None]:
    """The structured fields a call passed with ``extra=`` (object, result, duration, ...), not Kopf's internals."""
    fields: dict[str, str | int | float | bool | None] = {
        key: value if isinstance(value, str | int | float | bool | None) else str(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and key not in _KOPF_INTERNALS and not key.startswith("_")
    }
    ref = record.__dict__.get("k8s_ref")
    if isinstance(ref, dict) and "object" not in fields:
        fields["object"] = (
            f"{ref.get('namespace')}/{ref.get('name')}" if ref.get("namespace") else ref.get("name")
        )
    return fields


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_text:
            entry["error"] = record.exc_text
        elif record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """For a terminal: the JSON format's fields as ``key=value`` after the message, so text logs say which object."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(
            f"{key}={json.dumps(value) if isinstance(value, str) and (not value or ' ' in value) else value}"
            for key, value in _fields(record).items()
        )
        return f"{line} {fields}" if fields else line


def configure(fmt: str, level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(REDACTOR)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs log every request at INFO (azure-core) or DEBUG; keep them at WARNING unless asked.
    # Kopf logs every handler run; the operator logs each pass itself.
    debug = root.level <= logging.DEBUG
    for noisy in ("azure", "botocore", "boto3", "urllib3", "kubernetes", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
    # Response bodies, with Secrets in base64 and tokens, at any level: never.
    logging.getLogger("kubernetes.client.rest").setLevel(logging.INFO if debug else logging.WARNING)
