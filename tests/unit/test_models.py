"""The spec model: defaults follow the portal, and good manifests parse."""

import pytest
from pydantic import ValidationError

from defender_operator.api.manifest import load_manifests
from defender_operator.api.spec import AWSConnectorSpec
from tests.support.manifests import base_manifest
from tests.support.paths import EXAMPLES


def minimal_spec() -> AWSConnectorSpec:
    return AWSConnectorSpec.model_validate(base_manifest()["spec"])


def test_portal_defaults() -> None:
    spec = minimal_spec()
    assert spec.scan_interval_hours == 4
    assert spec.access == "Default"
    assert spec.deletion_policy == "Delete"
    assert spec.deployment.method == "CloudFormation"
    assert spec.deployment.region == "us-east-1"
    assert spec.stack_name == "DefenderForCloud-111122223333"
    plans = spec.plans
    assert not plans.cspm.enabled
    assert plans.servers.enabled and plans.servers.sub_plan == "P2"
    assert plans.servers.agentless_scanning_on
    assert plans.servers.arc_auto_provisioning.enabled
    assert plans.servers.defender_for_endpoint.enabled
    assert plans.servers.vulnerability_assessment.provider == "TVM"
    assert plans.containers.enabled and plans.containers.audit_logs.retention_days == 30
    assert plans.containers.defender_sensor.enabled and plans.containers.policy_agent.enabled
    assert plans.databases.enabled and plans.databases.rds.enabled and plans.databases.dspm.enabled
    assert not plans.cspm.ciem.enabled
    assert spec.aws.role_names.cspm_monitor == "CspmMonitorAws"


def test_p1_turns_agentless_scanning_off_unless_asked() -> None:
    manifest = base_manifest()
    manifest["spec"]["plans"] = {"servers": {"subPlan": "P1"}}
    assert not AWSConnectorSpec.model_validate(manifest["spec"]).plans.servers.agentless_scanning_on


def test_agentless_scanning_can_be_switched_off_on_p2() -> None:
    manifest = base_manifest()
    manifest["spec"]["plans"] = {"servers": {"agentlessScanning": {"enabled": False}}}
    assert not AWSConnectorSpec.model_validate(manifest["spec"]).plans.servers.agentless_scanning_on


@pytest.mark.parametrize("interval", [4, 6, 12, 24])
def test_every_portal_interval_is_accepted(interval: int) -> None:
    manifest = base_manifest()
    manifest["spec"]["scanIntervalHours"] = interval
    assert AWSConnectorSpec.model_validate(manifest["spec"]).scan_interval_hours == interval


def test_spec_is_required_to_name_account_and_subscription() -> None:
    with pytest.raises(ValidationError) as info:
        AWSConnectorSpec.model_validate({})
    missing = {e["loc"][0] for e in info.value.errors()}
    assert missing == {"azure", "aws"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_are_valid(path) -> None:  # type: ignore[no-untyped-def]
    (manifest,) = load_manifests(path.read_text())
    assert manifest.problems == []


def test_round_trip_through_json_keeps_the_spec() -> None:
    spec = minimal_spec()
    again = AWSConnectorSpec.model_validate(spec.model_dump(by_alias=True, exclude_none=True))
    assert again == spec
