"""The CRD on a real kube-apiserver: installation, validation at `kubectl apply`, printer columns, explain, status."""

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from defender_operator.api.names import GROUP, PLURAL, VERSION
from defender_operator.sandbox import Sandbox, binaries
from tests.support.gitops import kstatus
from tests.support.kube import api_client, apply, kubectl
from tests.support.manifests import BAD_CASES, BadCase, base_manifest
from tests.support.paths import EXAMPLES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def namespace(kubeconfig: Path) -> Iterator[str]:
    name = f"validation-{uuid.uuid4().hex[:6]}"
    kubectl(kubeconfig, "create", "namespace", name, check=True)
    kubectl(kubeconfig, "create", "namespace", "security")  # the examples' namespace (may exist already)
    yield name
    # No operator runs in this module: the objects it leaves would be onboarded by the next module's operator.
    for space in (name, "security"):
        kubectl(kubeconfig, "delete", "awsconnectors", "--all", "-n", space, "--wait=false")


def test_version_is_the_pinned_kubernetes(kubeconfig: Path) -> None:
    version = json.loads(kubectl(kubeconfig, "get", "--raw", "/version", check=True).stdout)
    assert version["gitVersion"] == binaries.KUBERNETES_VERSION


def test_crd_is_established(kubeconfig: Path) -> None:
    crd = json.loads(kubectl(kubeconfig, "get", "crd", f"{PLURAL}.{GROUP}", "-o", "json", check=True).stdout)
    established = [c for c in crd["status"]["conditions"] if c["type"] == "Established"]
    assert established and established[0]["status"] == "True"


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_is_accepted(kubeconfig: Path, namespace: str, path: Path) -> None:
    result = kubectl(kubeconfig, "apply", "--dry-run=server", "-f", str(path))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case", [c for c in BAD_CASES if not c.on_update], ids=lambda c: c.id)
def test_bad_manifest_is_rejected_naming_the_field(kubeconfig: Path, namespace: str, case: BadCase) -> None:
    manifest = case.apply(base_manifest(f"bad-{case.id}", namespace))
    result = apply(kubeconfig, manifest, "--dry-run=server")
    assert result.returncode != 0, f"accepted: {case.id}"
    assert case.field in result.stderr, result.stderr


@pytest.mark.parametrize("case", [c for c in BAD_CASES if c.on_update], ids=lambda c: c.id)
def test_change_of_immutable_field_is_rejected(kubeconfig: Path, namespace: str, case: BadCase) -> None:
    original = base_manifest(f"immutable-{case.id}", namespace)
    assert apply(kubeconfig, original).returncode == 0
    result = apply(kubeconfig, case.apply(original))
    assert result.returncode != 0, f"accepted: {case.id}"
    assert case.field in result.stderr and "immutable" in result.stderr, result.stderr


def test_the_delegated_administrator_can_be_neither_changed_added_nor_taken_away(
    kubeconfig: Path, namespace: str
) -> None:
    """Issue 28, build 4: the account the operator signs in to for an organization is fixed at creation (it decides
    whose credentials made the StackSet and whether the management account's stack is the operator's), whatever a
    namespace's user applies later, also while the object is being deleted."""
    delegated = base_manifest("delegated", namespace)
    delegated["spec"]["aws"]["organization"] = {"delegatedAdministratorAccountId": "210987654321"}
    plain = base_manifest("plain-org", namespace)
    plain["spec"]["aws"]["organization"] = {}
    for original in (delegated, plain):
        assert apply(kubeconfig, original).returncode == 0
    changed, removed, added = copy.deepcopy(delegated), copy.deepcopy(delegated), copy.deepcopy(plain)
    changed["spec"]["aws"]["organization"]["delegatedAdministratorAccountId"] = "999988887777"
    del removed["spec"]["aws"]["organization"]["delegatedAdministratorAccountId"]
    added["spec"]["aws"]["organization"]["delegatedAdministratorAccountId"] = "210987654321"
    for attempt in (changed, removed, added):
        result = apply(kubeconfig, attempt)
        assert result.returncode != 0 and "delegatedAdministratorAccountId is immutable" in result.stderr, (
            result.stderr
        )
    kubectl(kubeconfig, "patch", "awsc", "-n", namespace, "delegated", "--type=merge", "-p",
            json.dumps({"metadata": {"finalizers": ["test.defender-operator.io/hold"]}}), check=True)  # fmt: skip
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "delegated", "--wait=false", check=True)
    try:
        result = apply(kubeconfig, changed)
        assert result.returncode != 0 and "delegatedAdministratorAccountId is immutable" in result.stderr
    finally:
        kubectl(kubeconfig, "patch", "awsc", "-n", namespace, "delegated", "--type=merge", "-p",
                json.dumps({"metadata": {"finalizers": None}}), check=True)  # fmt: skip


def test_defaults_are_filled_by_the_api_server(kubeconfig: Path, namespace: str) -> None:
    created = json.loads(
        apply(kubeconfig, base_manifest("defaults", namespace), "--dry-run=server", "-o", "json").stdout
    )
    spec = created["spec"]
    assert spec["scanIntervalHours"] == 4
    assert spec["plans"]["servers"] == {
        "enabled": True,
        "subPlan": "P2",
        "arcAutoProvisioning": {"enabled": True},
        "defenderForEndpoint": {"enabled": True},
        "vulnerabilityAssessment": {"enabled": True, "provider": "TVM"},
        "agentlessScanning": {},
    }
    assert spec["plans"]["cspm"]["enabled"] is False


def test_printer_columns(kubeconfig: Path, namespace: str) -> None:
    assert apply(kubeconfig, base_manifest("columns", namespace)).returncode == 0
    out = kubectl(kubeconfig, "get", "awsc", "-n", namespace, "columns", check=True).stdout
    assert out.split("\n")[0].split() == [
        "NAME",
        "ACCOUNT",
        "INTERVAL",
        "PLANS",
        "READY",
        "REASON",
        "MEMBERS",
        "AGE",
    ]
    assert "111122223333" in out
    wide = kubectl(
        kubeconfig, "get", "awsconnectors", "-n", namespace, "columns", "-o", "wide", check=True
    ).stdout
    assert {"CONNECTOR", "STACK"} <= set(wide.split("\n")[0].split())


def test_an_object_nobody_has_looked_at_is_in_progress_for_kstatus(kubeconfig: Path, namespace: str) -> None:
    """No operator runs here: the object as the API server returns it is InProgress for kstatus (and Flux), not
    Current, thanks to the CRD's status default."""
    assert apply(kubeconfig, base_manifest("unobserved", namespace)).returncode == 0
    obj = json.loads(
        kubectl(kubeconfig, "get", "awsc", "-n", namespace, "unobserved", "-o", "json", check=True).stdout
    )
    assert obj["status"] == {"observedGeneration": 0}
    assert kstatus([obj]) == ["InProgress"]


def test_explain_teaches_the_fields(kubeconfig: Path) -> None:
    out = kubectl(kubeconfig, "explain", "awsconnector.spec.plans.servers", check=True).stdout
    assert "Defender for Servers" in out
    assert "agentlessScanning" in out and "Plan 2" in out


def test_status_is_writable_only_through_the_status_subresource(
    sandbox: Sandbox, kubeconfig: Path, namespace: str
) -> None:
    assert apply(kubeconfig, base_manifest("status", namespace)).returncode == 0
    api = client.CustomObjectsApi(api_client(kubeconfig))
    status = {"status": {"plans": "CSPM", "observedGeneration": 1}}
    api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "status", status)
    untouched = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "status")
    assert untouched["status"] == {
        "observedGeneration": 0
    }  # only the default: the patch's status was ignored
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "status", status)
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "status")
    assert obj["status"]["plans"] == "CSPM"
    spec_change = {"spec": {"scanIntervalHours": 24}, "status": {"plans": "changed"}}
    api.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, PLURAL, "status", spec_change)
    obj = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "status")
    assert obj["spec"].get("scanIntervalHours") == 4 and obj["status"]["plans"] == "changed"


def test_a_restricted_user_is_refused(sandbox: Sandbox, namespace: str) -> None:
    viewer = sandbox.control_plane.issue_user("jane", ["developers"])
    api = client.CustomObjectsApi(api_client(viewer))
    with pytest.raises(ApiException) as info:
        api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert info.value.status == 403


def test_member_provider_role_is_set_at_creation_or_never(kubeconfig: Path, namespace: str) -> None:
    """Adding the role later would make the member template drop the providers CloudFormation made (deleting them);
    changing or removing it would lose the way to release what was added: the API server refuses all three."""
    without = base_manifest("member-role", namespace)
    without["spec"]["aws"]["organization"] = {}
    assert apply(kubeconfig, without).returncode == 0
    added = copy.deepcopy(without)
    added["spec"]["aws"]["organization"]["memberProviderRoleName"] = "OrganizationAccountAccessRole"
    refused(apply(kubeconfig, added))
    created = copy.deepcopy(added)
    created["metadata"]["name"] = "member-role-set"
    assert apply(kubeconfig, created).returncode == 0
    changed = copy.deepcopy(created)
    changed["spec"]["aws"]["organization"]["memberProviderRoleName"] = "AWSControlTowerExecution"
    removed = copy.deepcopy(created)
    del removed["spec"]["aws"]["organization"]["memberProviderRoleName"]
    for attempt in (changed, removed):
        refused(apply(kubeconfig, attempt))


def refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode != 0, "accepted"
    assert "spec.aws.organization.memberProviderRoleName" in result.stderr and "immutable" in result.stderr
