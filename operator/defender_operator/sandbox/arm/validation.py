"""Validation of connector bodies against the strict schema of api-version 2024-08-01-preview.

The schema's offerings are a ``oneOf`` keyed by ``offeringType``; jsonschema would only say "not valid under any of
the given schemas". For a useful 400 the offending offering is validated against the branch its ``offeringType``
selects, so a misspelt field is named (``properties.offerings[1]: Additional properties are not allowed
('cloudRoleArnn' was unexpected)``).
"""

import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

SCHEMA_FILE = "security-connector-aws.2024-08-01-preview.schema.json"


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(
        resources.files(__package__).joinpath(f"data/{SCHEMA_FILE}").read_text()
    )
    return loaded


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(body)"


def _branch_errors(error: jsonschema.ValidationError) -> list[str]:
    instance = error.instance
    if error.validator == "oneOf" and isinstance(instance, dict) and "offeringType" in instance:
        branch = schema()["$defs"].get(f"offering_{instance['offeringType']}")
        if branch is not None:
            resolver_schema = {**branch, "$defs": schema()["$defs"]}
            validator = jsonschema.Draft202012Validator(resolver_schema)
            return [
                f"{_path([*error.absolute_path, *e.absolute_path])}: {e.message}"
                for e in sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
            ]
        return [
            f"{_path([*error.absolute_path, 'offeringType'])}: unsupported offeringType {instance['offeringType']!r}"
        ]
    return [f"{_path(error.absolute_path)}: {error.message}"]


def errors(body: Any) -> list[str]:
    """Every problem of a request body, each naming the field; empty when the body is valid."""
    validator = jsonschema.Draft202012Validator(schema())
    found: list[str] = []
    for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
        found.extend(_branch_errors(error))
    return found
