"""Session fixtures: one real sandbox (kube-apiserver + etcd, moto, ARM emulator) shared by the integration tests.

The sandbox lives in its own state directory, so a developer's own `defender-operator sandbox up` is not touched,
and a crashed earlier test run is cleaned up when the next one starts.
"""

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from defender_operator import sandbox as sandbox_module
from defender_operator.sandbox import Sandbox, binaries, processes
from tests.support.kube import kubectl


@pytest.fixture(scope="session")
def sandbox_state() -> Path:
    return binaries.cache_dir() / "test-sandbox"


@pytest.fixture(scope="session")
def sandbox(sandbox_state: Path) -> Iterator[Sandbox]:
    running = sandbox_module.up(sandbox_state, emulators=True)
    try:
        yield running
    finally:
        sandbox_module.down(sandbox_state, keep_logs=sandbox_state.with_name("test-sandbox-logs"))
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
