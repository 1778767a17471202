"""Failure tolerance and concurrency of the member StackSet are settings of the organization, with the defaults the
operator used before (every account attempted, a quarter at a time), and bounded as CloudFormation bounds them."""

import pytest
from pydantic import ValidationError

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.aws.stackset import Targets
from tests.support.manifests import base_manifest


def organization(**settings: int) -> AWSConnectorSpec:
    body = base_manifest()["spec"]
    body["aws"]["organization"] = {"organizationalUnitIds": ["ou-abcd-12345678"], **settings}
    return AWSConnectorSpec.model_validate(body)


def test_defaults_attempt_every_account_a_quarter_at_a_time() -> None:
    org = organization().aws.organization
    assert org is not None
    assert (org.failure_tolerance_percentage, org.max_concurrent_percentage) == (100, 25)


def test_the_settings_reach_every_operation() -> None:
    org = organization(failureTolerancePercentage=10, maxConcurrentPercentage=50).aws.organization
    assert org is not None
    targets = Targets(
        ["ou-abcd-12345678"], [], "us-east-1", org.failure_tolerance_percentage, org.max_concurrent_percentage
    )
    assert targets.preferences() == {"FailureTolerancePercentage": 10, "MaxConcurrentPercentage": 50}


@pytest.mark.parametrize("settings", [{"failureTolerancePercentage": 101}, {"maxConcurrentPercentage": 0}])
def test_out_of_range_settings_are_refused(settings: dict[str, int]) -> None:
    with pytest.raises(ValidationError):
        organization(**settings)
