"""Session fixtures: one real sandbox (kube-apiserver + etcd, moto, ARM emulator) shared by the integration tests.

The sandbox lives in its own state directory, so a developer's own `defender-operator sandbox up` is not touched,
and a crashed earlier test run is cleaned up when the next one starts.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from defender_operator import sandbox as sandbox_module
from defender_operator.handlers.tenancy import sync_effective_policy
from defender_operator.kube import Kube
from defender_operator.sandbox import Sandbox, binaries, processes
from tests.support.kube import api_client, apply, kubectl, settle_admission
from tests.support.operator import logs_of
from tests.support.policies import OPT_OUT


@pytest.fixture(scope="session")
def sandbox_state(worker_id: str) -> Path:
    """One sandbox per pytest-xdist worker (``scripts/test`` runs two), each in its own directory."""
    return binaries.cache_dir() / ("test-sandbox" if worker_id == "master" else f"test-sandbox-{worker_id}")


# The tests' own grant: every namespace may have AWSConnectors use the operator's identity, except namespaces labeled
# to opt out (the tenancy tests' own). The quickstart applies examples/policy.yaml, the narrow one a user would. Every
# namespace carries kubernetes.io/metadata.name (the API server sets it); asking for it keeps a selector made of
# DoesNotExist alone from selecting a namespace that is gone, which has no labels at all: the operator's cleanup of an
# object left in one must not depend on such a selector (test_safety.py, the campaign's seed 67162).
TEST_POLICY = {
    "apiVersion": "defender-operator.io/v1alpha1",
    "kind": "ClusterOnboardingPolicy",
    "metadata": {"name": "sandbox-tests"},
    "spec": {
        "namespaces": {
            "selector": {
                "matchExpressions": [
                    {"key": OPT_OUT, "operator": "DoesNotExist"},
                    {"key": "kubernetes.io/metadata.name", "operator": "Exists"},
                ]
            }
        },
        "aws": {
            "accountIds": ["*"],
            "roleArns": ["arn:aws:iam::*:role/*"],
            "ambientIdentity": True,
            "eksAccessEntries": True,
            "ciemTenantIds": ["*"],
            "organizations": True,
            "memberRoleNames": ["*"],
        },
        "azure": {
            "ambientIdentity": True,
            "tenantIds": ["*"],
            "subscriptionIds": ["*"],
            "resourceGroups": ["*"],
        },
        "adoption": True,
    },
}


@pytest.fixture(scope="session")
def sandbox(sandbox_state: Path) -> Iterator[Sandbox]:
    running = sandbox_module.up(sandbox_state, emulators=True)
    try:
        assert apply(running.control_plane.kubeconfig, TEST_POLICY).returncode == 0
        # What the operator writes when it starts; written here too, for tests that run before any operator.
        sync_effective_policy(Kube(api_client(running.control_plane.kubeconfig)))
        yield running
    finally:
        sandbox_module.down(sandbox_state, keep_logs=logs_of(running))
        assert not [r for r in processes.recorded(sandbox_state) if r.alive()]


@pytest.fixture(scope="session")
def kubeconfig(sandbox: Sandbox) -> Path:
    return sandbox.control_plane.kubeconfig


@pytest.fixture
def namespace(kubeconfig: Path) -> str:
    """A fresh namespace for one test."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl(kubeconfig, "create", "namespace", name, check=True)
    return name


@pytest.fixture(autouse=True)
def admission_enforced(request: pytest.FixtureRequest) -> None:
    """Every test starts on a cluster whose admission policy enforces, even right after a test restarted the API
    server (``tests/support/kube.py: restart_apiserver``), unless it is marked as relying on no admission refusal
    (the randomized schedules, whose judge allows what admission fails to refuse); a no-op otherwise."""
    if request.node.get_closest_marker("admission_may_fail_open") is None:
        settle_admission()
