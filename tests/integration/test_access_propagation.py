"""Access given at the same time as the AWSConnector: IAM (and Entra ID) changes reach every endpoint seconds later, so
the first pass is refused; the operator looks again soon rather than after resyncSeconds (reconcile/engine.py:
stalled_requeue). The AWS emulator refuses a role younger than iamPropagationSeconds, as STS does
(sandbox/aws/propagation.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.account_admin import ensure_role
from tests.support.clouds import aws_control
from tests.support.kube import apply
from tests.support.onboarding import account_of, aws_in, delete, manifest
from tests.support.operator import OperatorProcess, module_operator, wait_condition

pytestmark = pytest.mark.integration

RESYNC_SECONDS = 300  # the chart's default: a refusal looked at again only this late would fail the test
UNPROPAGATED_SECONDS = 3600  # the role stays refused until the test says IAM has propagated it


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    env = {
        "DEFENDER_OPERATOR_RESYNC_SECONDS": str(RESYNC_SECONDS),
        "DEFENDER_OPERATOR_IN_PROGRESS_SECONDS": "2",
    }
    with module_operator(sandbox, tmp_path_factory, "propagation-operator", extra_env=env) as running:
        yield running


def test_an_onboarding_role_made_with_the_object_is_used_as_soon_as_iam_has_propagated_it(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace, "fresh-role")
    iam = aws_in(sandbox, account_of(m), "iam")
    aws_control(sandbox, "/_sandbox/config", {"iamPropagationSeconds": UNPROPAGATED_SECONDS})
    try:
        ensure_role(
            iam, "defender-onboarding"
        )  # infrastructure as code makes the role and the object together
        assert apply(kubeconfig, m).returncode == 0
        wait_condition(kubeconfig, namespace, "fresh-role", "Stalled", "True", reason="AWSAccessDenied")
    finally:
        aws_control(sandbox, "/_sandbox/config", {"iamPropagationSeconds": 0})  # IAM has propagated the role
    # looked at again after as long as it has been refused (at least inProgressSeconds, 2 s): Ready within seconds
    # of the propagation, not after resyncSeconds (300 s)
    wait_condition(kubeconfig, namespace, "fresh-role", "Ready", "True", timeout=RESYNC_SECONDS / 3)
    delete(kubeconfig, namespace, "fresh-role")
