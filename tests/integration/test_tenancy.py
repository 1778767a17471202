"""Tenancy (issue 11): the cluster admin decides who may use the operator's identities, at admission and again in the
operator, on the sandbox's real API server with its ValidatingAdmissionPolicy, the operator as its own process."""

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.api.names import ANNOTATION_DELETION_GRACE
from defender_operator.handlers.tenancy import sync_effective_policy
from defender_operator.kube import Kube
from defender_operator.sandbox import Sandbox
from defender_operator.settings import Settings
from tests.support.clouds import arm_control, arm_requests
from tests.support.kube import api_client, apply, condition, get_object, kubectl, wait_for
from tests.support.onboarding import account_of, connector, manifest, stacks_of
from tests.support.operator import OperatorProcess, events, module_operator, wait_condition, wait_gone
from tests.support.policies import bare_namespace, effective_policies, policy_body

pytestmark = pytest.mark.integration

OTHER_TENANT = "77777777-6666-5555-4444-333333333333"
DEFAULT_TENANT = "99999999-8888-7777-6666-555555555555"


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "tenancy-operator") as running:
        yield running


def grant(kubeconfig: Path, namespace: str, account: str, **azure: Any) -> str:
    """A policy: ``namespace`` may have the operator assume defender-onboarding in ``account``, and use the operator's
    Azure identity; returns its name once the admission parameter carries it."""
    name = f"grant-{uuid.uuid4().hex[:6]}"
    policy = {
        "apiVersion": "defender-operator.io/v1alpha1",
        "kind": "ClusterOnboardingPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaces": {"names": [namespace]},
            "aws": {"accountIds": [account], "roleArns": ["arn:aws:iam::*:role/defender-onboarding"]},
            "azure": {
                "ambientIdentity": True,
                "tenantIds": ["*"],
                "subscriptionIds": ["*"],
                "resourceGroups": ["*"],
                **azure,
            },
        },
    }
    assert apply(kubeconfig, policy).returncode == 0
    wait_for(
        lambda: name in effective_policies(kubeconfig), 30, f"the operator to fold {name} into the parameter"
    )
    return name


def revoke(kubeconfig: Path, name: str) -> None:
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, check=True)
    wait_for(lambda: name not in effective_policies(kubeconfig), 30, f"{name} to leave the parameter")


def nothing_written(sandbox: Sandbox, m: dict[str, Any]) -> bool:
    return stacks_of(sandbox, account_of(m)) == [] and connector(sandbox, m).status_code == 404


def test_without_a_policy_the_operators_identity_is_refused_at_apply(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    assumed = manifest(namespace)  # roleArn, assumed with the operator's identity
    refused = apply(kubeconfig, assumed)
    assert refused.returncode != 0
    assert (
        "spec.aws.credentials" in refused.stderr and "no ClusterOnboardingPolicy selects it" in refused.stderr
    )
    azure_ambient = manifest(namespace, "azure")
    azure_ambient["spec"]["aws"]["credentials"] = {"secretRef": {"name": "aws-keys"}}
    refused = apply(kubeconfig, azure_ambient)
    assert refused.returncode != 0 and "spec.azure.credentialsSecretRef" in refused.stderr


def test_the_admission_parameter_is_folded_again_whenever_it_changes_a_hand_edit_too(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    """The parameter is re-derived from the policies on its own events: on the operator's first listing (a policy
    deleted between start-up's fold and that listing, when it was the last one, has no event of its own: campaign
    seed 14000) and on any edit, so a grant written into it by hand does not last."""
    before = effective_policies(kubeconfig)
    forged = {
        "policy": "forged",
        "namespaces": {"selector": {}},
        "awsAccountIds": ["*"],
        "awsAmbientIdentity": True,
    }
    patch = json.dumps([{"op": "add", "path": "/spec/rules/-", "value": forged}])
    kubectl(
        kubeconfig, "patch", "effectiveonboardingpolicy", "effective", "--type=json", "-p", patch, check=True
    )
    wait_for(lambda: effective_policies(kubeconfig) == before, 30, "the operator to fold the parameter again")


def test_the_admission_parameter_is_rewritten_only_when_a_grant_changes(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    """The operator folds every policy into the admission parameter on each policy event (and on each re-list, every
    five minutes); a fold that finds nothing new writes nothing and wakes nothing. A rule was written with its nulls,
    which the API server drops: for a policy naming its namespaces every fold differed from what was stored, so every
    event rewrote the parameter and woke every blocked cleanup."""
    namespace = bare_namespace(kubeconfig)
    policy = grant(kubeconfig, namespace, "200011119999")  # namespaces by name: no selector
    try:
        assert sync_effective_policy(Kube(api_client(kubeconfig))) is False
    finally:
        revoke(kubeconfig, policy)


def test_the_namespaces_labels_are_listed_in_pages_of_one_snapshot(kubeconfig: Path) -> None:
    """The labels a grant is decided from are also listed afresh (a watch can stall, docs/tenancy.md), page by page
    with the API server's continue tokens: every namespace once, with its labels."""
    names = [f"pages-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for i, name in enumerate(names):
        kubectl(kubeconfig, "create", "namespace", name, check=True)
        kubectl(kubeconfig, "label", "namespace", name, f"page-test={i}", check=True)
    try:
        out = kubectl(kubeconfig, "get", "namespaces", "-o", "json", check=True)
        items = json.loads(out.stdout)["items"]
        expected = {item["metadata"]["name"]: item["metadata"].get("labels") or {} for item in items}
        # an earlier test's namespace may finish terminating between the two reads
        going = {item["metadata"]["name"] for item in items if item["status"].get("phase") == "Terminating"}
        listed = Kube(api_client(kubeconfig)).list_namespace_labels(page_size=2)
        assert len(listed) > 4 and set(listed) ^ set(expected) <= going, (listed, expected)
        assert all(listed[name] == expected[name] for name in set(listed) & set(expected))
        assert all(listed[name]["page-test"] == str(i) for i, name in enumerate(names))
    finally:
        kubectl(kubeconfig, "delete", "namespace", *names, "--wait=false")


def test_a_namespaces_own_secrets_work_without_any_policy(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    kubectl(
        kubeconfig, "create", "secret", "generic", "aws-keys", "-n", namespace,
        "--from-literal=accessKeyId=AKIATENANTOWNKEYS", "--from-literal=secretAccessKey=tenant-own-secret", check=True,
    )  # fmt: skip
    kubectl(
        kubeconfig, "create", "secret", "generic", "azure-app", "-n", namespace,
        "--from-literal=clientId=tenant-app", "--from-literal=clientSecret=sandbox", check=True,
    )  # fmt: skip
    m = manifest(namespace)
    m["spec"]["aws"]["credentials"]["secretRef"] = {
        "name": "aws-keys"
    }  # the role is assumed with the tenant's keys
    m["spec"]["azure"]["credentialsSecretRef"] = {"name": "azure-app"}
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    assert obj["status"]["allowedBy"] == "Default"
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme")


def test_a_policy_grants_its_namespace_its_account_and_nothing_else(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    a, b = bare_namespace(kubeconfig), bare_namespace(kubeconfig)
    x = manifest(a)
    policy = grant(kubeconfig, a, account_of(x))
    try:
        assert apply(kubeconfig, x).returncode == 0
        obj = wait_condition(kubeconfig, a, "acme", "Ready", "True")
        assert obj["status"]["allowedBy"] == policy
        in_b = manifest(b, account=account_of(x))  # namespace B may not onboard X
        in_b["spec"]["azure"]["subscriptionId"] = "22222222-3333-4444-5555-666666666666"
        refused = apply(kubeconfig, in_b)
        assert refused.returncode != 0 and f"namespace {b}" in refused.stderr
        y = manifest(a, "other")  # namespace A may not onboard Y
        refused = apply(kubeconfig, y)
        assert refused.returncode != 0 and "aws.accountIds" in refused.stderr
        kubectl(kubeconfig, "delete", "awsc", "-n", a, "acme", "--wait=false", check=True)
        wait_gone(kubeconfig, a, "acme")
    finally:
        revoke(kubeconfig, policy)


def test_managing_eks_access_entries_needs_its_own_grant_at_apply(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """eksAccessEntries Manage with the operator's identity gives Defender cluster-admin in the account's EKS
    clusters: a policy that grants the account but not aws.eksAccessEntries refuses it at apply, naming the field."""
    a = bare_namespace(kubeconfig)
    m = manifest(a)
    policy = grant(kubeconfig, a, account_of(m))
    try:
        m["spec"]["aws"]["eksAccessEntries"] = "Manage"
        refused = apply(kubeconfig, m)
        assert refused.returncode != 0 and "aws.eksAccessEntries" in refused.stderr, refused.stderr
        assert nothing_written(sandbox, m)
        m["spec"]["aws"]["eksAccessEntries"] = "Report"
        assert apply(kubeconfig, m).returncode == 0
        wait_condition(kubeconfig, a, "acme", "Ready", "True")
        kubectl(kubeconfig, "delete", "awsc", "-n", a, "acme", "--wait=false", check=True)
        wait_gone(kubeconfig, a, "acme")
    finally:
        revoke(kubeconfig, policy)


def test_a_delegated_administrator_account_needs_its_own_grant_at_apply(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    """Issue 28, build 4: an organization run from a delegated administrator account has the operator sign in
    there; a policy that grants the management account (and organizations) but not that account refuses it at
    apply, naming the field."""
    a = bare_namespace(kubeconfig)
    m = manifest(a)
    delegate = "210987654321"
    m["spec"]["aws"]["organization"] = {"delegatedAdministratorAccountId": delegate}
    m["spec"]["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{delegate}:role/defender-onboarding"}
    policy = f"grant-{uuid.uuid4().hex[:6]}"
    body = policy_body(policy, [a], account_of(m), organizations=True)
    assert apply(kubeconfig, body).returncode == 0
    try:
        wait_for(lambda: policy in effective_policies(kubeconfig), 30, f"the operator to fold {policy}")
        refused = apply(kubeconfig, m, "--dry-run=server")
        assert refused.returncode != 0 and "delegatedAdministratorAccountId" in refused.stderr, refused.stderr
        body["spec"]["aws"]["accountIds"].append(delegate)
        assert apply(kubeconfig, body).returncode == 0
        wait_for(
            lambda: apply(kubeconfig, m, "--dry-run=server").returncode == 0,
            30,
            "the delegate's grant to apply",
        )
    finally:
        revoke(kubeconfig, policy)


def test_an_object_admitted_before_its_policy_was_revoked_is_stalled_and_writes_nothing(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    m = manifest(namespace)
    m["metadata"]["annotations"] = {"defender-operator.io/paused": "true"}
    policy = grant(kubeconfig, namespace, account_of(m))
    assert apply(kubeconfig, m).returncode == 0  # admitted while the policy allowed it
    revoke(kubeconfig, policy)
    operator.reset_aws_operations()
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")
    kubectl(
        kubeconfig, "annotate", "awsc", "-n", namespace, "acme", "defender-operator.io/paused-", check=True
    )
    obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="NotAllowedByPolicy")
    message = condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert (
        "spec.aws.credentials.roleArn" in message
        and "no ClusterOnboardingPolicy selects namespace" in message
    )
    assert [r for r in arm_requests(sandbox) if f"rg-{namespace}" in r["path"]] == []
    assert nothing_written(sandbox, m) and "firstCloudWrite" not in obj["status"]
    assert "allowedBy" not in obj["status"]
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme", timeout=45)


def test_a_subscription_of_another_tenant_is_never_written(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    m = manifest(namespace)
    m["spec"]["azure"]["tenantId"] = OTHER_TENANT  # the subscription is in the sandbox tenant, not this one
    policy = grant(kubeconfig, namespace, account_of(m))
    try:
        assert apply(kubeconfig, m).returncode == 0
        obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="AzureTenantMismatch")
        message = condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert f"not spec.azure.tenantId {OTHER_TENANT}" in message
        assert connector(sandbox, m).status_code == 404
        # The subscription moves to that tenant: now the operator's own token is of the wrong tenant, and ARM says so.
        arm_control(sandbox, "/_sandbox/subscriptions", {m["spec"]["azure"]["subscriptionId"]: OTHER_TENANT})
        try:
            kubectl(
                kubeconfig, "annotate", "awsc", "-n", namespace, "acme", "--overwrite",
                f"defender-operator.io/reconcile-requested-at={uuid.uuid4()}", check=True,
            )  # fmt: skip
            wait_for(
                lambda: (
                    "InvalidAuthenticationTokenTenant"
                    in (condition(get_object(kubeconfig, namespace, "acme"), "Stalled") or {}).get(
                        "message", ""
                    )
                ),
                30,
                "ARM's refusal of a token of another tenant",
            )
        finally:
            arm_control(
                sandbox, "/_sandbox/subscriptions", {m["spec"]["azure"]["subscriptionId"]: DEFAULT_TENANT}
            )
        assert connector(sandbox, m).status_code == 404
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
        wait_gone(kubeconfig, namespace, "acme", timeout=60)
        assert stacks_of(sandbox, account_of(m)) == []
    finally:
        revoke(kubeconfig, policy)


# --- a policy Helm replaces (docs/tenancy.md) ----------------------------------------------------------------------
# A deleted ClusterOnboardingPolicy annotated deletion-grace keeps granting for policy_grace_seconds unless a policy of
# its name comes back: Helm replaces the chart's onboardingPolicies (hooks with before-hook-creation, annotated so) by
# deleting and creating them on every upgrade, which took every grant away for a moment (each object covered
# Stalled NotAllowedByPolicy and back, a create in that moment refused). Any other deletion still revokes at once.

GRACE = float(Settings.model_fields["policy_grace_seconds"].default)


def as_the_chart_makes_it(kubeconfig: Path, name: str, *accounts: str) -> dict[str, Any]:
    """The policy ``name`` as the chart renders one: a hook Helm replaces on upgrade, annotated deletion-grace."""
    live = json.loads(
        kubectl(kubeconfig, "get", "clusteronboardingpolicy", name, "-o", "json", check=True).stdout
    )
    spec = live["spec"]
    spec["aws"]["accountIds"] = list(accounts)
    annotations = {
        "helm.sh/hook": "post-install,post-upgrade",
        "helm.sh/hook-delete-policy": "before-hook-creation",
        ANNOTATION_DELETION_GRACE: "true",
    }
    return {
        "apiVersion": live["apiVersion"],
        "kind": live["kind"],
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }


def ready_since(kubeconfig: Path, namespace: str, name: str) -> str:
    obj = wait_condition(kubeconfig, namespace, name, "Ready", "True", timeout=120)
    return str(condition(obj, "Ready")["lastTransitionTime"])  # type: ignore[index]


def delete_all(kubeconfig: Path, namespace: str, *names: str) -> None:
    for each in names:
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, each, "--wait=false", check=True)
    for each in names:
        wait_gone(kubeconfig, namespace, each, timeout=120)


def test_a_policy_replaced_as_helm_upgrades_it_neither_stalls_its_objects_nor_refuses_creates(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    first, second = manifest(namespace, "first"), manifest(namespace, "second")
    name = grant(kubeconfig, namespace, account_of(first))
    body = as_the_chart_makes_it(kubeconfig, name, account_of(first), account_of(second))
    assert apply(kubeconfig, body).returncode == 0
    assert apply(kubeconfig, first).returncode == 0
    since = ready_since(kubeconfig, namespace, "first")

    # what Helm does to the hook on upgrade: delete it, then create it again
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, check=True)
    made = apply(kubeconfig, second)  # a create in that moment
    assert made.returncode == 0, made.stderr
    assert apply(kubeconfig, body).returncode == 0

    ready_since(kubeconfig, namespace, "second")
    assert ready_since(kubeconfig, namespace, "first") == since
    for each in ("first", "second"):
        reasons = [e["reason"] for e in events(kubeconfig, namespace, each)]
        assert "NotAllowedByPolicy" not in reasons, (each, reasons)
    delete_all(kubeconfig, namespace, "first", "second")
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, check=True)


def test_a_hand_made_policy_revokes_at_once_and_a_replaced_one_once_its_grace_is_over(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    by_hand, by_chart = bare_namespace(kubeconfig), bare_namespace(kubeconfig)
    hand, chart = manifest(by_hand), manifest(by_chart)
    hand_policy = grant(kubeconfig, by_hand, account_of(hand))
    chart_policy = grant(kubeconfig, by_chart, account_of(chart))
    assert (
        apply(kubeconfig, as_the_chart_makes_it(kubeconfig, chart_policy, account_of(chart))).returncode == 0
    )
    for namespace, m in ((by_hand, hand), (by_chart, chart)):
        assert apply(kubeconfig, m).returncode == 0
        ready_since(kubeconfig, namespace, "acme")

    deleted = time.monotonic()
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", hand_policy, chart_policy, check=True)
    stalled = wait_condition(  # at once: before a grace would be over
        kubeconfig, by_hand, "acme", "Stalled", "True", reason="NotAllowedByPolicy", timeout=GRACE - 1
    )
    assert "no ClusterOnboardingPolicy selects namespace" in condition(stalled, "Stalled")["message"]  # type: ignore[index]
    wait_condition(
        kubeconfig, by_chart, "acme", "Stalled", "True", reason="NotAllowedByPolicy", timeout=GRACE + 60
    )
    assert time.monotonic() - deleted >= GRACE - 1, (
        "the replaced policy's grants ended before its grace was over"
    )
    wait_for(lambda: chart_policy not in effective_policies(kubeconfig), 30, "the parameter to lose it")
    refused = apply(kubeconfig, manifest(by_chart, "late", account=account_of(chart)))
    assert refused.returncode != 0 and "no ClusterOnboardingPolicy selects it" in refused.stderr

    # the grants given back (under other names), the objects are let go as usual
    again = [grant(kubeconfig, ns, account_of(m)) for ns, m in ((by_hand, hand), (by_chart, chart))]
    for namespace in (by_hand, by_chart):
        ready_since(kubeconfig, namespace, "acme")
        delete_all(kubeconfig, namespace, "acme")
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", *again, check=True)
