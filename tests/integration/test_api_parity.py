"""Every AWSConnector the API server accepts, the operator accepts (issue 25): specs generated from the CRD's own
OpenAPI schema (``specs`` below: hypothesis strategies read off the schema), sent to the sandbox's real API server as a server-side dry run (OpenAPI
validation, defaults and every CEL rule), and parsed by the operator's models. A spec the API server stores and the
operator cannot read is an object that can be neither reconciled nor, until issue 25, deleted; so the verdicts must
agree, both ways."""

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from defender_operator.api.crd import custom_resource_definition
from defender_operator.api.names import GROUP, KIND, PLURAL, VERSION
from defender_operator.api.schema import NEW
from defender_operator.api.spec import AWSConnectorSpec
from tests.support.kube import api_client, kubectl

pytestmark = pytest.mark.integration


def mostly(good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``good`` 19 times in 20: a spec has dozens of fields, and one bad value in each would leave nothing for the
    API server to accept."""
    return st.integers(min_value=0, max_value=19).flatmap(lambda i: bad if i == 19 else good)


def specs(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a structural schema's shape: what it declares, each optional field present or not, strings of its
    patterns and lengths, numbers in and around its bounds, enums, lists and maps of a few. The CRD's CEL rules are
    not generated for: they are what the API server adds, and the verdicts are compared."""
    kind = schema.get("type")
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if kind == "object" and "properties" in schema:
        required = set(schema.get("required", []))
        fields = {name: specs(sub) for name, sub in schema["properties"].items()}
        return st.fixed_dictionaries(
            {name: fields[name] for name in sorted(required)},
            optional={name: strategy for name, strategy in fields.items() if name not in required},
        )
    if kind == "object":  # a map (tags): keys of any length, near the limits too
        values = specs(schema.get("additionalProperties") or {"type": "string"})
        keys = mostly(st.text(min_size=1, max_size=8), st.text(min_size=120, max_size=140))
        return st.dictionaries(keys, values, max_size=3)
    if kind == "array":
        return st.lists(specs(schema.get("items") or {"type": "string"}), max_size=3, unique_by=repr)
    if kind == "integer":
        low, high = schema.get("minimum", -5), schema.get("maximum", 200)
        return mostly(st.integers(min_value=low, max_value=high), st.sampled_from([low - 1, high + 1]))
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        pattern, longest = schema.get("pattern"), schema.get("maxLength", 40)
        if pattern:
            matching = st.from_regex(pattern, fullmatch=True).filter(lambda v: len(v) <= longest + 2)
            return mostly(matching, st.text(max_size=8))
        shortest = schema.get("minLength", 0)
        return mostly(
            st.text(min_size=shortest, max_size=min(longest, 60)),
            st.text(min_size=longest, max_size=longest + 2),
        )
    return st.none()


SPEC_SCHEMA = custom_resource_definition()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"][
    "spec"
]


@pytest.fixture(scope="module")
def parity_namespace(kubeconfig: Path) -> str:
    name = f"parity-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", name, check=True)
    return name


def server_verdict(api: client.CustomObjectsApi, namespace: str, spec: dict[str, Any]) -> tuple[bool, Any]:
    """(accepted, the stored spec with defaults | the refusal) of a dry-run create; the operator's own identity
    (Secrets only, so the tenancy admission policy has nothing to refuse: only the CRD's validation decides)."""
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {"name": f"p-{uuid.uuid4().hex[:8]}", "namespace": namespace},
        "spec": spec,
    }
    try:
        stored = api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, dry_run="All")
    except ApiException as exc:
        if exc.status in (400, 422):
            return False, exc.body
        raise
    return True, stored["spec"]


def parser_verdict(spec: dict[str, Any]) -> tuple[bool, str]:
    """The operator's verdict on a new object (the dry run is a create: rules ratcheted for stored objects apply)."""
    try:
        AWSConnectorSpec.model_validate(spec, context=NEW)
    except ValidationError as exc:
        return False, str(exc)
    return True, ""


def own_secrets(spec: dict[str, Any]) -> dict[str, Any]:
    """Credentials from Secrets on both sides: allowed by default, so only validation decides."""
    spec = copy.deepcopy(spec)
    if isinstance(spec.get("aws"), dict):
        credentials = spec["aws"].setdefault("credentials", {})
        if isinstance(credentials, dict):
            credentials["secretRef"] = {"name": "aws-keys"}
    if isinstance(spec.get("azure"), dict):
        spec["azure"]["credentialsSecretRef"] = {"name": "azure-app"}
    return spec


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,  # the same examples in every run: a failure reproduces, and CI does not flake
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,
    ],
)
@given(data=st.data())
def test_the_api_server_and_the_operator_agree_on_every_generated_spec(
    kubeconfig: Path, parity_namespace: str, data: st.DataObject
) -> None:
    spec = own_secrets(data.draw(specs(SPEC_SCHEMA), label="spec"))
    api = client.CustomObjectsApi(api_client(kubeconfig))
    accepted, stored = server_verdict(api, parity_namespace, spec)
    event("the API server accepts" if accepted else "the API server refuses")
    if accepted:
        ok, why = parser_verdict(stored)
        assert ok, f"the API server stored a spec the operator cannot read: {why}\nspec: {stored}"
    else:
        ok, _ = parser_verdict(spec)
        assert not ok, f"the operator accepts a spec the API server refuses: {stored}\nspec: {spec}"
