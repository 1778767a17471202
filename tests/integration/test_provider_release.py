"""Two objects that release one identity provider at the same moment (issue 25, low): each used to see the other as
a user and leave, so nothing was ever removed. The adapter, against the sandbox's AWS emulator; the second release is
run exactly between the first one's look and its own untagging (through the hand-over hook, which runs there)."""

import pytest

from defender_operator.aws.oidc import OidcProviders, ProviderSpec
from defender_operator.ownership import Owner
from defender_operator.sandbox import Sandbox
from tests.support.onboarding import MS_PROVIDER, aws_in

pytestmark = pytest.mark.integration

AUDIENCES = ["api://AzureSecurityCenter.MultiCloud.DefenderForServers"]


def test_two_objects_releasing_at_once_leave_nothing_behind(sandbox: Sandbox) -> None:
    account = "300099990001"
    iam = aws_in(sandbox, account, "iam")
    providers = OidcProviders(iam, "aws", account)
    spec = ProviderSpec(host=MS_PROVIDER, audiences=AUDIENCES, thumbprints=["0" * 40])
    a, b = Owner("cluster-x", "team", "a", "uid-a"), Owner("cluster-x", "team", "b", "uid-b")
    providers.ensure(spec, a, first=True)
    providers.ensure(spec, b)
    arn = spec.arn("aws", account)
    released: list[str | None] = []

    def b_releases_meanwhile(resource: str, refs: list[str]) -> None:
        released.append(
            providers.release(
                arn, b, made=lambda observed: False, shared=[], defender_audiences=AUDIENCES, hand_over=None
            )
        )

    outcome = providers.release(
        arn,
        a,
        made=lambda observed: True,  # a made it, by the record
        shared=[],
        defender_audiences=AUDIENCES,
        hand_over=b_releases_meanwhile,
    )
    assert released and released[0] is not None and "left identity provider" in released[0]
    assert outcome == f"deleted identity provider {arn}"
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
