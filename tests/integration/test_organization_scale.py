"""Issue 12 at the size of real organizations: 300 member accounts in 20 OUs, through onboarding, exclusions, moves,
failures, a joining account and delete, with the status and the member accounts checked at each step
(tests/support/organization_scenario.py; `python -m bench.organization` runs it for its figures)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.onboarding import account_of, manifest
from tests.support.operator import OperatorProcess, module_operator
from tests.support.organization_scenario import run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "organization-scale-operator") as running:
        yield running


def test_an_organization_of_300_accounts_in_20_ous(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    management = account_of(manifest(namespace))  # a fresh account for the management account
    steps = run(sandbox, operator, kubeconfig, namespace, management, accounts=300, ous=20)
    assert [s["step"] for s in steps] == [
        "onboard",
        "exclude 10",
        "move 20 out",
        "5 fail",
        "1 joins",
        "delete",
    ]
