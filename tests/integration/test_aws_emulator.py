"""Each fix to moto behaves as the AWS documentation says, through boto3 against the running emulator."""

import json
import time
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render.cloudformation import stack_template
from defender_operator.render.document import Rendered
from defender_operator.sandbox import Sandbox, emulators, processes
from tests.support.account_admin import administrator, ec2_instance, enforce, ensure_role, instance_profile
from tests.support.clouds import aws_client, aws_control, delete_role_by_hand, reset_clouds
from tests.support.kube import wait_for
from tests.support.manifests import base_manifest
from tests.support.onboarding import assumed, aws_in

pytestmark = pytest.mark.integration

MS_PROVIDER_URL = "https://sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/"
NAMED_IAM = ["CAPABILITY_NAMED_IAM"]


@pytest.fixture(autouse=True)
def clean(sandbox: Sandbox) -> None:
    reset_clouds(sandbox)


def template(**spec: Any) -> str:
    manifest = base_manifest()["spec"]
    manifest.update(spec)
    return Rendered(stack_template(AWSConnectorSpec.model_validate(manifest))).compact


def provider(sandbox: Sandbox) -> str:
    arn: str = aws_client(sandbox, "iam").create_open_id_connect_provider(
        Url=MS_PROVIDER_URL,
        ClientIDList=["api://foreign"],
        ThumbprintList=["626d44e704d1ceabe3bf0d53397464ac8080142c"],
    )["OpenIDConnectProviderArn"]
    return arn


def create(sandbox: Sandbox, name: str = "s", body: str | None = None, **kwargs: Any) -> str:
    cf = aws_client(sandbox, "cloudformation")
    params = [
        {
            "ParameterKey": "OidcProviderArn",
            "ParameterValue": kwargs.pop("provider_arn", None) or provider(sandbox),
        }
    ]
    stack_id: str = cf.create_stack(
        StackName=name, TemplateBody=body or template(), Parameters=params, Capabilities=NAMED_IAM, **kwargs
    )["StackId"]
    return stack_id


def status(sandbox: Sandbox, stack: str) -> str:
    result: str = aws_client(sandbox, "cloudformation").describe_stacks(StackName=stack)["Stacks"][0][
        "StackStatus"
    ]
    return result


def test_oidc_provider_audiences_can_be_added_and_removed(sandbox: Sandbox) -> None:
    iam = aws_client(sandbox, "iam")
    arn = provider(sandbox)
    iam.add_client_id_to_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID="api://mine")
    iam.add_client_id_to_open_id_connect_provider(
        OpenIDConnectProviderArn=arn, ClientID="api://mine"
    )  # idempotent
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"] == [
        "api://foreign",
        "api://mine",
    ]
    iam.remove_client_id_from_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID="api://mine")
    iam.remove_client_id_from_open_id_connect_provider(OpenIDConnectProviderArn=arn, ClientID="api://absent")
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"] == ["api://foreign"]


def test_named_iam_resources_need_the_capability(sandbox: Sandbox) -> None:
    cf = aws_client(sandbox, "cloudformation")
    params = [{"ParameterKey": "OidcProviderArn", "ParameterValue": provider(sandbox)}]
    with pytest.raises(ClientError) as info:
        cf.create_stack(StackName="s", TemplateBody=template(), Parameters=params)
    assert info.value.response["Error"]["Code"] == "InsufficientCapabilitiesException"
    assert "CAPABILITY_NAMED_IAM" in info.value.response["Error"]["Message"]
    with pytest.raises(ClientError):
        cf.create_stack(
            StackName="s", TemplateBody=template(), Parameters=params, Capabilities=["CAPABILITY_IAM"]
        )


def test_stack_creates_roles_with_managed_and_inline_policies(sandbox: Sandbox) -> None:
    create(sandbox)
    iam = aws_client(sandbox, "iam")
    attached = iam.list_attached_role_policies(RoleName="CspmMonitorAws")["AttachedPolicies"]
    assert [p["PolicyArn"] for p in attached] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    document = iam.get_role_policy(RoleName="CspmMonitorAws", PolicyName="CspmMonitorAwsDenyPolicy")[
        "PolicyDocument"
    ]
    assert document["Statement"][0]["Effect"] == "Deny"


def test_update_changes_trust_and_policies_in_place(sandbox: Sandbox) -> None:
    create(sandbox)
    cf, iam = aws_client(sandbox, "cloudformation"), aws_client(sandbox, "iam")
    other_tenant = {
        "azure": {**base_manifest()["spec"]["azure"], "tenantId": "12345678-1234-1234-1234-123456789012"}
    }
    parameters = [{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}]
    cf.update_stack(
        StackName="s",
        TemplateBody=template(access="LeastPrivilege", **other_tenant),
        Parameters=parameters,
        Capabilities=NAMED_IAM,
    )
    assert status(sandbox, "s") == "UPDATE_COMPLETE"
    trust = iam.get_role(RoleName="CspmMonitorAws")["Role"]["AssumeRolePolicyDocument"]
    assert trust["Statement"][0]["Condition"]["StringEquals"]["sts:RoleSessionName"].endswith("123456789012")
    assert iam.list_attached_role_policies(RoleName="CspmMonitorAws")["AttachedPolicies"] == []
    assert iam.list_role_policies(RoleName="CspmMonitorAws")["PolicyNames"] == ["CspmMonitorAwsPolicy"]


def test_a_role_removed_by_an_update_and_added_back_by_the_next_is_created_again(sandbox: Sandbox) -> None:
    """Issue 26: moto kept a resource an update removed, so ListStackResources still named it and the update that
    added it back created nothing and said UPDATE_COMPLETE (the sandbox then showed Ready with a connector naming a
    role that did not exist). CloudFormation deletes the removed resource and creates it anew."""
    create(sandbox)
    cf, iam = aws_client(sandbox, "cloudformation"), aws_client(sandbox, "iam")
    parameters = [{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}]

    def roles() -> set[str]:
        return {r["RoleName"] for r in iam.list_roles()["Roles"]}

    def listed() -> set[str]:
        return {
            r["LogicalResourceId"] for r in cf.list_stack_resources(StackName="s")["StackResourceSummaries"]
        }

    everything, resources = roles(), listed()
    off = template(plans={"servers": {"enabled": False}})
    cf.update_stack(StackName="s", TemplateBody=off, Parameters=parameters, Capabilities=NAMED_IAM)
    assert status(sandbox, "s") == "UPDATE_COMPLETE"
    gone, unlisted = everything - roles(), resources - listed()
    assert gone and unlisted  # the Servers roles went, from IAM and from the stack
    cf.update_stack(StackName="s", TemplateBody=template(), Parameters=parameters, Capabilities=NAMED_IAM)
    assert status(sandbox, "s") == "UPDATE_COMPLETE"
    assert roles() == everything and listed() == resources


def _organization(sandbox: Sandbox, management: str, prefix: str, members: int) -> tuple[Any, str, list[str]]:
    """An organization of ``management`` with ``members`` accounts at its root: its client, root and accounts."""
    organizations = aws_in(sandbox, management, "organizations")
    organizations.create_organization(FeatureSet="ALL")
    root = organizations.list_roots()["Roots"][0]["Id"]
    accounts = []
    for i in range(members):
        request = organizations.create_account(Email=f"{prefix}{i}@example.com", AccountName=f"{prefix}{i}")
        accounts.append(
            organizations.describe_create_account_status(
                CreateAccountRequestId=request["CreateAccountStatus"]["Id"]
            )["CreateAccountStatus"]["AccountId"]
        )
    return organizations, str(root), accounts


def test_a_parameter_an_update_no_longer_declares_is_gone_from_the_stack(sandbox: Sandbox) -> None:
    """API_Stack.html: a stack's Parameters are its template's. moto kept the ones an update's template dropped, so
    the operator, comparing the stack's parameters with its own, updated again after every update (CIEM turned
    off, its provider's parameter gone from the template)."""
    cf = aws_client(sandbox, "cloudformation")

    def template(*names: str) -> str:
        declared = {name: {"Type": "String"} for name in names}
        return json.dumps({"Parameters": declared, "Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})

    def value(name: str) -> dict[str, str]:
        return {"ParameterKey": name, "ParameterValue": name.lower()}

    cf.create_stack(StackName="dropped", TemplateBody=template("A", "B"), Parameters=[value("A"), value("B")])
    cf.update_stack(StackName="dropped", TemplateBody=template("A"), Parameters=[value("A")])
    wait_for(lambda: status(sandbox, "dropped") == "UPDATE_COMPLETE", 30, "the update")
    assert cf.describe_stacks(StackName="dropped")["Stacks"][0]["Parameters"] == [value("A")]
    cf.delete_stack(StackName="dropped")


def test_list_stack_sets_honours_its_status_filter(sandbox: Sandbox) -> None:
    """API_ListStackSets.html: Status (ACTIVE | DELETED) filters the stack sets listed; moto ignored it."""
    cf = aws_client(sandbox, "cloudformation")
    body = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    for name in ("kept", "gone"):
        cf.create_stack_set(StackSetName=name, TemplateBody=body)
    cf.delete_stack_set(StackSetName="gone")

    def names(**status: str) -> set[str]:
        return {s["StackSetName"] for s in cf.list_stack_sets(**status)["Summaries"]}

    assert names(Status="ACTIVE") == {"kept"}
    assert names(Status="DELETED") == {"gone"}
    assert names() == {"kept", "gone"}


def test_a_stackset_name_is_unique_and_a_retry_with_its_token_makes_no_second(sandbox: Sandbox) -> None:
    """API_CreateStackSet.html: ClientRequestToken, which the SDK fills in and sends again on its retries, "so that
    CloudFormation knows that you're not attempting to create another StackSet with the same name", and
    NameAlreadyExistsException. moto made one more StackSet of the name per call (the campaign's seed 65218)."""
    cf = aws_client(sandbox, "cloudformation")
    body = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    first = cf.create_stack_set(StackSetName="once", TemplateBody=body, ClientRequestToken="try-1")[
        "StackSetId"
    ]
    retried = cf.create_stack_set(StackSetName="once", TemplateBody=body, ClientRequestToken="try-1")
    assert retried["StackSetId"] == first
    with pytest.raises(ClientError) as refused:
        cf.create_stack_set(StackSetName="once", TemplateBody=body)  # a token of its own: another creation
    assert refused.value.response["Error"]["Code"] == "NameAlreadyExistsException"

    def active() -> list[str]:
        listed = cf.list_stack_sets(Status="ACTIVE")["Summaries"]
        return [s["StackSetId"] for s in listed if s["StackSetName"] == "once"]

    assert active() == [first]
    cf.delete_stack_set(StackSetName="once")
    again = cf.create_stack_set(StackSetName="once", TemplateBody=body)[
        "StackSetId"
    ]  # a deleted one's name is free
    assert active() == [again] and again != first
    cf.delete_stack_set(StackSetName="once")


def test_a_stackset_runs_one_operation_at_a_time_until_its_member_stacks_are_complete(
    sandbox: Sandbox,
) -> None:
    """API_CreateStackInstances.html (and every StackSet write): OperationInProgressException, "Only one operation
    can be performed for a stack set at a given time"; an operation runs until the member stacks it touched are
    complete. moto said SUCCEEDED at once and deleted a member stack still being created, whose resources the
    pending creation then made anyway: a member account kept Defender's roles with no StackSet left (campaign seed
    53120)."""
    management = "500012345680"
    _, root, members = _organization(sandbox, management, "o", 2)
    cf = aws_in(sandbox, management, "cloudformation")
    body = json.dumps({"Resources": {"Role": {"Type": "AWS::IAM::Role", "Properties": {
        "RoleName": "OneAtATime", "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": []}}}}})  # fmt: skip
    cf.create_stack_set(StackSetName="serial", TemplateBody=body, PermissionModel="SERVICE_MANAGED",
                        Capabilities=NAMED_IAM)  # fmt: skip
    aws_control(
        sandbox, "/_sandbox/config", {"asyncStackSeconds": 5}
    )  # room for the calls below, on a busy machine
    targets = {"DeploymentTargets": {"OrganizationalUnitIds": [root]}, "Regions": ["us-east-1"]}
    created = cf.create_stack_instances(StackSetName="serial", **targets)["OperationId"]

    def state(operation: str) -> str:
        found = cf.describe_stack_set_operation(StackSetName="serial", OperationId=operation)
        return str(found["StackSetOperation"]["Status"])

    assert state(created) == "RUNNING"
    for refused in (
        lambda: cf.delete_stack_instances(StackSetName="serial", RetainStacks=False, **targets),
        lambda: cf.update_stack_set(StackSetName="serial", TemplateBody=body, Capabilities=NAMED_IAM),
        lambda: cf.delete_stack_set(StackSetName="serial"),
    ):
        with pytest.raises(ClientError) as info:
            refused()
        assert info.value.response["Error"]["Code"] == "OperationInProgressException"
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 409
    wait_for(lambda: state(created) == "SUCCEEDED", 30, "the creation to finish")
    deleted = cf.delete_stack_instances(StackSetName="serial", RetainStacks=False, **targets)["OperationId"]
    assert state(deleted) == "SUCCEEDED"
    cf.delete_stack_set(StackSetName="serial")
    # With ManagedExecution (the operator's StackSets have it), another operation is queued, not refused, and
    # starts once the one before it has finished: the deletion never overtakes the creation.
    cf.create_stack_set(StackSetName="queued", TemplateBody=body, PermissionModel="SERVICE_MANAGED",
                        Capabilities=NAMED_IAM, ManagedExecution={"Active": True})  # fmt: skip
    assert cf.describe_stack_set(StackSetName="queued")["StackSet"]["ManagedExecution"] == {"Active": True}
    created = cf.create_stack_instances(StackSetName="queued", **targets)["OperationId"]
    deleted = cf.delete_stack_instances(StackSetName="queued", RetainStacks=False, **targets)["OperationId"]

    def queued_state(operation: str) -> str:
        found = cf.describe_stack_set_operation(StackSetName="queued", OperationId=operation)
        return str(found["StackSetOperation"]["Status"])

    assert (queued_state(created), queued_state(deleted)) == ("RUNNING", "QUEUED")
    with pytest.raises(ClientError) as info:
        cf.delete_stack_set(StackSetName="queued")  # no operation: refused, not queued
    assert info.value.response["Error"]["Code"] == "OperationInProgressException"
    wait_for(lambda: queued_state(deleted) == "SUCCEEDED", 30, "the queued deletion to run")
    assert queued_state(created) == "SUCCEEDED"
    assert cf.list_stack_instances(StackSetName="queued")["Summaries"] == []
    cf.delete_stack_set(StackSetName="queued")
    aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 0})
    for member in members:  # nothing made after its deletion
        roles = aws_in(sandbox, member, "iam").list_roles()["Roles"]
        assert "OneAtATime" not in [r["RoleName"] for r in roles]


def test_stacksets_skip_a_closed_account_and_only_detach_its_instance(sandbox: Sandbox) -> None:
    """API_StackInstanceComprehensiveStatus.html (SKIPPED_SUSPENDED_ACCOUNT) and AWS re:Post knowledge center
    "cloudformation-removal-stacksets": an operation skips a closed (SUSPENDED) account, a deletion of its instance
    fails and leaves it INOPERABLE, and only DeleteStackInstances with RetainStacks takes it out of the StackSet
    (its stack stays). moto deployed to, updated and deleted in closed accounts as in any other. And
    API_DeploymentTargets.html: INTERSECTION deploys to the listed accounts of the units only."""
    management = "500012345679"
    organizations, root, members = _organization(sandbox, management, "c", 3)
    cf = aws_in(sandbox, management, "cloudformation")
    body = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    cf.create_stack_set(StackSetName="closing", TemplateBody=body, PermissionModel="SERVICE_MANAGED")
    targets = {"OrganizationalUnitIds": [root]}

    def instances() -> dict[str, tuple[str, str]]:
        listed = cf.list_stack_instances(StackSetName="closing")["Summaries"]
        return {i["Account"]: (i["Status"], i["StackInstanceStatus"]["DetailedStatus"]) for i in listed}

    cf.create_stack_instances(
        StackSetName="closing",
        DeploymentTargets={
            **targets,
            "Accounts": [members[0], members[1]],
            "AccountFilterType": "INTERSECTION",
        },
        Regions=["us-east-1"],
    )
    assert sorted(instances()) == sorted(members[:2])  # not members[2]
    organizations.close_account(AccountId=members[1])
    closed = organizations.describe_account(AccountId=members[1])["Account"]
    assert (closed["Status"], closed["State"]) == ("SUSPENDED", "CLOSED")
    cf.create_stack_instances(StackSetName="closing", DeploymentTargets=targets, Regions=["us-east-1"])
    assert sorted(instances()) == sorted(members)  # the closed account got none of its own
    assert instances()[members[1]] == ("OUTDATED", "SKIPPED_SUSPENDED_ACCOUNT")
    gone = {**targets, "Accounts": [members[1]], "AccountFilterType": "INTERSECTION"}
    cf.delete_stack_instances(
        StackSetName="closing", DeploymentTargets=gone, Regions=["us-east-1"], RetainStacks=False
    )
    assert instances()[members[1]] == ("INOPERABLE", "INOPERABLE")
    cf.delete_stack_instances(
        StackSetName="closing", DeploymentTargets=gone, Regions=["us-east-1"], RetainStacks=True
    )
    assert sorted(instances()) == sorted([members[0], members[2]])
    assert aws_in(sandbox, members[1], "sns").list_topics()["Topics"]  # its stack's resources stay


def test_a_reused_request_token_is_a_retry_and_changes_nothing(sandbox: Sandbox) -> None:
    """API_UpdateStack.html, ClientRequestToken: a request with a token CloudFormation has seen is a retry."""
    create(sandbox, ClientRequestToken="attempt-1")
    cf = aws_client(sandbox, "cloudformation")
    parameters = [{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}]
    stack_id = cf.update_stack(
        StackName="s",
        TemplateBody=template(access="LeastPrivilege"),
        Parameters=parameters,
        Capabilities=NAMED_IAM,
        ClientRequestToken="attempt-1",  # the create's token: a replay, not a new update
    )["StackId"]
    assert stack_id == cf.describe_stacks(StackName="s")["Stacks"][0]["StackId"]
    assert status(sandbox, "s") == "CREATE_COMPLETE"
    cf.update_stack(
        StackName="s",
        TemplateBody=template(access="LeastPrivilege"),
        Parameters=parameters,
        Capabilities=NAMED_IAM,
        ClientRequestToken="attempt-2",
    )
    assert status(sandbox, "s") == "UPDATE_COMPLETE"


def test_delete_removes_roles_and_their_policies(sandbox: Sandbox) -> None:
    stack_id = create(sandbox)
    cf, iam = aws_client(sandbox, "cloudformation"), aws_client(sandbox, "iam")
    cf.delete_stack(StackName="s")
    assert status(sandbox, stack_id) == "DELETE_COMPLETE"
    assert iam.list_roles()["Roles"] == []
    assert iam.list_policies(Scope="Local")["Policies"] == []


def test_failed_create_rolls_back_with_the_resource_reason(sandbox: Sandbox) -> None:
    iam = aws_client(sandbox, "iam")
    iam.create_role(
        RoleName="CspmMonitorAws",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    stack_id = create(sandbox)
    assert status(sandbox, stack_id) == "ROLLBACK_COMPLETE"
    events = aws_client(sandbox, "cloudformation").describe_stack_events(StackName=stack_id)["StackEvents"]
    failed = [e for e in events if e["ResourceStatus"] == "CREATE_FAILED"]
    assert failed[0]["LogicalResourceId"] == "CspmMonitorRole"
    assert "already exists" in failed[0]["ResourceStatusReason"]
    assert [r["RoleName"] for r in iam.list_roles()["Roles"]] == [
        "CspmMonitorAws"
    ]  # nothing of the stack is left


def test_asynchronous_mode_shows_in_progress_first(sandbox: Sandbox) -> None:
    # each operation takes 5 s: ample time to see it in progress and be refused meanwhile, on a busy machine too
    aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 5})
    iam = aws_client(sandbox, "iam")
    least, default = template(access="LeastPrivilege"), template()
    started = time.monotonic()
    create(sandbox)
    assert status(sandbox, "s") == "CREATE_IN_PROGRESS"
    assert not [r for r in iam.list_roles()["Roles"] if r["RoleName"] == "CspmMonitorAws"]
    wait_for(lambda: status(sandbox, "s") == "CREATE_COMPLETE", 30, "CREATE_COMPLETE")
    assert time.monotonic() - started >= 5
    assert iam.get_role(RoleName="CspmMonitorAws")["Role"]["RoleName"] == "CspmMonitorAws"
    cf = aws_client(sandbox, "cloudformation")
    cf.update_stack(
        StackName="s",
        TemplateBody=least,
        Parameters=[{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}],
        Capabilities=NAMED_IAM,
    )
    assert status(sandbox, "s") == "UPDATE_IN_PROGRESS"
    with pytest.raises(ClientError) as info:
        cf.update_stack(
            StackName="s",
            TemplateBody=default,
            Parameters=[{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}],
            Capabilities=NAMED_IAM,
        )
    assert "UPDATE_IN_PROGRESS state and can not be updated" in info.value.response["Error"]["Message"]
    wait_for(lambda: status(sandbox, "s") == "UPDATE_COMPLETE", 30, "UPDATE_COMPLETE")
    stack_id = cf.describe_stacks(StackName="s")["Stacks"][0]["StackId"]
    cf.delete_stack(StackName="s")
    assert status(sandbox, stack_id) == "DELETE_IN_PROGRESS"
    wait_for(lambda: status(sandbox, stack_id) == "DELETE_COMPLETE", 30, "DELETE_COMPLETE")
    assert iam.list_roles()["Roles"] == []
    aws_control(
        sandbox, "/_sandbox/config", {"asyncStackSeconds": 0}
    )  # (if it failed: conftest.py sets it back)


def test_drift_detection_reports_modified_and_deleted_roles(sandbox: Sandbox) -> None:
    create(sandbox)
    cf, iam = aws_client(sandbox, "cloudformation"), aws_client(sandbox, "iam")
    detection = cf.detect_stack_drift(StackName="s")["StackDriftDetectionId"]
    assert (
        cf.describe_stack_drift_detection_status(StackDriftDetectionId=detection)["StackDriftStatus"]
        == "IN_SYNC"
    )
    iam.update_assume_role_policy(
        RoleName="CspmMonitorAws",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
            }
        ),
    )
    iam.detach_role_policy(RoleName="CspmMonitorAws", PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    for name in iam.list_role_policies(RoleName="DefenderForCloud-DefenderForServers")["PolicyNames"]:
        iam.delete_role_policy(RoleName="DefenderForCloud-DefenderForServers", PolicyName=name)
    iam.delete_role(RoleName="DefenderForCloud-DefenderForServers")
    detection = cf.detect_stack_drift(StackName="s")["StackDriftDetectionId"]
    result = cf.describe_stack_drift_detection_status(StackDriftDetectionId=detection)
    assert result["StackDriftStatus"] == "DRIFTED" and result["DriftedStackResourceCount"] == 2
    drifts = cf.describe_stack_resource_drifts(
        StackName="s", StackResourceDriftStatusFilters=["MODIFIED", "DELETED"]
    )
    by_id = {d["LogicalResourceId"]: d for d in drifts["StackResourceDrifts"]}
    assert by_id["DefenderForServersRole"]["StackResourceDriftStatus"] == "DELETED"
    paths = {p["PropertyPath"] for p in by_id["CspmMonitorRole"]["PropertyDifferences"]}
    assert paths == {"/AssumeRolePolicyDocument", "/ManagedPolicyArns"}


def test_drift_aware_change_set_reverts_drift(sandbox: Sandbox) -> None:
    create(sandbox)
    cf, iam = aws_client(sandbox, "cloudformation"), aws_client(sandbox, "iam")
    iam.detach_role_policy(RoleName="CspmMonitorAws", PolicyArn="arn:aws:iam::aws:policy/ReadOnlyAccess")
    for name in iam.list_role_policies(RoleName="DefenderForCloud-DefenderForServers")["PolicyNames"]:
        iam.delete_role_policy(RoleName="DefenderForCloud-DefenderForServers", PolicyName=name)
    iam.delete_role(RoleName="DefenderForCloud-DefenderForServers")
    change_set = cf.create_change_set(
        StackName="s",
        ChangeSetName="repair",
        ChangeSetType="UPDATE",
        UsePreviousTemplate=True,
        DeploymentMode="REVERT_DRIFT",
        Parameters=[{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}],
        Capabilities=NAMED_IAM,
    )["Id"]
    assert cf.describe_change_set(ChangeSetName=change_set)["Status"] == "CREATE_COMPLETE"
    cf.execute_change_set(ChangeSetName=change_set)
    wait_for(lambda: status(sandbox, "s") == "UPDATE_COMPLETE", 10, "UPDATE_COMPLETE")
    assert iam.list_attached_role_policies(RoleName="CspmMonitorAws")["AttachedPolicies"]
    assert iam.get_role(RoleName="DefenderForCloud-DefenderForServers")["Role"]
    detection = cf.detect_stack_drift(StackName="s")["StackDriftDetectionId"]
    assert (
        cf.describe_stack_drift_detection_status(StackDriftDetectionId=detection)["StackDriftStatus"]
        == "IN_SYNC"
    )


def test_an_update_that_meets_a_role_deleted_by_hand_fails_its_rollback_until_the_role_is_skipped(
    sandbox: Sandbox,
) -> None:
    """CloudFormation cannot update a role someone deleted, nor put it back in the rollback: the stack is left
    UPDATE_ROLLBACK_FAILED and refuses updates (User Guide, troubleshooting, "Update rollback failed"), until
    ContinueUpdateRollback skips the role (API_ContinueUpdateRollback.html), whose drift is then NOT_CHECKED
    (API_StackResourceDrift.html). A drift-aware change set reads the live roles, so one with the new template makes
    the role again and updates the rest. moto raised the role's error from UpdateStack instead."""
    create(sandbox)
    cf, iam = aws_client(sandbox, "cloudformation"), aws_client(sandbox, "iam")
    keep = [{"ParameterKey": "OidcProviderArn", "UsePreviousValue": True}]
    delete_role_by_hand(iam, "CspmMonitorAws")
    least = template(access="LeastPrivilege")  # changes CspmMonitorRole, among others
    cf.update_stack(StackName="s", TemplateBody=least, Parameters=keep, Capabilities=NAMED_IAM)
    wait_for(lambda: status(sandbox, "s") == "UPDATE_ROLLBACK_FAILED", 30, "UPDATE_ROLLBACK_FAILED")
    events = cf.describe_stack_events(StackName="s")["StackEvents"]  # newest first
    failed = [e for e in events if e["ResourceStatus"] == "UPDATE_FAILED"]
    assert [(e["LogicalResourceId"], e["PhysicalResourceId"]) for e in failed] == [
        ("CspmMonitorRole", "CspmMonitorAws"),  # its rollback
        ("CspmMonitorRole", "CspmMonitorAws"),  # its update
    ]
    with pytest.raises(ClientError) as refused:
        cf.update_stack(StackName="s", TemplateBody=least, Parameters=keep, Capabilities=NAMED_IAM)
    assert "UPDATE_ROLLBACK_FAILED state and can not be updated" in refused.value.response["Error"]["Message"]
    with pytest.raises(ClientError):  # only what failed may be skipped
        cf.continue_update_rollback(StackName="s", ResourcesToSkip=["DefenderForServersRole"])
    with pytest.raises(ClientError):  # nor may the stack be changed through a change set
        cf.create_change_set(
            StackName="s",
            ChangeSetName="no",
            ChangeSetType="UPDATE",
            TemplateBody=least,
            Parameters=keep,
            Capabilities=NAMED_IAM,
        )
    cf.continue_update_rollback(StackName="s", ResourcesToSkip=["CspmMonitorRole"], ClientRequestToken="t1")
    wait_for(lambda: status(sandbox, "s") == "UPDATE_ROLLBACK_COMPLETE", 30, "UPDATE_ROLLBACK_COMPLETE")
    # a retry of the same request (its response lost) is answered as the request was, and changes nothing
    cf.continue_update_rollback(StackName="s", ResourcesToSkip=["CspmMonitorRole"], ClientRequestToken="t1")
    with pytest.raises(ClientError):  # a new request: the stack's rollback is no longer failed
        cf.continue_update_rollback(
            StackName="s", ResourcesToSkip=["CspmMonitorRole"], ClientRequestToken="t2"
        )
    detection = cf.detect_stack_drift(StackName="s")["StackDriftDetectionId"]
    assert (
        cf.describe_stack_drift_detection_status(StackDriftDetectionId=detection)["StackDriftStatus"]
        == "IN_SYNC"
    )
    skipped = cf.describe_stack_resource_drifts(StackName="s")["StackResourceDrifts"]
    assert {d["LogicalResourceId"]: d["StackResourceDriftStatus"] for d in skipped}["CspmMonitorRole"] == (
        "NOT_CHECKED"
    )
    change_set = cf.create_change_set(
        StackName="s",
        ChangeSetName="update-and-repair",
        ChangeSetType="UPDATE",
        TemplateBody=least,
        DeploymentMode="REVERT_DRIFT",
        Parameters=keep,
        Capabilities=NAMED_IAM,
        Tags=[{"Key": "t", "Value": "least"}],
    )["Id"]
    other = cf.create_change_set(
        StackName="s",
        ChangeSetName="other",
        ChangeSetType="UPDATE",
        TemplateBody=least,
        Parameters=keep,
        Capabilities=NAMED_IAM,
    )["Id"]
    cf.execute_change_set(ChangeSetName=change_set)
    wait_for(lambda: status(sandbox, "s") == "UPDATE_COMPLETE", 30, "UPDATE_COMPLETE")
    with pytest.raises(ClientError) as executed:  # once is all
        cf.execute_change_set(ChangeSetName=change_set)
    assert executed.value.response["Error"]["Code"] == "InvalidChangeSetStatus"
    with pytest.raises(ClientError):  # the stack's other change sets are deleted (API_ExecuteChangeSet.html)
        cf.describe_change_set(ChangeSetName=other)
    stack = cf.describe_stacks(StackName="s")["Stacks"][0]
    assert stack["Tags"] == [{"Key": "t", "Value": "least"}]
    assert cf.get_template(StackName="s")["TemplateBody"] == json.loads(least)
    assert iam.get_role(RoleName="CspmMonitorAws")["Role"]
    detection = cf.detect_stack_drift(StackName="s")["StackDriftDetectionId"]
    assert (
        cf.describe_stack_drift_detection_status(StackDriftDetectionId=detection)["StackDriftStatus"]
        == "IN_SYNC"
    )


def test_boto3_standard_retries_recover_from_throttling_through_the_proxy(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    assert sandbox.aws_endpoint
    proxy = emulators.start_proxy(tmp_path, "aws-proxy", sandbox.aws_endpoint, "aws")
    try:
        emulators.control(proxy, "/_proxy/faults", {"pathPattern": "ListRoles", "count": 2, "status": 400})
        emulators.control(
            proxy, "/_proxy/faults", {"pathPattern": "GetCallerIdentity", "count": 1, "drop": True}
        )
        iam = aws_client(sandbox, "iam", endpoint=proxy)
        response = iam.list_roles()
        assert response["ResponseMetadata"]["RetryAttempts"] == 2
        identity = aws_client(sandbox, "sts", endpoint=proxy).get_caller_identity()
        assert identity["Account"] == emulators.SANDBOX_ACCOUNT
        stats = emulators.control(proxy, "/_proxy/stats", method="GET")
        assert stats["faulted"] == 3
    finally:
        processes.stop_recorded(tmp_path)


def test_eks_access_entries_follow_the_authentication_mode(sandbox: Sandbox) -> None:
    """EKS as its API reference says: CONFIG_MAP by default and then no access entry API at all; the mode moves one
    way; a principal has one entry; the creator's bootstrap entry; lists are paged."""
    eks = aws_client(sandbox, "eks")
    account = aws_client(sandbox, "sts").get_caller_identity()["Account"]
    vpc: dict[str, Any] = {"subnetIds": []}
    eks.create_cluster(name="legacy", roleArn="arn:aws:iam::123456789012:role/eks", resourcesVpcConfig=vpc)
    eks.create_cluster(
        name="modern",
        roleArn="arn:aws:iam::123456789012:role/eks",
        resourcesVpcConfig=vpc,
        accessConfig={"authenticationMode": "API"},
    )
    assert (
        eks.describe_cluster(name="legacy")["cluster"]["accessConfig"]["authenticationMode"] == "CONFIG_MAP"
    )
    with pytest.raises(ClientError) as refused:
        eks.list_access_entries(clusterName="legacy")
    assert refused.value.response["Error"]["Code"] == "InvalidRequestException"
    assert "authentication mode" in refused.value.response["Error"]["Message"]
    (creator,) = eks.list_access_entries(clusterName="modern")["accessEntries"]  # bootstrap admin entry
    role = f"arn:aws:iam::{account}:role/MDCContainersAgentlessDiscoveryK8sRole"
    created = eks.create_access_entry(clusterName="modern", principalArn=role, tags={"owner": "me"})[
        "accessEntry"
    ]
    assert created["accessEntryArn"].startswith(
        f"arn:aws:eks:us-east-1:{account}:access-entry/modern/role/{account}/MDCContainersAgentlessDiscoveryK8sRole/"
    )
    with pytest.raises(ClientError) as twice:
        eks.create_access_entry(clusterName="modern", principalArn=role)
    assert twice.value.response["Error"]["Code"] == "ResourceInUseException"
    policy = "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
    eks.associate_access_policy(
        clusterName="modern", principalArn=role, policyArn=policy, accessScope={"type": "cluster"}
    )
    listed = eks.list_associated_access_policies(clusterName="modern", principalArn=role)
    assert [p["policyArn"] for p in listed["associatedAccessPolicies"]] == [policy]
    assert eks.describe_access_entry(clusterName="modern", principalArn=role)["accessEntry"]["tags"] == {
        "owner": "me"
    }
    first = eks.list_access_entries(clusterName="modern", maxResults=1)
    second = eks.list_access_entries(clusterName="modern", maxResults=1, nextToken=first["nextToken"])
    assert first["accessEntries"] + second["accessEntries"] == [creator, role] and "nextToken" not in second
    with pytest.raises(ClientError) as backwards:
        eks.update_cluster_config(name="modern", accessConfig={"authenticationMode": "CONFIG_MAP"})
    assert backwards.value.response["Error"]["Code"] == "InvalidParameterException"
    eks.update_cluster_config(name="legacy", accessConfig={"authenticationMode": "API_AND_CONFIG_MAP"})
    assert eks.list_access_entries(clusterName="legacy")["accessEntries"] == []
    eks.delete_access_entry(clusterName="modern", principalArn=role)
    assert eks.list_access_entries(clusterName="modern")["accessEntries"] == [creator]


def test_a_delegated_administrator_runs_the_management_accounts_stacksets(sandbox: Sandbox) -> None:
    """CloudFormation User Guide, stacksets-orgs-delegated-admin.html, and API_CreateStackSet.html (``CallAs``): a
    registered delegated administrator creates and deploys service-managed StackSets with ``CallAs:
    DELEGATED_ADMIN``; they live in the management account. Unregistered, without the caller's
    ``organizations:ListDelegatedAdministrators``, or without ``CallAs``, AWS refuses (sandbox/aws/delegated_admin.py)."""
    management = "500012345678"
    organizations, root, members = _organization(sandbox, management, "d", 2)
    delegate = members[0]
    cf = aws_in(sandbox, delegate, "cloudformation")
    body = json.dumps({"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}})
    as_admin = {"CallAs": "DELEGATED_ADMIN"}

    def refusal(call: Any, **kwargs: Any) -> str:
        with pytest.raises(ClientError) as info:
            call(**kwargs)
        assert info.value.response["Error"]["Code"] == "ValidationError", info.value.response
        return str(info.value.response["Error"]["Message"])

    create = {"StackSetName": "delegated", "TemplateBody": body, "PermissionModel": "SERVICE_MANAGED"}
    assert "must be the management account or delegated admin" in refusal(cf.create_stack_set, **create)
    assert (
        refusal(cf.create_stack_set, **create, **as_admin) == "Account used is not a delegated administrator"
    )

    organizations.register_delegated_administrator(
        AccountId=delegate, ServicePrincipal="member.org.stacksets.cloudformation.amazonaws.com"
    )
    # a delegated administrator reads the organization as the management account does
    listed = aws_in(sandbox, delegate, "organizations").list_accounts_for_parent(ParentId=root)["Accounts"]
    assert sorted(a["Id"] for a in listed) == sorted([management, *members])
    arn = cf.create_stack_set(**create, **as_admin)["StackSetId"]
    cf.create_stack_instances(
        StackSetName="delegated",
        DeploymentTargets={"OrganizationalUnitIds": [root]},
        Regions=["us-east-1"],
        **as_admin,
    )
    described = cf.describe_stack_set(StackSetName="delegated", **as_admin)["StackSet"]
    assert described["StackSetId"] == arn and f":{management}:stackset/" in described["StackSetARN"]
    own = aws_in(sandbox, management, "cloudformation").describe_stack_set(StackSetName="delegated")
    assert own["StackSet"]["StackSetId"] == arn  # it lives in the management account
    with pytest.raises(ClientError) as info:
        cf.describe_stack_set(StackSetName="delegated")  # CallAs SELF: the delegate's own account has none
    assert info.value.response["Error"]["Code"] == "StackSetNotFoundException"
    instances = cf.list_stack_instances(StackSetName="delegated", **as_admin)["Summaries"]
    assert sorted(i["Account"] for i in instances) == sorted(members)

    # The caller needs organizations:ListDelegatedAdministrators, which CloudFormation reads with its permissions.
    administrator(sandbox, delegate)
    iam = aws_in(sandbox, delegate, "iam")
    ensure_role(iam, "stacksets-only")
    allow = {"Effect": "Allow", "Action": ["cloudformation:*"], "Resource": "*"}
    iam.put_role_policy(
        RoleName="stacksets-only",
        PolicyName="p",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow]}),
    )
    enforce(sandbox, delegate)
    try:
        limited = assumed(sandbox, f"arn:aws:iam::{delegate}:role/stacksets-only", "cloudformation")
        assert (
            refusal(limited.describe_stack_set, StackSetName="delegated", **as_admin)
            == "Account used is not a delegated administrator"
        )
        allow["Action"] = ["cloudformation:*", "organizations:ListDelegatedAdministrators"]
        iam.put_role_policy(
            RoleName="stacksets-only",
            PolicyName="p",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow]}),
        )
        assert (
            limited.describe_stack_set(StackSetName="delegated", **as_admin)["StackSet"]["StackSetId"] == arn
        )
    finally:
        enforce(sandbox)


def test_instances_whose_profile_lets_the_ssm_agent_register_are_managed_nodes(sandbox: Sandbox) -> None:
    """Systems Manager User Guide, setup-instance-permissions.html: the agent registers a node with its instance
    profile's permissions (AmazonSSMManagedInstanceCore); moto has no DescribeInstanceInformation
    (sandbox/aws/ssm_fixes.py). Paged by MaxResults and NextToken."""
    account = "600011112222"
    instance_profile(sandbox, account, "ssm-core", "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore")
    instance_profile(sandbox, account, "nothing", None)
    managed = sorted(ec2_instance(sandbox, account, "ssm-core") for _ in range(6))
    others = [ec2_instance(sandbox, account, "nothing"), ec2_instance(sandbox, account)]
    ssm = aws_in(sandbox, account, "ssm")
    first = ssm.describe_instance_information(MaxResults=5)
    rest = ssm.describe_instance_information(MaxResults=5, NextToken=first["NextToken"])
    assert "NextToken" not in rest
    listed = [i["InstanceId"] for page in (first, rest) for i in page["InstanceInformationList"]]
    assert sorted(listed) == managed and not set(others) & set(listed)
    aws_in(sandbox, account, "ec2").stop_instances(InstanceIds=managed[:1])
    nodes = ssm.describe_instance_information()["InstanceInformationList"]
    assert sorted(i["InstanceId"] for i in nodes) == managed[1:]


def test_a_role_just_made_is_refused_by_sts_until_iam_has_propagated_it(sandbox: Sandbox) -> None:
    """IAM is eventually consistent (sandbox/aws/propagation.py): with iamPropagationSeconds set, AssumeRole of a role
    younger than that is refused with STS's AccessDenied, and the same role is assumable once it is old enough."""
    account = "210987654321"
    iam = aws_in(sandbox, account, "iam")
    aws_control(sandbox, "/_sandbox/config", {"iamPropagationSeconds": 10})
    try:
        made = time.monotonic()
        ensure_role(iam, "just-made")
        role = f"arn:aws:iam::{account}:role/just-made"
        with pytest.raises(ClientError) as refused:
            assumed(sandbox, role, "sts")
        error = refused.value.response["Error"]
        assert error["Code"] == "AccessDenied", error
        assert f"sts:AssumeRole on resource: {role}" in error["Message"], error

        def assumable() -> bool:
            try:
                assumed(sandbox, role, "sts")
            except ClientError:
                return False
            return True

        wait_for(assumable, 60, "the role assumable once IAM has propagated it")
        assert time.monotonic() - made >= 9
    finally:  # every later test of this sandbox makes roles and assumes them at once (test_least_privilege.py)
        aws_control(sandbox, "/_sandbox/config", {"iamPropagationSeconds": 0})
