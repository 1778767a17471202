"""A deleted ClusterOnboardingPolicy annotated ``defender-operator.io/deletion-grace: "true"`` keeps granting for
``policy_grace_seconds`` unless a policy of its name comes back (docs/tenancy.md). Helm replaces the chart's
``onboardingPolicies`` (hooks with ``before-hook-creation``, annotated so) by deleting and creating them on every
upgrade, which took every grant away for a moment: each object covered went ``Stalled NotAllowedByPolicy`` and back,
and a create in that moment was refused. Any other deletion still revokes at once. On the sandbox's API server with
its admission policy, the operator as its own process."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.api.names import ANNOTATION_DELETION_GRACE
from defender_operator.sandbox import Sandbox
from tests.support.kube import apply, condition, kubectl, wait_for
from tests.support.onboarding import account_of, manifest
from tests.support.operator import OperatorProcess, events, module_operator, wait_condition, wait_gone
from tests.support.policies import bare_namespace, effective_policies, grant, policy_body

pytestmark = pytest.mark.integration

GRACE = 20.0


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # A long resync: what a test sees must come from the policies' events, not from a periodic pass.
    env = {"DEFENDER_OPERATOR_POLICY_GRACE_SECONDS": str(GRACE), "DEFENDER_OPERATOR_RESYNC_SECONDS": "300"}
    with module_operator(sandbox, tmp_path_factory, "policy-grace-operator", extra_env=env) as running:
        yield running


def as_the_chart_makes_it(name: str, namespace: str, *accounts: str) -> dict[str, Any]:
    body = policy_body(name, [namespace], accounts[0])
    body["spec"]["aws"]["accountIds"] = list(accounts)
    body["metadata"]["annotations"] = {
        "helm.sh/hook": "post-install,post-upgrade",
        "helm.sh/hook-delete-policy": "before-hook-creation",
        ANNOTATION_DELETION_GRACE: "true",
    }
    return body


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
    name = grant(kubeconfig, [namespace], account_of(first))
    body = as_the_chart_makes_it(name, namespace, account_of(first), account_of(second))
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
    hand_policy = grant(kubeconfig, [by_hand], account_of(hand))
    chart_policy = grant(kubeconfig, [by_chart], account_of(chart))
    assert apply(kubeconfig, as_the_chart_makes_it(chart_policy, by_chart, account_of(chart))).returncode == 0
    for namespace, m in ((by_hand, hand), (by_chart, chart)):
        assert apply(kubeconfig, m).returncode == 0
        ready_since(kubeconfig, namespace, "acme")

    deleted = time.monotonic()
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", hand_policy, chart_policy, check=True)
    stalled = wait_condition(  # at once: well before a grace would be over
        kubeconfig, by_hand, "acme", "Stalled", "True", reason="NotAllowedByPolicy", timeout=GRACE - 5
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
    again = [grant(kubeconfig, [ns], account_of(m)) for ns, m in ((by_hand, hand), (by_chart, chart))]
    for namespace in (by_hand, by_chart):
        ready_since(kubeconfig, namespace, "acme")
        delete_all(kubeconfig, namespace, "acme")
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", *again, check=True)
