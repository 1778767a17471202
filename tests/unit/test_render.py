"""Renderers: hand-checked expectations, then every combination checked by cfn-lint, the schema and parliament."""

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render import render
from defender_operator.render.catalog import required_roles
from defender_operator.render.cloudformation import member_template, stack_template
from defender_operator.render.connector import connector_body
from defender_operator.render.terraform import terraform_configuration
from tests.support.checks import cfn_lint_errors, parliament_problems, schema_errors, terraform_values
from tests.support.manifests import base_manifest

TENANT = "99999999-8888-7777-6666-555555555555"


def make(plans: dict[str, Any] | None = None, **spec: Any) -> AWSConnectorSpec:
    manifest = base_manifest()["spec"]
    manifest["plans"] = plans or {}
    manifest.update(spec)
    return AWSConnectorSpec.model_validate(manifest)


NO_PAID_PLANS = {
    "servers": {"enabled": False},
    "containers": {"enabled": False},
    "databases": {"enabled": False},
}


def roles_of(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in template["Resources"].items() if v["Type"] == "AWS::IAM::Role"}


def test_no_paid_plans_gives_only_the_cspm_role() -> None:
    spec = make(NO_PAID_PLANS)
    assert list(roles_of(stack_template(spec))) == ["CspmMonitorRole"]
    body = connector_body(spec)
    assert [o["offeringType"] for o in body["properties"]["offerings"]] == ["CspmMonitorAws"]
    assert body["properties"]["offerings"][0]["nativeCloudConnection"]["cloudRoleArn"] == (
        "arn:aws:iam::111122223333:role/CspmMonitorAws"
    )


def test_servers_p1_has_no_agentless_scanner_role() -> None:
    spec = make({**NO_PAID_PLANS, "servers": {"subPlan": "P1"}})
    assert "AgentlessScannerRole" not in roles_of(stack_template(spec))
    servers = connector_body(spec)["properties"]["offerings"][1]
    assert servers["subPlan"] == {"type": "P1"}
    assert servers["vmScanners"] == {"enabled": False}


def test_servers_p2_scans_agentlessly_with_exclusion_tags() -> None:
    spec = make({**NO_PAID_PLANS, "servers": {"agentlessScanning": {"exclusionTags": {"skip": "yes"}}}})
    assert "AgentlessScannerRole" in roles_of(stack_template(spec))
    servers = connector_body(spec)["properties"]["offerings"][1]
    assert servers["vmScanners"] == {
        "enabled": True,
        "cloudRoleArn": "arn:aws:iam::111122223333:role/DefenderForCloud-AgentlessScanner",
        "configuration": {"scanningMode": "Default", "exclusionTags": {"skip": "yes"}},
    }


def test_least_privilege_has_no_readonlyaccess_and_uses_the_explicit_policy() -> None:
    default = roles_of(stack_template(make()))["CspmMonitorRole"]
    least = roles_of(stack_template(make(access="LeastPrivilege")))["CspmMonitorRole"]
    assert default["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/ReadOnlyAccess"}
    ]
    assert [p["PolicyName"] for p in default["Policies"]] == ["CspmMonitorAwsDenyPolicy"]
    assert "ManagedPolicyArns" not in least
    assert [p["PolicyName"] for p in least["Policies"]] == ["CspmMonitorAwsPolicy"]
    text = json.dumps(stack_template(make(access="LeastPrivilege")))
    assert "ReadOnlyAccess" not in text and "PowerUser" not in text


def test_trust_is_federated_with_the_provider_parameter_and_checks_tenant_and_audience() -> None:
    trust = roles_of(stack_template(make()))["CspmMonitorRole"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {"Federated": {"Ref": "OidcProviderArn"}}
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"] == {
        "StringEquals": {
            "sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/:aud": "api://4d8bed1f-eee7-4d8e-b0dc-8462049a4479",
            "sts:RoleSessionName": f"MicrosoftDefenderForClouds_{TENANT}",
        }
    }


def test_the_identity_provider_is_never_in_the_account_stack() -> None:
    template = stack_template(make({"cspm": {"enabled": True}}))
    assert all(r["Type"] != "AWS::IAM::OIDCProvider" for r in template["Resources"].values())
    assert "OidcProviderArn" in template["Parameters"]


def test_containers_data_collection_role_checks_the_external_id() -> None:
    spec = make()
    trust = roles_of(stack_template(spec))["DataCollectionRole"]["AssumeRolePolicyDocument"]["Statement"]
    external_id = trust[0]["Condition"]["StringEquals"]["sts:ExternalId"]
    containers = next(
        o
        for o in connector_body(spec)["properties"]["offerings"]
        if o["offeringType"] == "DefenderForContainersAws"
    )
    assert containers["dataCollectionExternalId"] == external_id
    assert external_id != connector_body(make(aws={"accountId": "999988887777"}))  # differs per account
    other = make(aws={"accountId": "999988887777"})
    other_containers = next(
        o
        for o in connector_body(other)["properties"]["offerings"]
        if o["offeringType"] == "DefenderForContainersAws"
    )
    assert other_containers["dataCollectionExternalId"] != external_id


def test_role_name_overrides_reach_template_and_connector() -> None:
    spec = make(aws={"accountId": "111122223333", "roleNames": {"cspmMonitor": "LegacyCspm"}})
    assert roles_of(stack_template(spec))["CspmMonitorRole"]["RoleName"] == "LegacyCspm"
    assert connector_body(spec)["properties"]["offerings"][0]["nativeCloudConnection"][
        "cloudRoleArn"
    ].endswith(":role/LegacyCspm")


def test_ciem_trusts_the_customer_tenant_and_the_discovery_role_waits_for_it() -> None:
    spec = make({"cspm": {"enabled": True, "ciem": {"enabled": True, "oidcSubject": TENANT}}})
    template = stack_template(spec)
    roles = roles_of(template)
    oidc = roles["CiemOidcRole"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert oidc["Principal"] == {"Federated": {"Ref": "CiemOidcProviderArn"}}
    assert oidc["Condition"]["StringEquals"][f"sts.windows.net/{TENANT}/:sub"] == TENANT
    assert template["Resources"]["CiemDiscoveryRole"]["DependsOn"] == "CiemOidcRole"
    policy = roles["CiemOidcRole"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    # Any account's CIEM role, by name, as Microsoft's template has it: a management account reaches its members'.
    assert policy["Resource"] == {"Fn::Sub": "arn:${AWS::Partition}:iam::*:role/DefenderForCloud-Ciem"}
    assert policy["Action"] == ["sts:AssumeRole", "sts:TagSession"]


def test_organization_members_get_the_ciem_role_trusting_the_management_accounts_oidc_role() -> None:
    plans = {"cspm": {"enabled": True, "ciem": {"enabled": True, "oidcSubject": TENANT}}}
    spec = make(plans, aws={"accountId": "444455556666", "organization": {}})
    member = member_template(spec)
    roles = roles_of(member)
    # No identity provider of the customer's tenant and no CIEM OIDC role in members: the management account's serve.
    assert "CiemOidcRole" not in roles and "CiemOidcProvider" not in member["Resources"]
    assert "CreateCiemOidcProvider" not in member["Parameters"]
    assert "CiemOidcRoleArn" not in member["Outputs"]
    trust = roles["CiemDiscoveryRole"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::444455556666:role/DefenderForCloud-OidcCiem"}
    }
    assert "DependsOn" not in member["Resources"]["CiemDiscoveryRole"]
    # The management account keeps both, and its connector names its own OIDC role.
    management = roles_of(stack_template(spec))
    assert {"CiemOidcRole", "CiemDiscoveryRole"} <= set(management)


def test_arc_brings_the_ssm_host_management() -> None:
    resources = stack_template(make())["Resources"]
    assert resources["ArcHostManagementDocument"]["Type"] == "AWS::SSM::Document"
    association = resources["ArcHostManagementAssociation"]["Properties"]
    assert association["Parameters"]["AutomationAssumeRole"] == [{"Fn::GetAtt": ["SsmAutomationRole", "Arn"]}]
    no_arc = make({"servers": {"arcAutoProvisioning": {"enabled": False}}, "databases": {"enabled": False}})
    assert "ArcHostManagementDocument" not in stack_template(no_arc)["Resources"]
    content = json.dumps(resources["ArcHostManagementDocument"]["Properties"]["Content"])
    assert "python3.11" in content and "python3.6" not in content


def test_known_bugs_of_microsofts_template_are_not_repeated() -> None:
    text = json.dumps(
        stack_template(make({"cspm": {"enabled": True, "ciem": {"enabled": True, "oidcSubject": TENANT}}}))
    )
    assert "AttacheRolePolicy" not in text
    assert "DefenderForCloud-Ciem}" not in text
    assert '"arn:aws:' not in text.replace('"arn:aws:iam::197857026523:user/azuredefender-eks"', "")


def test_organization_member_template_creates_the_provider_unless_told() -> None:
    spec = make(aws={"accountId": "444455556666", "organization": {"excludedAccountIds": ["777788889999"]}})
    member = member_template(spec)
    provider = member["Resources"]["MicrosoftOidcProvider"]
    assert provider["Type"] == "AWS::IAM::OIDCProvider"
    assert provider["Condition"] == "CreateOidcProviderCondition"
    assert member["Parameters"]["CreateOidcProvider"]["Default"] == "true"
    trust = roles_of(member)["CspmMonitorRole"]["AssumeRolePolicyDocument"]["Statement"][0]
    assert trust["Principal"]["Federated"]["Fn::If"][1] == {"Ref": "MicrosoftOidcProvider"}
    told = make(aws={"accountId": "444455556666", "organization": {"memberOidcProviderExists": True}})
    assert member_template(told)["Parameters"]["CreateOidcProvider"]["Default"] == "false"
    # The operator puts the audiences on the members' providers through a role there: the template never creates one.
    through = make(aws={"accountId": "444455556666", "organization": {"memberProviderRoleName": "OrgAdmin"}})
    assert member_template(through)["Parameters"]["CreateOidcProvider"]["Default"] == "false"
    org = connector_body(spec)["properties"]["environmentData"]["organizationalData"]
    assert org == {
        "organizationMembershipType": "Organization",
        "stacksetName": "DefenderForCloud-Members",
        "excludedAccountIds": ["777788889999"],
    }


def test_terraform_mirrors_the_stack() -> None:
    spec = make()
    tf = terraform_configuration(spec)
    assert set(tf["resource"]["aws_iam_role"]) == {
        "cspm_monitor",
        "agentless_scanner",
        "defender_for_servers",
        "arc_auto_provisioning",
        "ssm_automation",
        "containers_k8s",
        "data_collection",
        "cloud_watch_to_kinesis",
        "kinesis_to_s3",
        "k8s_agentless_discovery",
        "image_assessment",
        "databases_dspm",
        "databases_threat_protection",
    }
    assert len(tf["resource"]["aws_iam_role"]) == len(roles_of(stack_template(spec)))
    trust = json.loads(tf["resource"]["aws_iam_role"]["cspm_monitor"]["assume_role_policy"])
    assert trust["Statement"][0]["Principal"] == {"Federated": "${local.oidc_provider_arn}"}
    assert (
        tf["resource"]["aws_iam_openid_connect_provider"]["microsoft"]["count"]
        == '${var.oidc_provider_arn == "" ? 1 : 0}'
    )


def test_output_is_deterministic_and_hash_tracks_changes() -> None:
    a, b = render(make()), render(make())
    assert (
        a.cloudformation.compact == b.cloudformation.compact
        and a.cloudformation.sha256 == b.cloudformation.sha256
    )
    c = render(make(access="LeastPrivilege"))
    assert c.cloudformation.sha256 != a.cloudformation.sha256
    regions_only = render(make(aws={"accountId": "111122223333", "regions": ["eu-west-1"]}))
    assert regions_only.cloudformation.sha256 == a.cloudformation.sha256  # regions live in Azure only
    assert regions_only.connector.sha256 != a.connector.sha256


PLAN_SWITCHES = list(itertools.product([False, True], repeat=4))


@pytest.mark.parametrize("organization", [False, True], ids=["account", "organization"])
@pytest.mark.parametrize("access", ["Default", "LeastPrivilege"])
@pytest.mark.parametrize(
    "switches", PLAN_SWITCHES, ids=lambda s: "".join("CSKD"[i] if on else "-" for i, on in enumerate(s))
)
def test_every_combination_is_valid_for_aws_and_azure(
    switches: tuple[bool, bool, bool, bool], access: str, organization: bool
) -> None:
    cspm, servers, containers, databases = switches
    plans = {
        "cspm": {"enabled": cspm, "ciem": {"enabled": cspm, "oidcSubject": TENANT}},
        "servers": {"enabled": servers},
        "containers": {"enabled": containers},
        "databases": {"enabled": databases},
    }
    aws: dict[str, Any] = {"accountId": "111122223333"}
    if organization:
        aws["organization"] = {}
    spec = make(plans, access=access, aws=aws)
    rendered = render(spec)
    assert cfn_lint_errors(rendered.cloudformation.content) == []
    if rendered.member_stackset is not None:
        assert cfn_lint_errors(rendered.member_stackset.content) == []
    assert schema_errors(rendered.connector.content) == []
    assert parliament_problems(spec) == []
    assert len(rendered.cloudformation.compact) < 51_200, "CloudFormation's TemplateBody limit"


def _spec_strategy() -> st.SearchStrategy[dict[str, Any]]:
    feature = st.fixed_dictionaries({"enabled": st.booleans()})
    tags = st.dictionaries(st.text("abcxyz-", min_size=1, max_size=8), st.text("01", max_size=3), max_size=2)
    servers = st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "subPlan": st.sampled_from(["P1", "P2"]),
            "arcAutoProvisioning": st.fixed_dictionaries({"enabled": st.booleans()}),
            "defenderForEndpoint": feature,
            "vulnerabilityAssessment": st.fixed_dictionaries(
                {"enabled": st.booleans(), "provider": st.sampled_from(["TVM", "Qualys"])}
            ),
        }
    )
    cspm = st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "agentlessVmScanning": st.fixed_dictionaries({"enabled": st.booleans(), "exclusionTags": tags}),
            "sensitiveDataDiscovery": feature,
            "databasesDspm": feature,
            "containerImageAssessment": feature,
            "kubernetesDiscovery": feature,
        }
    )
    containers = st.fixed_dictionaries(
        {
            "enabled": st.booleans(),
            "auditLogs": st.fixed_dictionaries(
                {"enabled": st.booleans(), "retentionDays": st.integers(1, 3653)}
            ),
            "imageAssessment": feature,
            "kubernetesDiscovery": feature,
            "nodeScanning": feature,
        }
    )
    databases = st.fixed_dictionaries(
        {"enabled": st.booleans(), "arcAutoProvisioning": feature, "rds": feature, "dspm": feature}
    )
    return st.fixed_dictionaries(
        {
            "plans": st.fixed_dictionaries(
                {"cspm": cspm, "servers": servers, "containers": containers, "databases": databases}
            ),
            "access": st.sampled_from(["Default", "LeastPrivilege"]),
            "scanIntervalHours": st.sampled_from([4, 6, 12, 24]),
            "regions": st.lists(
                st.sampled_from(["us-east-1", "eu-west-1", "ap-south-2", "ca-west-1"]), unique=True
            ),
        }
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_spec_strategy())
def test_any_valid_spec_renders_valid_output(drawn: dict[str, Any]) -> None:
    regions = drawn.pop("regions")
    spec = make(drawn.pop("plans"), aws={"accountId": "111122223333", "regions": regions}, **drawn)
    rendered = render(spec)
    assert schema_errors(rendered.connector.content) == []
    assert parliament_problems(spec) == []
    roles = set(roles_of(rendered.cloudformation.content))
    arns = {
        o.get("cloudRoleArn")
        for offering in rendered.connector.content["properties"]["offerings"]
        for o in offering.values()
        if isinstance(o, dict)
    } - {None}
    # every role the connector names is created by the stack, and nothing else is
    assert {a.rsplit("/", 1)[-1] for a in arns} <= {
        r["RoleName"] for r in roles_of(rendered.cloudformation.content).values()
    }
    assert len(roles) == len(required_roles(spec))


def test_terraform_for_a_management_account_deploys_the_member_stackset(tmp_path: Path) -> None:
    """The StackSet and its instances as the operator would make them; the template body goes through the real
    Terraform (its ${...} escaped) and comes out as exactly the member template."""
    org = {"organizationalUnitIds": ["ou-ab12-cdefgh34"], "excludedAccountIds": ["777788889999"]}
    spec = make(aws={"accountId": "444455556666", "organization": org})
    tf = terraform_configuration(spec)
    stack_set = tf["resource"]["aws_cloudformation_stack_set"]["members"]
    assert (
        stack_set["permission_model"] == "SERVICE_MANAGED" and stack_set["name"] == "DefenderForCloud-Members"
    )
    assert stack_set["auto_deployment"] == [{"enabled": True, "retain_stacks_on_account_removal": False}]
    assert stack_set["operation_preferences"] == [
        {"failure_tolerance_percentage": 100, "max_concurrent_percentage": 25}
    ]
    instance = tf["resource"]["aws_cloudformation_stack_set_instance"]["members"]
    assert instance["deployment_targets"] == [
        {
            "organizational_unit_ids": ["ou-ab12-cdefgh34"],
            "account_filter_type": "DIFFERENCE",
            "accounts": ["777788889999"],
        }
    ]
    alone = {"variable": {"unused": {"type": "string", "default": ""}}}  # the body needs nothing else
    for resource, rendered in (
        ("aws_cloudformation_stack_set", stack_set),
        ("aws_cloudformation_stack_set_instance", instance),
    ):
        assert schema_problems(resource, rendered) == [], resource
    values = terraform_values(alone, {"body": stack_set["template_body"]}, {}, tmp_path)
    assert json.loads(values["body"]) == member_template(spec)
    everyone = terraform_configuration(make(aws={"accountId": "444455556666", "organization": {}}))
    targets = everyone["resource"]["aws_cloudformation_stack_set_instance"]["members"]["deployment_targets"]
    assert targets == [
        {"organizational_unit_ids": ["${data.aws_organizations_organization.current.roots[0].id}"]}
    ]
    assert "aws_organizations_organization" in everyone["data"]
    # account_filter_type/accounts exist from provider 5.55.0 (issue 28): the render pins what it needs
    assert tf["terraform"]["required_providers"]["aws"]["version"] == ">= 5.55.0"
    assert everyone["terraform"]["required_providers"]["aws"]["version"] == ">= 5.0"


def test_terraform_for_a_delegated_administrators_organization_is_the_management_accounts_own_part() -> None:
    """Issue 28, build 4: with organization.delegatedAdministratorAccountId the operator runs the member StackSet
    from that account; what the management account's administrators apply is its own provider and roles only."""
    org = {"delegatedAdministratorAccountId": "210987654321"}
    delegated = terraform_configuration(make(aws={"accountId": "444455556666", "organization": org}))
    alone = terraform_configuration(make(aws={"accountId": "444455556666"}))
    assert "aws_cloudformation_stack_set" not in delegated["resource"]
    assert delegated["resource"] == alone["resource"] and "210987654321" in delegated["//"]


# The AWS provider's schema of the two resources (arguments and nested blocks), as generated from the provider by
# roman-mazur/cuetf (aws/res/aws_cloudformation_stack_set_gen.cue and aws_cloudformation_stack_set_instance_gen.cue,
# commit 02171738, read 2026-12-01): no provider can be downloaded here to run `terraform validate`.
PROVIDER_SCHEMA: dict[str, tuple[set[str], set[str], dict[str, set[str]]]] = {  # required, arguments, blocks
    "aws_cloudformation_stack_set": (
        {"name"},
        {"administration_role_arn", "call_as", "capabilities", "description", "execution_role_name", "name",
         "parameters", "permission_model", "tags", "template_body", "template_url"},
        {
            "auto_deployment": {"enabled", "retain_stacks_on_account_removal"},
            "managed_execution": {"active"},
            "operation_preferences": {"failure_tolerance_count", "failure_tolerance_percentage",
                                      "max_concurrent_count", "max_concurrent_percentage",
                                      "region_concurrency_type", "region_order"},
        },
    ),
    "aws_cloudformation_stack_set_instance": (
        {"stack_set_name"},
        {"account_id", "call_as", "parameter_overrides", "region", "retain_stack", "stack_set_name"},
        {
            "deployment_targets": {"account_filter_type", "accounts", "accounts_url", "organizational_unit_ids"},
            "operation_preferences": {"concurrency_mode", "failure_tolerance_count", "failure_tolerance_percentage",
                                      "max_concurrent_count", "max_concurrent_percentage",
                                      "region_concurrency_type", "region_order"},
        },
    ),
}  # fmt: skip
META_ARGUMENTS = {"lifecycle", "depends_on", "count", "for_each", "provider"}


def schema_problems(resource: str, rendered: dict[str, Any]) -> list[str]:
    required, arguments, blocks = PROVIDER_SCHEMA[resource]
    problems = [f"missing {name}" for name in sorted(required - set(rendered))]
    for key, value in rendered.items():
        if key in blocks:
            assert isinstance(value, list) and len(value) == 1, f"{key}: one block"  # max_items 1
            problems += [f"{key}.{k}: not an argument" for k in sorted(set(value[0]) - blocks[key])]
        elif key not in arguments | META_ARGUMENTS:
            problems.append(f"{key}: not an argument")
    return problems


def test_rds_threat_protection_has_its_own_role_with_microsofts_rds_permissions() -> None:
    """Issue 28: the connector pointed RDS protection at the DSPM role, which lacks 13 of the 18 RDS actions Microsoft
    lists for DefenderForCloud-DataThreatProtectionDB (Learn, enable-defender-for-databases-aws, 2026-07-03)."""
    spec = make(plans={"databases": {"enabled": True, "rds": {"enabled": True}, "dspm": {"enabled": False}}})
    stack = stack_template(spec)
    roles = {r["RoleName"]: r for r in roles_of(stack).values()}
    assert (
        "DefenderForCloud-DataThreatProtectionDB" in roles
        and "DefenderForCloud-DataSecurityPostureDB" not in roles
    )
    actions = {
        a
        for p in roles["DefenderForCloud-DataThreatProtectionDB"]["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    missing_before = {
        "rds:AddTagsToResource", "rds:CreateDBParameterGroup", "rds:CreateDBClusterParameterGroup",
        "rds:CreateOptionGroup", "rds:ModifyOptionGroup", "rds:ModifyDBParameterGroup",
        "rds:ModifyDBClusterParameterGroup", "rds:ModifyDBInstance", "rds:ModifyDBCluster", "rds:DescribeDBLogFiles",
        "rds:DownloadDBLogFilePortion", "rds:DescribeDBParameterGroups", "rds:DescribeDBClusterParameterGroups",
    }  # fmt: skip
    assert missing_before <= actions and len({a for a in actions if a.startswith("rds:")}) == 18
    offering = next(
        o for o in render(spec).connector.content["properties"]["offerings"]
        if o["offeringType"] == "DefenderForDatabasesAws"
    )  # fmt: skip
    assert offering["rds"]["cloudRoleArn"].endswith(":role/DefenderForCloud-DataThreatProtectionDB")
