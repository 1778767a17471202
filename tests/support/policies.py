"""ClusterOnboardingPolicies as a test's cluster admin writes them, and namespaces no other grant reaches."""

import json
import uuid
from pathlib import Path
from typing import Any

from tests.support.kube import apply, kubectl, wait_for

# The label that takes a namespace out of the suite's own policy (tests/conftest.py), so only a test's grants apply
OPT_OUT = "defender-operator.io/tests-without-policy"


def bare_namespace(kubeconfig: Path) -> str:
    """A namespace that the tests' own policy does not select: only what a test grants applies."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {OPT_OUT: "true"}}}
    assert apply(kubeconfig, body).returncode == 0
    return name


def policy_body(
    name: str, namespaces: list[str], account: str, adoption: bool = False, **aws: Any
) -> dict[str, Any]:
    """``namespaces`` may have the operator assume defender-onboarding in ``account`` and use its Azure identity,
    plus the AWS grants given."""
    return {
        "apiVersion": "defender-operator.io/v1alpha1",
        "kind": "ClusterOnboardingPolicy",
        "metadata": {"name": name},
        "spec": {
            "namespaces": {"names": namespaces},
            "aws": {"accountIds": [account], "roleArns": ["arn:aws:iam::*:role/defender-onboarding"], **aws},
            "azure": {"ambientIdentity": True, "tenantIds": ["*"], "subscriptionIds": ["*"]},
            "adoption": adoption,
        },
    }


def grant(kubeconfig: Path, namespaces: list[str], account: str, adoption: bool = False, **aws: Any) -> str:
    """A policy (:func:`policy_body`); returns its name once the admission parameter carries it."""
    name = f"grant-{uuid.uuid4().hex[:6]}"
    assert apply(kubeconfig, policy_body(name, namespaces, account, adoption, **aws)).returncode == 0
    wait_for(
        lambda: name in effective_policies(kubeconfig), 30, f"the operator to fold {name} into the parameter"
    )
    return name


def effective_policies(kubeconfig: Path) -> list[str]:
    """The policies the admission policy's parameter carries, as the operator last folded them."""
    out = kubectl(
        kubeconfig, "get", "effectiveonboardingpolicy", "effective", "-o", "json", check=True
    ).stdout
    return [r["policy"] for r in json.loads(out)["spec"]["rules"]]
