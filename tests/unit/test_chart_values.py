"""The chart's values.yaml and values.schema.json describe the same values: every value has a schema entry (so a
typo is refused, and nothing is silently ignored) and every schema entry a default in values.yaml (so `helm show
values` documents it). helm lint and the chart tests check the rest against the real API server."""

import json
from typing import Any

import jsonschema
import yaml

from tests.support.paths import REPO

CHART = REPO / "charts" / "defender-operator"
FREE_FORM = {"global", "onboardingPolicies"}  # maps whose keys the user chooses


def paths(values: Any, schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Paths of values.yaml that the schema does not declare."""
    missing = []
    if not isinstance(values, dict) or schema.get("type") != "object" or "properties" not in schema:
        return missing
    for key, value in values.items():
        path = f"{prefix}{key}"
        declared = schema["properties"].get(key)
        if declared is None:
            if schema.get("additionalProperties") is False:
                missing.append(path)
            continue
        missing += paths(value, declared, path + ".")
    return missing


def test_every_value_is_in_the_schema_and_every_top_level_entry_has_a_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema.get("additionalProperties") is False
    assert paths(values, schema) == []
    assert sorted(set(schema["properties"]) - set(values) - FREE_FORM) == []


def test_the_defaults_are_valid_under_the_schema_and_typos_are_not() -> None:
    """values.yaml is the one source of defaults; the schema must accept it as it is and refuse a misspelt key or a
    wrong type, which is what helm does with it on install."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    assert [e.message for e in validator.iter_errors(values)] == []
    assert list(validator.iter_errors({**values, "replicaCuont": 2}))
    assert list(validator.iter_errors({**values, "replicaCount": "two"}))
