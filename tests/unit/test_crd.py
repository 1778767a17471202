"""The CRD is generated from the models and is structural, documented and in sync with the checked-in file."""

from typing import Any

from defender_operator.api.crd import custom_resource_definition
from defender_operator.cli import crd_yaml
from tests.support.paths import CRD


def _walk(schema: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = [(path, schema)]
    for name, prop in schema.get("properties", {}).items():
        out += _walk(prop, f"{path}.{name}")
    if "items" in schema:
        out += _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        out += _walk(schema["additionalProperties"], f"{path}{{}}")
    return out


def _root() -> dict[str, Any]:
    schema: dict[str, Any] = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_checked_in_crd_is_current() -> None:
    assert CRD.read_text() == crd_yaml(), (
        "crds/awsconnectors.yaml is stale: run `defender-operator crd > crds/awsconnectors.yaml`"
    )


def test_every_spec_and_status_field_has_a_description() -> None:
    root = _root()
    for part in ("spec", "status"):
        for path, node in _walk(root["properties"][part], part):
            if not path.endswith(("[]", "{}")):  # list items and map values are described by their field
                assert node.get("description"), f"{path} has no description"


def test_schema_is_structural() -> None:
    for path, node in _walk(_root()):
        assert "type" in node or path.endswith("metadata"), f"{path} has no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        for banned in ("$ref", "anyOf", "oneOf", "allOf", "const", "title"):
            assert banned not in node, f"{path} uses {banned}"


def test_nested_defaults_are_applied_by_the_api_server() -> None:
    spec = _root()["properties"]["spec"]["properties"]
    assert spec["plans"]["default"] == {}
    assert spec["plans"]["properties"]["servers"]["default"] == {}
    assert spec["plans"]["properties"]["servers"]["properties"]["enabled"]["default"] is True
    assert "default" not in spec["aws"]["properties"]["organization"]


def test_immutable_fields_carry_transition_rules() -> None:
    spec = _root()["properties"]["spec"]["properties"]
    for node in (
        spec["aws"]["properties"]["accountId"],
        spec["azure"]["properties"]["subscriptionId"],
        spec["azure"]["properties"]["resourceGroup"],
        spec["azure"]["properties"]["connectorName"],
    ):
        assert {"rule": "self == oldSelf"}.items() <= node["x-kubernetes-validations"][0].items()


def test_printer_columns_and_names() -> None:
    version = custom_resource_definition()["spec"]["versions"][0]
    names = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert names == ["Account", "Interval", "Plans", "Ready", "Reason", "Members", "Age"]
    wide = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority")]
    assert {"Connector", "Stack"} <= set(wide)
    assert version["subresources"] == {"status": {}}
    assert custom_resource_definition()["spec"]["names"]["shortNames"] == ["awsc"]


def test_reference_doc_is_current() -> None:
    from defender_operator.api.reference import reference_markdown
    from tests.support.paths import REPO

    assert (REPO / "docs" / "reference.md").read_text() == reference_markdown(), (
        "docs/reference.md is stale: run `defender-operator docs reference > docs/reference.md`"
    )


def test_the_stack_name_prefix_holds_for_new_objects_and_is_ratcheted_for_stored_ones() -> None:
    """Issue 28 asked for stack names under the prefix the operator's IAM policy allows; an adversarial review found
    that requiring it outright made objects stored before the rule unreadable after an upgrade (neither reconciled
    nor deletable). New objects are refused (CEL at the API server, the NEW context in `render`); stored ones parse."""
    from pydantic import ValidationError

    from defender_operator.api.schema import NEW
    from defender_operator.api.spec import AWSConnectorSpec
    from tests.support.manifests import base_manifest

    legacy = base_manifest()["spec"]
    legacy["deployment"] = {"stackName": "Onboarding"}
    legacy["aws"]["organization"] = {"stackSetName": "Members"}
    stored = AWSConnectorSpec.model_validate(legacy)  # as the operator reads a stored object
    assert stored.deployment.stack_name == "Onboarding"
    try:
        AWSConnectorSpec.model_validate(legacy, context=NEW)
    except ValidationError as exc:
        fields = {".".join(str(p) for p in e["loc"]) for e in exc.errors()}
        assert {"deployment.stackName", "aws.organization.stackSetName"} <= fields, fields
    else:
        raise AssertionError("a new object with a name outside DefenderForCloud- was accepted")
    crd = custom_resource_definition()
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for rules_of in (
        spec["deployment"]["properties"]["stackName"]["x-kubernetes-validations"],
        spec["aws"]["properties"]["organization"]["properties"]["stackSetName"]["x-kubernetes-validations"],
    ):
        ratchet = [r for r in rules_of if "startsWith('DefenderForCloud-')" in r["rule"]]
        assert (
            ratchet
            and ratchet[0]["optionalOldSelf"] is True
            and ratchet[0]["rule"].startswith("oldSelf.hasValue()")
        )
