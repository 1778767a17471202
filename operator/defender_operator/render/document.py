"""A rendered document: the same bytes for the same input, and a hash that says when it changed."""

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from typing import Any


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: the form that is hashed and sent to the clouds."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Rendered:
    """A JSON document (template, Terraform configuration or connector body)."""

    content: dict[str, Any]

    @cached_property
    def compact(self) -> str:
        return canonical_json(self.content)

    @cached_property
    def pretty(self) -> str:
        return json.dumps(self.content, indent=2, ensure_ascii=False) + "\n"

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.compact.encode()).hexdigest()
