"""Structured logs: one JSON object per line (or plain text for a terminal), through the standard logging module
that Kopf and the SDKs use too."""

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, str | int | float | bool | None]:
    """The structured fields a call passed with ``extra=`` (object, result, delay, ...)."""
    return {
        key: value if isinstance(value, str | int | float | bool | None) else str(value)
        for key, value in record.__dict__.items()
        if key not in _STANDARD and not key.startswith("_")
    }


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
        if record.exc_info:
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
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # The SDKs log every request at INFO (azure-core) or DEBUG; keep them at WARNING unless asked.
    # Kopf logs every handler run; the operator logs each pass itself.
    for noisy in ("azure", "botocore", "boto3", "urllib3", "kubernetes", "aiohttp.access", "kopf.objects"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING)
