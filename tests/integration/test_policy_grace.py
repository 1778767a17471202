"""A deleted ClusterOnboardingPolicy keeps granting for ``policy_grace_seconds`` unless a policy of its name comes
back (docs/tenancy.md): Helm replaces the chart's ``onboardingPolicies`` (hooks with ``before-hook-creation``) by
deleting and creating them on every upgrade, which took every grant away for a moment: each object covered went
``Stalled NotAllowedByPolicy`` and back, and a create in that moment was refused. On the sandbox's API server with
its admission policy, the operator as its own process."""

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.kube import apply, condition, kubectl, wait_for
from tests.support.onboarding import account_of, manifest
from tests.support.operator import OperatorProcess, events, module_operator, wait_condition, wait_gone
from tests.support.policies import bare_namespace, effective_policies, grant, policy_body

pytestmark = pytest.mark.integration

GRACE = 15.0


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    # A long resync: what a test sees must come from the policy's events, not from a periodic pass.
    env = {"DEFENDER_OPERATOR_POLICY_GRACE_SECONDS": str(GRACE), "DEFENDER_OPERATOR_RESYNC_SECONDS": "300"}
    with module_operator(sandbox, tmp_path_factory, "policy-grace-operator", extra_env=env) as running:
        yield running


def ready_since(kubeconfig: Path, namespace: str, name: str) -> str:
    obj = wait_condition(kubeconfig, namespace, name, "Ready", "True", timeout=120)
    return str(condition(obj, "Ready")["lastTransitionTime"])  # type: ignore[index]


def test_a_policy_replaced_as_helm_upgrades_it_neither_stalls_its_objects_nor_refuses_creates(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    first, second = manifest(namespace, "first"), manifest(namespace, "second")
    name = grant(kubeconfig, [namespace], account_of(first))
    body = policy_body(name, [namespace], account_of(first))
    body["spec"]["aws"]["accountIds"] = [account_of(first), account_of(second)]
    assert apply(kubeconfig, body).returncode == 0
    assert apply(kubeconfig, first).returncode == 0
    since = ready_since(kubeconfig, namespace, "first")

    # what Helm does to a hook on upgrade: delete it, then create it again
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, check=True)
    made = apply(kubeconfig, second)  # a create in that moment
    assert made.returncode == 0, made.stderr
    assert apply(kubeconfig, body).returncode == 0

    ready_since(kubeconfig, namespace, "second")
    assert ready_since(kubeconfig, namespace, "first") == since
    for each in ("first", "second"):
        reasons = [e["reason"] for e in events(kubeconfig, namespace, each)]
        assert "NotAllowedByPolicy" not in reasons, (each, reasons)
    for each in ("first", "second"):
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, each, "--wait=false", check=True)
    for each in ("first", "second"):
        wait_gone(kubeconfig, namespace, each, timeout=120)
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, check=True)


def test_a_deleted_policy_that_does_not_come_back_grants_nothing_once_its_grace_is_over(
    kubeconfig: Path, operator: OperatorProcess
) -> None:
    namespace = bare_namespace(kubeconfig)
    m = manifest(namespace)
    name = grant(kubeconfig, [namespace], account_of(m))
    assert apply(kubeconfig, m).returncode == 0
    ready_since(kubeconfig, namespace, "acme")

    deleted = time.monotonic()
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", name, check=True)
    obj = wait_condition(
        kubeconfig, namespace, "acme", "Stalled", "True", reason="NotAllowedByPolicy", timeout=GRACE + 60
    )
    assert time.monotonic() - deleted >= GRACE - 1, "the grants ended before the grace was over"
    assert "no ClusterOnboardingPolicy selects namespace" in condition(obj, "Stalled")["message"]  # type: ignore[index]
    wait_for(lambda: name not in effective_policies(kubeconfig), 30, f"{name} to leave the parameter")
    refused = apply(kubeconfig, manifest(namespace, "late", account=account_of(m)))
    assert refused.returncode != 0 and "no ClusterOnboardingPolicy selects it" in refused.stderr

    # the grant given back (under another name), the object is let go as usual
    again = grant(kubeconfig, [namespace], account_of(m))
    ready_since(kubeconfig, namespace, "acme")
    kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "acme", "--wait=false", check=True)
    wait_gone(kubeconfig, namespace, "acme", timeout=120)
    kubectl(kubeconfig, "delete", "clusteronboardingpolicy", again, check=True)
