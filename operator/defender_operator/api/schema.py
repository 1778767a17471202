"""Building blocks shared by the spec and status models: camelCase models and CEL rules.

Every model forbids unknown fields, so a misspelt key in a manifest is an error in ``defender-operator render`` just as
it is at ``kubectl apply`` (the API server's strict field validation). CEL rules are attached to the JSON Schema with
:func:`cel` and copied verbatim into the CRD by :mod:`defender_operator.api.crd`; the pydantic validators that mirror
them live next to the fields they check, and ``tests/unit/test_bad_manifests.py`` proves both reject the same table.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

CEL_KEY = "x-kubernetes-validations"


class CamelModel(BaseModel):
    """A model whose JSON form uses camelCase keys and rejects unknown ones."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=False,
    )


def cel(
    rule: str,
    message: str,
    *,
    field_path: str | None = None,
    reason: str | None = None,
    optional_old_self: bool = False,
) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry (a CEL rule with the message users see). ``optional_old_self``: the
    rule also runs at creation, with ``oldSelf`` an optional that has no value (Kubernetes 1.30+)."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    if optional_old_self:
        entry["optionalOldSelf"] = True
    return entry


# Validation context for a manifest that is being created (``kubectl apply`` of a new object, ``render -f``): rules
# that hold for new objects only, ratcheted for stored ones, are checked (pydantic ``context``).
NEW = {"new": True}


def immutable(field_label: str) -> dict[str, Any]:
    """A transition rule that refuses any change of the field it is attached to."""
    return cel("self == oldSelf", f"{field_label} is immutable; create a new AWSConnector instead")


def rules(*entries: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules."""
    return {CEL_KEY: list(entries)}
