"""The Prerequisites condition's verdict (issue 28), as a pure function of the spec and the subscription's plans."""

from hypothesis import given
from hypothesis import strategies as st

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.aws.managed_nodes import RegionNodes
from defender_operator.azure.graph import ServicePrincipal
from defender_operator.reconcile.conditions import Verdict
from defender_operator.reconcile.prerequisites import (
    arc_on,
    ciem_on,
    ciem_unreadable,
    ciem_verdict,
    combined,
    needed,
    nodes_unreadable,
    nodes_verdict,
    unreadable,
    verdict,
)
from tests.support.manifests import base_manifest

ALL_OFF: dict[str, str] = {}


def spec(**plans: bool) -> AWSConnectorSpec:
    body = base_manifest()["spec"]
    body["plans"] = {name: {"enabled": on} for name, on in plans.items()}
    return AWSConnectorSpec.model_validate(body)


def test_cspm_alone_needs_nothing_on_the_subscription() -> None:
    result = verdict(spec(servers=False, containers=False, databases=False), ALL_OFF)
    assert (result.status, result.reason) == ("True", "NothingRequired")


def test_each_plan_names_the_pricing_microsoft_lists_for_it() -> None:
    assert [p.name for p in needed(spec(servers=True, containers=False, databases=False))] == [
        "VirtualMachines"
    ]
    assert [p.name for p in needed(spec(servers=False, containers=True, databases=False))] == ["Containers"]
    # SQL on EC2 rides on Defender for Servers' Arc pipeline: without the Servers plan it is still needed.
    assert [p.name for p in needed(spec(servers=False, containers=False, databases=True))] == [
        "VirtualMachines",
        "SqlServerVirtualMachines",
        "OpenSourceRelationalDatabases",
    ]
    body = base_manifest()["spec"]
    body["plans"] = {"containers": {"enabled": False}, "databases": {"rds": {"enabled": False}}}
    no_rds = AWSConnectorSpec.model_validate(body)
    assert [p.name for p in needed(no_rds)] == ["VirtualMachines", "SqlServerVirtualMachines"]


def test_a_missing_plan_is_named_with_its_fix_and_a_met_one_is_not() -> None:
    s = spec(servers=True, containers=True, databases=False)
    result = verdict(s, {"VirtualMachines": "Standard", "Containers": "Free"})
    assert (result.status, result.reason) == ("False", "DefenderPlanOff")
    assert "Defender for Containers (Containers, for plans.containers)" in result.message
    assert "VirtualMachines" not in result.message
    assert (
        f"az security pricing create -n Containers --tier standard --subscription {s.azure.subscription_id}"
        in (result.message)
    )
    met = verdict(s, {"virtualmachines": "standard", "Containers": "Standard"})  # ARM's names, any case
    assert (met.status, met.reason) == ("True", "Met")


def test_unreadable_plans_are_unknown_and_say_what_grant_shows_them() -> None:
    result = unreadable("AzureAccessDenied")
    assert (result.status, result.reason) == ("Unknown", "PricingsUnreadable")
    assert "Microsoft.Security/pricings/read" in result.message and "(AzureAccessDenied)" in result.message


@given(
    st.fixed_dictionaries(
        {"servers": st.booleans(), "containers": st.booleans(), "databases": st.booleans()}
    ),
    st.dictionaries(
        st.sampled_from(
            ["VirtualMachines", "Containers", "SqlServerVirtualMachines", "OpenSourceRelationalDatabases"]
        ),
        st.sampled_from(["Free", "Standard"]),
    ),
)
def test_true_exactly_when_every_needed_plan_is_standard(
    plans: dict[str, bool], tiers: dict[str, str]
) -> None:
    s = spec(**plans)
    result = verdict(s, tiers)
    every = all(tiers.get(p.name) == "Standard" for p in needed(s))
    assert (result.status == "True") == every
    if not every:
        assert all(p.name in result.message for p in needed(s) if tiers.get(p.name) != "Standard")


def test_instances_systems_manager_does_not_manage_are_named_a_bounded_number_of_times() -> None:
    """Issue 28, build 2: Arc auto-provisioning reaches managed nodes only (aws/managed_nodes.py)."""
    assert nodes_verdict([RegionNodes("us-east-1", 0, [])]) == Verdict(
        "True", "InstancesManaged", "no EC2 instance runs in the regions"
    )
    assert nodes_verdict([RegionNodes("us-east-1", 3, [])]).status == "True"
    many = [f"i-{n:04d}" for n in range(25)]
    found = nodes_verdict([RegionNodes("eu-west-1", 30, many), RegionNodes("us-east-1", 2, ["i-x"])])
    assert (found.status, found.reason) == ("False", "InstancesNotManaged")
    assert "26 of 32 running EC2 instances" in found.message and "i-0000 (eu-west-1)" in found.message
    assert "i-0010" not in found.message and "i-x" not in found.message and ", ..." in found.message
    partly = nodes_verdict([RegionNodes("us-east-1", 1, [])], ["eu-west-3"])
    assert (partly.status, partly.reason) == (
        "Unknown",
        "InstancesUnreadable",
    ) and "eu-west-3" in partly.message
    assert (
        "regions not read: eu-west-3"
        in nodes_verdict([RegionNodes("us-east-1", 1, ["i-1"])], ["eu-west-3"]).message
    )
    assert "AWSAccessDenied" in nodes_unreadable("AWSAccessDenied").message
    assert "ssm:DescribeInstanceInformation" not in nodes_unreadable("AWSThrottled").message


def test_the_condition_is_false_when_any_check_is_then_unknown_then_true() -> None:
    met, off = Verdict("True", "Met", "plans on"), Verdict("False", "DefenderPlanOff", "plan off")
    unknown = nodes_unreadable("AWSAccessDenied")
    assert combined(met, off) == Verdict("False", "DefenderPlanOff", "plan off")
    assert combined(unknown, met).reason == "InstancesUnreadable"
    assert combined(met, Verdict("True", "InstancesManaged", "all")) == Verdict(
        "True", "Met", "plans on; all"
    )
    assert combined(off, Verdict("False", "InstancesNotManaged", "i-1")).message == "plan off; i-1"


def test_arc_is_on_for_servers_or_sql_on_ec2_with_auto_provisioning() -> None:
    assert arc_on(spec(servers=True, databases=False)) and arc_on(spec(servers=False, databases=True))
    assert not arc_on(spec(servers=False, databases=False, containers=True))


def test_ciems_application_must_be_the_named_one_with_the_audience_its_provider_takes() -> None:
    """Issue 28, build 2: oidcSubject's service principal, read with Graph (azure/graph.py)."""
    body = base_manifest()["spec"]
    body["plans"] = {"cspm": {"enabled": True, "ciem": {"enabled": True, "oidcSubject": SUBJECT}}}
    ciem = AWSConnectorSpec.model_validate(body)
    assert ciem_on(ciem) and not ciem_on(spec(servers=True))
    missing = ciem_verdict(ciem, None)
    assert (missing.status, missing.reason) == (
        "False",
        "CiemApplicationMissing",
    ) and SUBJECT in missing.message
    right = ServicePrincipal(SUBJECT, "mciem-aws-oidc-connector", ["api://mciem-aws-oidc-app", "app-id"])
    assert ciem_verdict(ciem, right).status == "True"
    renamed = ciem_verdict(ciem, ServicePrincipal(SUBJECT, "other", right.names))
    no_uri = ciem_verdict(ciem, ServicePrincipal(SUBJECT, right.display_name, ["app-id"]))
    assert renamed.reason == no_uri.reason == "CiemApplicationMismatch"
    assert "another application" in renamed.message and "api://mciem-aws-oidc-app" in no_uri.message
    assert "other" not in renamed.message.replace("another", "")  # another application's name is not repeated
    assert "Application.Read.All" in ciem_unreadable("GraphAccessDenied").message
    assert "Application.Read.All" not in ciem_unreadable("GraphUnavailable").message
    assert "another tenant" in ciem_unreadable("GraphOtherTenant").message


SUBJECT = "0b7a4d3c-1111-2222-3333-444455556666"
