"""Organizations (issue 12, first part): the member StackSet reconciled level-triggered, so a kill between creating the
StackSet and deploying it is repaired; every list read to its last page; a busy StackSet retried, not terminal."""

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render.catalog import catalog, catalog_version
from defender_operator.render.cloudformation import member_template
from defender_operator.sandbox import Sandbox
from tests.support import organization_scenario
from tests.support.account_admin import enforce, operator_role
from tests.support.clouds import arm_client, arm_control, aws_control, connector_url, send
from tests.support.gitops import health
from tests.support.kube import apply, condition, get_object, kubectl, wait_for
from tests.support.onboarding import (
    account_of,
    aws_in,
    connector,
    defender_roles,
    delete,
    manifest,
    member_connector,
    reconcile_handled,
    request_reconcile,
    stacks_of,
)
from tests.support.operator import OperatorProcess, module_operator, wait_condition, wait_gone

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "organizations-operator") as running:
        yield running


def organization(sandbox: Sandbox, namespace: str, members: int = 3) -> tuple[dict[str, Any], list[str]]:
    """A management account with an OU of ``members`` accounts (one of them in a child OU), and its manifest."""
    m = manifest(namespace, "org")
    organizations = aws_in(sandbox, account_of(m), "organizations")
    organizations.create_organization(FeatureSet="ALL")
    root = organizations.list_roots()["Roots"][0]["Id"]
    ou = organizations.create_organizational_unit(ParentId=root, Name="workloads")["OrganizationalUnit"]["Id"]
    child = organizations.create_organizational_unit(ParentId=ou, Name="team")["OrganizationalUnit"]["Id"]
    accounts = []
    for i in range(members):
        status = organizations.create_account(Email=f"m{i}@example.com", AccountName=f"m{i}")[
            "CreateAccountStatus"
        ]
        account = organizations.describe_create_account_status(CreateAccountRequestId=status["Id"])[
            "CreateAccountStatus"
        ]["AccountId"]
        organizations.move_account(
            AccountId=account, SourceParentId=root, DestinationParentId=child if i else ou
        )
        accounts.append(account)
    m["spec"]["aws"]["organization"] = {"organizationalUnitIds": [ou]}
    return m, accounts


def member_accounts(kubeconfig: Path, namespace: str) -> int:
    obj = get_object(kubeconfig, namespace, "org") or {}
    return int(obj.get("status", {}).get("organization", {}).get("memberAccounts", -1))


def test_a_kill_between_creating_and_deploying_the_stackset_is_repaired(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, members = organization(sandbox, namespace)
    aws_control(
        sandbox, "/_sandbox/config", {"pageSize": 1}
    )  # one instance per page: every page must be read
    try:
        operator.kill_after("aws", "CreateStackSet")
        assert apply(kubeconfig, m).returncode == 0
        wait_for(lambda: not operator.record or not operator.record.alive(), 60, "the operator to be killed")
        operator.start()
        obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
        assert obj["status"]["organization"]["memberAccounts"] == len(members)  # not "deployed to 0"
        for member in members:  # the child OU's account too
            assert "CspmMonitorAws" in defender_roles(sandbox, member)
        # and it says which catalog it is on (the killed pass recorded no template for the StackSet: seed 41028)
        wait_for(
            lambda: ((get_object(kubeconfig, namespace, "org") or {}).get("status") or {}).get("catalog"),
            30,
            "status.catalog",
        )
        assert get_object(kubeconfig, namespace, "org")["status"]["catalog"]["version"] == catalog_version()
    finally:
        aws_control(sandbox, "/_sandbox/config", {"pageSize": 100})
    delete(kubeconfig, namespace, "org")
    for member in members:
        assert defender_roles(sandbox, member) == []


def test_a_stackset_creation_whose_answer_was_lost_makes_one_stackset_and_it_goes_with_the_object(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The campaign's seed 65218: answers to CreateStackSet were lost after it took effect, and the SDK retried it
    with the request's token, which CloudFormation answers as it did the first (API_CreateStackSet.html,
    ClientRequestToken). The emulator made a StackSet per retry, and the object's deletion, which deletes the one
    of its name, left the others. Any retry, the SDK's or the next pass's, must end with one StackSet."""
    m, members = organization(sandbox, namespace, members=1)
    operator.reset_aws_operations()
    operator.inject_aws_fault(pathPattern="CreateStackSet", drop=True, after=True, count=2)
    try:
        assert apply(kubeconfig, m).returncode == 0
        wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    finally:
        operator.clear_aws_faults()
    assert operator.aws_operations().get("CreateStackSet", 0) >= 2  # the lost answer's request was sent again
    cf = aws_in(sandbox, account_of(m), "cloudformation")
    assert len(cf.list_stack_sets(Status="ACTIVE")["Summaries"]) == 1
    delete(kubeconfig, namespace, "org")
    assert cf.list_stack_sets(Status="ACTIVE")["Summaries"] == []
    assert defender_roles(sandbox, members[0]) == []


def test_a_busy_stackset_is_retried_not_stalled(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, members = organization(sandbox, namespace, members=2)
    # CloudFormation refuses while another operation runs (e.g. automatic deployment to a new account).
    operator.inject_aws_fault(
        pathPattern="CreateStackInstances", status=400, code="OperationInProgressException", count=2
    )
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert obj["status"]["organization"]["memberAccounts"] == len(members)
    stalled = condition(obj, "Stalled")
    assert stalled is not None and stalled["status"] == "False"
    assert "StackSetBusy" in operator.log()
    # kubectl get shows the member rollout, not only the management account's Ready (issue 27)
    row = kubectl(
        kubeconfig, "get", "awsc", "-n", namespace, "org", "--no-headers", check=True
    ).stdout.split()
    assert row[6] == f"{len(members)}/{len(members)}", row
    delete(kubeconfig, namespace, "org")


def test_excluding_and_moving_accounts_removes_their_instances(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, members = organization(sandbox, namespace, members=3)
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert member_accounts(kubeconfig, namespace) == 3
    m["spec"]["aws"]["organization"]["excludedAccountIds"] = [members[0]]
    assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: member_accounts(kubeconfig, namespace) == 2, 90, "the excluded account's instance to go")
    assert defender_roles(sandbox, members[0]) == []
    organizations = aws_in(sandbox, account_of(m), "organizations")
    root = organizations.list_roots()["Roots"][0]["Id"]
    parent = organizations.list_parents(ChildId=members[1])["Parents"][0]["Id"]
    organizations.move_account(AccountId=members[1], SourceParentId=parent, DestinationParentId=root)
    request_reconcile(kubeconfig, namespace, "org")
    wait_for(lambda: member_accounts(kubeconfig, namespace) == 1, 90, "the moved account's instance to go")
    assert defender_roles(sandbox, members[1]) == [] and "CspmMonitorAws" in defender_roles(
        sandbox, members[2]
    )
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=60)
    delete(kubeconfig, namespace, "org")
    assert all(defender_roles(sandbox, member) == [] for member in members)


def test_a_closed_member_account_is_detached_and_holds_neither_the_members_nor_the_delete(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """An account its owner closes stays in the organization, CLOSED, for 90 days: StackSets skip it, a deletion of
    its instance fails there (INOPERABLE), and no role reaches into it. The operator used to count it as leaving and
    delete its instance on every deep pass, for ever, and its delete never finished. Now its instance is detached
    (RetainStacks, AWS's way: the stack goes with the account), its provider is not visited, and the delete of the
    object finishes; so too for one moved out of the targeted units (as into a unit for closed accounts), which the
    units' listing does not name and DescribeAccount tells."""
    m, members = organization(sandbox, namespace, members=4)
    m["spec"]["aws"]["organization"]["memberProviderRoleName"] = "DefenderProviderAdmin"
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert member_accounts(kubeconfig, namespace) == 4
    organizations = aws_in(sandbox, account_of(m), "organizations")
    for closing in members[:2]:
        organizations.close_account(AccountId=closing)
    root = organizations.list_roots()["Roots"][0]["Id"]
    parent = organizations.list_parents(ChildId=members[1])["Parents"][0]["Id"]
    organizations.move_account(AccountId=members[1], SourceParentId=parent, DestinationParentId=root)
    enforce(sandbox, *members[:2])  # no role reaches into a closed account
    try:
        request_reconcile(kubeconfig, namespace, "org")
        wait_for(
            lambda: member_accounts(kubeconfig, namespace) == 2, 90, "the closed accounts' instances detached"
        )
        obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=90)
        assert obj["status"]["organization"]["memberProviders"].get("failed", 0) == 0
        removals = operator.aws_operations().get("DeleteStackInstances", 0)
        stamp = request_reconcile(kubeconfig, namespace, "org")  # a deep pass again: nothing left to do
        wait_for(
            lambda: reconcile_handled(kubeconfig, namespace, "org", stamp),
            60,
            "the reconcile request handled",
        )
        assert operator.aws_operations().get("DeleteStackInstances", 0) == removals
        delete(kubeconfig, namespace, "org")
    finally:
        enforce(sandbox)
    assert all(defender_roles(sandbox, member) == [] for member in members[2:])


def test_failing_members_show_beside_ready_and_are_retried_on_request(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, members = organization(sandbox, namespace, members=3)
    iam = aws_in(sandbox, members[1], "iam")
    iam.create_role(  # the member stack cannot create its role there
        RoleName="CspmMonitorAws", AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}'
    )
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(
        kubeconfig, namespace, "org", "MembersReady", "False", timeout=120, reason="MembersFailing"
    )
    organization_status = obj["status"]["organization"]
    assert organization_status["instances"] == {"current": 2, "outdated": 0, "failed": 1, "inoperable": 0}
    (failing,) = organization_status["failingAccounts"]
    assert failing["accountId"] == members[1] and "already exists" in failing["reason"]
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]  # the management account itself
    assert condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
    # where people look: `kubectl get` (the MEMBERS column) and Argo CD's health message
    assert organization_status["progress"] == "2/3"
    table = kubectl(kubeconfig, "get", "awsc", "org", "-n", namespace, check=True).stdout.splitlines()
    assert table[1].split()[table[0].split().index("MEMBERS")] == "2/3", table
    healthy, message = health(obj)
    assert healthy == "Healthy" and "members: MembersFailing" in message, message
    iam.delete_role(RoleName="CspmMonitorAws")  # a person fixes the cause...
    request_reconcile(kubeconfig, namespace, "org")
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert obj["status"]["organization"]["instances"]["current"] == 3
    assert obj["status"]["organization"]["failingAccounts"] == []
    assert obj["status"]["organization"]["progress"] == "3/3"
    delete(kubeconfig, namespace, "org")


def test_status_names_at_most_100_member_connectors_and_counts_them_all(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 25 (Low): status.organization.members grew with the organization, and thousands of members would pass
    the object's size limit (every status write then fails). It names the first 100 (by account id) and counts all,
    read through the list's nextLink pages (the emulator pages by 50)."""
    m, _members = organization(sandbox, namespace, members=1)
    management = account_of(m)
    subscription = str(uuid.uuid4())
    m["spec"]["azure"]["subscriptionId"] = subscription
    arm = arm_client(sandbox)
    accounts = [f"{900000000000 + i}" for i in range(105)]
    for account in accounts:  # the member connectors Defender makes for the organization's accounts
        url = connector_url(f"member-{account}", m["spec"]["azure"]["resourceGroup"], subscription)
        assert send(arm, "PUT", url, member_connector(account, management)).status_code == 201
    assert apply(kubeconfig, m).returncode == 0

    def counted() -> dict[str, Any] | None:
        status = ((get_object(kubeconfig, namespace, "org") or {}).get("status") or {}).get(
            "organization", {}
        )
        return status if status.get("memberConnectors") == 105 else None

    status = wait_for(counted, 120, "the 105 member connectors to be counted")
    assert [member["accountId"] for member in status["members"]] == accounts[:100]
    delete(kubeconfig, namespace, "org")


def test_an_azure_role_on_the_resource_group_alone_onboards_and_reaches_nothing_else(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The operator's Azure role assigned on the connectors' resource group only (azure-setup, docs/production.md):
    ARM refuses the subscription-wide list, so member connectors are counted in that resource group and the status
    says where; a connector in another resource group is refused by ARM and nothing is written there."""
    m, members = organization(sandbox, namespace, members=2)
    management = account_of(m)
    subscription, group = m["spec"]["azure"]["subscriptionId"], m["spec"]["azure"]["resourceGroup"]
    scope = f"/subscriptions/{subscription}/resourceGroups/{group}"
    arm = arm_client(sandbox)
    # Defender's member connectors, one inside the scope, one outside
    placed = [
        connector_url(f"member-{member}", where, subscription)
        for member, where in zip(members, (group, "defender-members"), strict=True)
    ]
    for url, member in zip(placed, members, strict=True):
        assert send(arm, "PUT", url, member_connector(member, management)).status_code == 201
    arm_control(sandbox, "/_sandbox/role-assignments", {"sandbox-operator": [scope]})
    try:
        assert apply(kubeconfig, m).returncode == 0
        wait_condition(kubeconfig, namespace, "org", "Ready", "True", timeout=120)

        def counted() -> dict[str, Any] | None:
            status = ((get_object(kubeconfig, namespace, "org") or {}).get("status") or {}).get(
                "organization", {}
            )
            return status if status.get("memberConnectorScope") else None

        status = wait_for(counted, 30, "the member connectors to be counted")
        assert status["memberConnectorScope"] == scope and status["memberConnectors"] == 1

        elsewhere = manifest(namespace, "elsewhere")
        elsewhere["spec"]["azure"]["resourceGroup"] = "not-granted"
        assert apply(kubeconfig, elsewhere).returncode == 0
        obj = wait_condition(
            kubeconfig, namespace, "elsewhere", "Ready", "False", timeout=120, reason="AzureAccessDenied"
        )
        message = condition(obj, "Ready")["message"]  # type: ignore[index]
        assert "AuthorizationFailed" in message and "/resourceGroups/not-granted/" in message, message
        assert send(arm, "GET", connector_url("elsewhere", "not-granted", subscription)).status_code == 404
        delete(kubeconfig, namespace, "elsewhere")
        delete(kubeconfig, namespace, "org")
    finally:
        arm_control(sandbox, "/_sandbox/role-assignments", {"sandbox-operator": None})
        for url in placed:
            send(arm, "DELETE", url)


def test_failure_tolerance_and_concurrency_reach_the_stackset_operations(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, _ = organization(sandbox, namespace, members=2)
    m["spec"]["aws"]["organization"].update({"failureTolerancePercentage": 10, "maxConcurrentPercentage": 50})
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    cloudformation = aws_in(sandbox, account_of(m), "cloudformation")
    name = m["spec"]["aws"]["organization"].get("stackSetName", "DefenderForCloud-Members")
    operations = cloudformation.list_stack_set_operations(StackSetName=name)["Summaries"]
    assert operations
    for summary in operations:
        operation = cloudformation.describe_stack_set_operation(
            StackSetName=name, OperationId=summary["OperationId"]
        )["StackSetOperation"]
        assert operation["OperationPreferences"] == {
            "FailureTolerancePercentage": 10,
            "MaxConcurrentPercentage": 50,
        }
    delete(kubeconfig, namespace, "org")


def test_members_ciem_role_trusts_the_management_oidc_role_and_a_joining_account_is_onboarded(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """CIEM across an organization (docs/design-decisions.md): members get the CIEM role, trusting the management
    account's CIEM OIDC role, and neither an identity provider of the customer's tenant nor an OIDC role of their own.
    An account that joins a target OU later gets its instance (CloudFormation's automatic deployment, or the
    operator's next deep pass) and shows on status; cleanup removes it too."""
    m, members = organization(sandbox, namespace, members=2)
    tenant = m["spec"]["azure"]["tenantId"]
    m["spec"]["plans"] = {"cspm": {"enabled": True, "ciem": {"enabled": True, "oidcSubject": tenant}}}
    management = account_of(m)
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    oidc_role = f"arn:aws:iam::{management}:role/DefenderForCloud-OidcCiem"
    assert obj["status"]["aws"]["roles"]["ciemOidc"] == oidc_role
    policy = aws_in(sandbox, management, "iam").get_role_policy(
        RoleName="DefenderForCloud-OidcCiem", PolicyName=f"mdc-mciem-oidc-{tenant}-assume"
    )["PolicyDocument"]
    assert policy["Statement"][0]["Resource"] == "arn:aws:iam::*:role/DefenderForCloud-Ciem"
    for member in members:
        iam = aws_in(sandbox, member, "iam")
        trust = iam.get_role(RoleName="DefenderForCloud-Ciem")["Role"]["AssumeRolePolicyDocument"]
        assert trust["Statement"][0]["Principal"] == {"AWS": oidc_role}
        assert "DefenderForCloud-OidcCiem" not in defender_roles(sandbox, member)
        providers = [p["Arn"] for p in iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]]
        assert not [p for p in providers if tenant in p], providers  # no provider of the customer's tenant
    # An account joins the OU
    organizations = aws_in(sandbox, management, "organizations")
    root = organizations.list_roots()["Roots"][0]["Id"]
    ou = m["spec"]["aws"]["organization"]["organizationalUnitIds"][0]
    created = organizations.create_account(Email="late@example.com", AccountName="late")[
        "CreateAccountStatus"
    ]
    late = organizations.describe_create_account_status(CreateAccountRequestId=created["Id"])[
        "CreateAccountStatus"
    ]["AccountId"]
    organizations.move_account(AccountId=late, SourceParentId=root, DestinationParentId=ou)
    request_reconcile(kubeconfig, namespace, "org")
    wait_for(lambda: member_accounts(kubeconfig, namespace) == 3, 90, "the joining account's instance")
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=90)
    assert "DefenderForCloud-Ciem" in defender_roles(sandbox, late)
    # the deployment asked for the joining account alone, not for every account of the unit again
    cf = aws_in(sandbox, management, "cloudformation")
    stack_set = m["spec"]["aws"]["organization"].get("stackSetName", "DefenderForCloud-Members")
    assert cf.describe_stack_set(StackSetName=stack_set)["StackSet"]["AutoDeployment"] == {
        "Enabled": True,
        "RetainStacksOnAccountRemoval": False,
    }
    creates = [
        o
        for o in cf.list_stack_set_operations(StackSetName=stack_set)["Summaries"]
        if o["Action"] == "CREATE"
    ]
    last = max(creates, key=lambda o: o["CreationTimestamp"])
    targets = cf.describe_stack_set_operation(StackSetName=stack_set, OperationId=last["OperationId"])[
        "StackSetOperation"
    ]["DeploymentTargets"]
    assert targets["Accounts"] == [late] and targets["AccountFilterType"] == "INTERSECTION", targets
    delete(kubeconfig, namespace, "org")
    assert all(defender_roles(sandbox, account) == [] for account in [*members, late])


def test_an_existing_provider_in_a_member_account_gets_defenders_audiences_through_the_member_role(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Microsoft Sentinel's provider in one member account: without help the member stack fails there ("already
    exists") or its roles trust a provider without Defender's audiences. With memberProviderRoleName the operator
    adds the audiences through that role (and creates the provider where there is none); an account that leaves
    gets back exactly what it had; delete leaves Sentinel's provider with Sentinel's audience alone."""
    m, members = organization(sandbox, namespace, members=2)
    ms = catalog().microsoft_oidc
    sentinel = "api://1462b192-27f7-4cb9-8523-0f4ecb54b47e"
    shared_iam, own_iam = (aws_in(sandbox, member, "iam") for member in members)
    shared = shared_iam.create_open_id_connect_provider(
        Url=ms.url, ClientIDList=[sentinel], ThumbprintList=ms.thumbprints
    )["OpenIDConnectProviderArn"]
    m["spec"]["aws"]["organization"]["memberProviderRoleName"] = "OrganizationAccountAccessRole"
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert obj["status"]["organization"]["memberProviders"] == {
        "ready": 2,
        "shared": 1,
        "failing": [],
        "failed": 0,
    }
    audiences = shared_iam.get_open_id_connect_provider(OpenIDConnectProviderArn=shared)["ClientIDList"]
    assert set(audiences) == {sentinel, *ms.audiences}
    own = f"arn:aws:iam::{members[1]}:oidc-provider/{ms.host}"
    assert set(own_iam.get_open_id_connect_provider(OpenIDConnectProviderArn=own)["ClientIDList"]) == set(
        ms.audiences
    )
    for member in members:  # the member stacks referenced the providers instead of creating one
        assert "CspmMonitorAws" in defender_roles(sandbox, member)
    # No automatic deployment: an instance CloudFormation made in a joining account before the operator set up its
    # provider would fail (IAM refuses a trust in a provider that does not exist); the deep pass deploys there once
    # the provider is. A StackSet made with it on (by an operator before this choice) is turned off.
    cf = aws_in(sandbox, account_of(m), "cloudformation")
    stack_set = "DefenderForCloud-Members"
    made = cf.describe_stack_set(StackSetName=stack_set)["StackSet"]
    assert made["AutoDeployment"] == {"Enabled": False}
    cf.update_stack_set(
        StackSetName=stack_set,
        TemplateBody=made["TemplateBody"],
        Tags=made["Tags"],
        Capabilities=["CAPABILITY_NAMED_IAM"],
        PermissionModel="SERVICE_MANAGED",
        AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False},
    )
    request_reconcile(kubeconfig, namespace, "org")
    wait_for(
        lambda: (
            cf.describe_stack_set(StackSetName=stack_set)["StackSet"]["AutoDeployment"] == {"Enabled": False}
        ),
        60,
        "automatic deployment turned off again",
    )
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=90)
    m["spec"]["aws"]["organization"]["excludedAccountIds"] = [members[0]]
    assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: member_accounts(kubeconfig, namespace) == 1, 90, "the excluded account's instance to go")
    assert shared_iam.get_open_id_connect_provider(OpenIDConnectProviderArn=shared)["ClientIDList"] == [
        sentinel
    ]
    delete(kubeconfig, namespace, "org")
    assert [p["Arn"] for p in own_iam.list_open_id_connect_providers()["OpenIDConnectProviderList"]] == []
    assert shared_iam.get_open_id_connect_provider(OpenIDConnectProviderArn=shared)["ClientIDList"] == [
        sentinel
    ]
    assert all(defender_roles(sandbox, member) == [] for member in members)


def test_a_member_role_that_does_not_work_shows_on_members_ready_and_recovers(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The named role gives no IAM permission in the member accounts (the emulator authorizes their requests, and
    the role has no policy): MembersReady=False, reason MemberProvidersFailing, naming the accounts and IAM's
    answer; Ready stays True. Once the role works, a requested reconcile sets the providers up."""
    m, members = organization(sandbox, namespace, members=2)
    m["spec"]["aws"]["organization"]["memberProviderRoleName"] = "DefenderProviderAdmin"
    enforce(sandbox, *members)
    try:
        assert apply(kubeconfig, m).returncode == 0
        obj = wait_condition(
            kubeconfig,
            namespace,
            "org",
            "MembersReady",
            "False",
            timeout=120,
            reason="MemberProvidersFailing",
        )
        providers = obj["status"]["organization"]["memberProviders"]
        assert providers["failed"] == 2 and providers["ready"] == 0, providers
        assert {f["accountId"] for f in providers["failing"]} == set(members)
        # no instance where the provider its roles trust is not there (IAM would refuse them): deployed once it is
        assert member_accounts(kubeconfig, namespace) == 0
        assert "DefenderProviderAdmin" in condition(obj, "MembersReady")["message"]  # type: ignore[index]
        assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    finally:
        enforce(sandbox)  # the role works now
    request_reconcile(kubeconfig, namespace, "org")
    wait_for(
        lambda: member_accounts(kubeconfig, namespace) == 2, 90, "the instances, once the providers are there"
    )
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert obj["status"]["organization"]["memberProviders"]["ready"] == 2
    delete(kubeconfig, namespace, "org")
    for member in members:
        assert (
            aws_in(sandbox, member, "iam").list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
        )


def test_a_member_whose_release_failed_as_it_left_is_released_once_its_role_works(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """An account excluded while the member role gave nothing there kept the provider the operator made, and once
    its StackSet instance went nothing visited it again (found attacking the record of member accounts). The
    record's accounts that are no longer wanted are retried on every deep pass."""
    m, members = organization(sandbox, namespace, members=2)
    m["spec"]["aws"]["organization"]["memberProviderRoleName"] = "DefenderProviderAdmin"
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    leaving = members[0]
    enforce(sandbox, leaving)  # the role gives nothing there from now on
    try:
        m["spec"]["aws"]["organization"]["excludedAccountIds"] = [leaving]
        assert apply(kubeconfig, m).returncode == 0
        wait_for(
            lambda: member_accounts(kubeconfig, namespace) == 1, 90, "the excluded account's instance to go"
        )
    finally:
        enforce(sandbox)  # the role works again
    request_reconcile(kubeconfig, namespace, "org")
    wait_for(
        lambda: (
            aws_in(sandbox, leaving, "iam").list_open_id_connect_providers()["OpenIDConnectProviderList"]
            == []
        ),
        90,
        "the provider left in the excluded account to be released",
    )
    delete(kubeconfig, namespace, "org")


def test_delete_releases_member_providers_only_where_it_may_and_one_failing_member_blocks_nothing_else(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 25: cleanup assumed the member role in every active account of the organization (outside the targets
    and so outside the grant too), and one member where the role failed blocked the whole delete for ever. Now only
    the targeted accounts (and those with an instance) are visited; a failing one is named on the object while
    everything else is cleaned up, and the delete finishes once the role works again."""
    m, members = organization(sandbox, namespace, members=2)
    organizations = aws_in(sandbox, account_of(m), "organizations")
    created = organizations.create_account(Email="outside@example.com", AccountName="outside")[
        "CreateAccountStatus"
    ]
    outside = organizations.describe_create_account_status(CreateAccountRequestId=created["Id"])[
        "CreateAccountStatus"
    ]["AccountId"]  # at the root: not in the StackSet's OU
    m["spec"]["aws"]["organization"]["memberProviderRoleName"] = "DefenderProviderAdmin"
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    enforce(sandbox, outside, members[0])  # the role gives nothing there from now on
    try:
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "org", "--wait=false", check=True)
        obj = wait_condition(
            kubeconfig, namespace, "org", "Stalled", "True", reason="CleanupBlocked", timeout=120
        )
        message = condition(obj, "Stalled")["message"]  # type: ignore[index]
        assert members[0] in message and outside not in message and "Orphan" in message
        assert stacks_of(sandbox, account_of(m)) == []  # everything else went
        # members[0] cannot be read from here while the emulator authorizes it
        assert defender_roles(sandbox, members[1]) == []
        released = aws_in(sandbox, members[1], "iam").list_open_id_connect_providers()
        assert released["OpenIDConnectProviderList"] == []
    finally:
        enforce(sandbox)  # the role works again
    wait_gone(kubeconfig, namespace, "org", timeout=60)
    assert (
        aws_in(sandbox, members[0], "iam").list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    )


def test_terraform_for_a_management_account_is_observed_and_never_written(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """deployment.method Terraform for a management account: the user's Terraform makes the roles and the member
    StackSet (done here with the same calls and the rendered template); the operator waits for them, reports the
    members on status and MembersReady, connects Azure, and writes nothing to AWS, not even on delete."""
    m, members = organization(sandbox, namespace, members=2)
    m["spec"]["plans"] = {
        "servers": {"enabled": False},
        "containers": {"enabled": False},
        "databases": {"enabled": False},
    }
    m["spec"]["deployment"] = {"method": "Terraform"}
    management = account_of(m)
    operator.reset_aws_operations()
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "org", "AWSReady", "False", reason="AwaitingTerraform", timeout=60)
    # terraform apply
    aws_in(sandbox, management, "iam").create_role(
        RoleName="CspmMonitorAws",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    request_reconcile(kubeconfig, namespace, "org")
    obj = wait_condition(
        kubeconfig, namespace, "org", "MembersReady", "False", reason="AwaitingTerraform", timeout=60
    )
    assert "StackSet DefenderForCloud-Members does not exist yet" in condition(obj, "MembersReady")["message"]  # type: ignore[index]
    cf = aws_in(sandbox, management, "cloudformation")
    body = member_template(AWSConnectorSpec.model_validate(m["spec"]))
    cf.create_stack_set(
        StackSetName="DefenderForCloud-Members", TemplateBody=json.dumps(body), PermissionModel="SERVICE_MANAGED",
        AutoDeployment={"Enabled": True, "RetainStacksOnAccountRemoval": False}, Capabilities=["CAPABILITY_NAMED_IAM"],
    )  # fmt: skip
    cf.create_stack_instances(
        StackSetName="DefenderForCloud-Members",
        DeploymentTargets={
            "OrganizationalUnitIds": m["spec"]["aws"]["organization"]["organizationalUnitIds"]
        },
        Regions=["us-east-1"],
    )
    request_reconcile(kubeconfig, namespace, "org")
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=90)
    assert obj["status"]["organization"]["memberAccounts"] == 2
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    delete(kubeconfig, namespace, "org")
    writes = {
        op for op in operator.aws_operations() if not op.startswith(("Describe", "Get", "List", "AssumeRole"))
    }
    assert writes == set(), writes  # Terraform's StackSet and roles are Terraform's
    assert cf.describe_stack_set(StackSetName="DefenderForCloud-Members")["StackSet"]["Status"] == "ACTIVE"
    for member in members:
        assert "CspmMonitorAws" in defender_roles(sandbox, member)


@pytest.mark.parametrize(
    "call", ["CreateStackInstances", "UpdateStackSet", "DeleteStackInstances", "DeleteStackSet"]
)
def test_a_kill_right_after_a_stackset_write_is_repaired(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str, call: str
) -> None:
    """The operator dies right after each kind of StackSet write took effect (before it recorded the operation):
    after a restart the StackSet converges all the same (deploy, template update, an exclusion, delete)."""
    m, members = organization(sandbox, namespace, members=2)
    m["spec"]["plans"] = {
        "servers": {"enabled": False},
        "containers": {"enabled": False},
        "databases": {"enabled": False},
    }
    if call == "CreateStackInstances":
        operator.kill_after("aws", call)
    assert apply(kubeconfig, m).returncode == 0
    if call != "CreateStackInstances":
        wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
        operator.kill_after("aws", call)
        if call == "UpdateStackSet":
            m["spec"]["plans"]["cspm"] = {"enabled": True}
        elif call == "DeleteStackInstances":
            m["spec"]["aws"]["organization"]["excludedAccountIds"] = [members[0]]
        if call == "DeleteStackSet":
            kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "org", "--wait=false", check=True)
        else:
            assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: not operator.record or not operator.record.alive(), 60, "the operator to be killed")
    operator.start()
    if call == "DeleteStackSet":
        wait_gone(kubeconfig, namespace, "org", timeout=120)
    else:
        wanted = 1 if call == "DeleteStackInstances" else 2
        wait_for(lambda: member_accounts(kubeconfig, namespace) == wanted, 120, f"{wanted} member accounts")
        obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
        assert obj["status"]["organization"]["instances"]["current"] == wanted
        if call == "UpdateStackSet":
            assert all("DefenderForCloud-AgentlessScanner" in defender_roles(sandbox, a) for a in members)
        if call == "DeleteStackInstances":
            assert defender_roles(sandbox, members[0]) == []
        delete(kubeconfig, namespace, "org")
    assert all(defender_roles(sandbox, member) == [] for member in members)
    cf = aws_in(sandbox, account_of(m), "cloudformation")
    summaries = cf.list_stack_sets()["Summaries"]  # moto ignores the Status filter
    assert [s["StackSetName"] for s in summaries if s["Status"] == "ACTIVE"] == []


def test_killed_right_after_adding_audiences_to_a_member_provider(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The operator dies right after the first audience reached a member account's existing provider: the user tag
    written before it lets the restarted operator finish and, on delete, take back exactly what it added."""
    m, members = organization(sandbox, namespace, members=1)
    ms = catalog().microsoft_oidc
    sentinel = "api://1462b192-27f7-4cb9-8523-0f4ecb54b47e"
    iam = aws_in(sandbox, members[0], "iam")
    shared = iam.create_open_id_connect_provider(
        Url=ms.url, ClientIDList=[sentinel], ThumbprintList=ms.thumbprints
    )["OpenIDConnectProviderArn"]
    m["spec"]["aws"]["organization"]["memberProviderRoleName"] = "OrganizationAccountAccessRole"
    operator.kill_after("aws", "AddClientIDToOpenIDConnectProvider")
    assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: not operator.record or not operator.record.alive(), 60, "the operator to be killed")
    half = iam.get_open_id_connect_provider(OpenIDConnectProviderArn=shared)["ClientIDList"]
    assert sentinel in half and 1 < len(half) < 1 + len(ms.audiences), half  # killed half-way
    operator.start()
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
    assert obj["status"]["organization"]["memberProviders"]["shared"] == 1
    assert set(iam.get_open_id_connect_provider(OpenIDConnectProviderArn=shared)["ClientIDList"]) == {
        sentinel,
        *ms.audiences,
    }
    delete(kubeconfig, namespace, "org")
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=shared)["ClientIDList"] == [sentinel]


DELEGATION = "member.org.stacksets.cloudformation.amazonaws.com"


def test_a_delegated_administrator_onboards_the_members_and_writes_nothing_in_the_management_account(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 28, build 4: with organization.delegatedAdministratorAccountId the operator signs in to that member
    account, under the documented delegated-administrator policy alone (the emulator authorizes every request
    there), runs the member StackSet with CallAs DELEGATED_ADMIN (it lives in the management account), connects
    Azure for the management account, and writes nothing in the management account, on create or on delete. Until
    the account is registered, the object is Stalled saying how to register it."""
    m, members = organization(sandbox, namespace, members=2)
    management, delegate = account_of(m), members[0]
    m["spec"]["aws"]["organization"]["delegatedAdministratorAccountId"] = delegate
    m["spec"]["aws"]["credentials"] = {"roleArn": f"arn:aws:iam::{delegate}:role/defender-onboarding"}
    operator_role(sandbox, delegate, "operator-iam-policy-delegated-admin.json")
    management_cf = aws_in(sandbox, management, "cloudformation")
    operator.reset_aws_operations()
    enforce(sandbox, delegate)
    try:
        assert apply(kubeconfig, m).returncode == 0
        obj = wait_condition(
            kubeconfig, namespace, "org", "Stalled", "True", reason="NotDelegatedAdministrator", timeout=60
        )
        assert "register-delegated-administrator" in condition(obj, "Stalled")["message"]  # type: ignore[index]
        aws_in(sandbox, management, "organizations").register_delegated_administrator(
            AccountId=delegate, ServicePrincipal=DELEGATION
        )
        # the delegate runs its own organization's StackSets only: another accountId is refused before any write
        impostor = copy.deepcopy(m)
        impostor["metadata"]["name"], impostor["spec"]["aws"]["accountId"] = "impostor", "777766665555"
        assert apply(kubeconfig, impostor).returncode == 0
        obj = wait_condition(kubeconfig, namespace, "impostor", "Stalled", "True", reason="AccountMismatch")
        assert f"management account {management}" in condition(obj, "Stalled")["message"]  # type: ignore[index]
        delete(kubeconfig, namespace, "impostor")
        request_reconcile(kubeconfig, namespace, "org")
        obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=120)
        assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
        assert condition(obj, "AWSReady")["reason"] == "DelegatedAdministrator"  # type: ignore[index]
        stack_set = management_cf.describe_stack_set(StackSetName="DefenderForCloud-Members")["StackSet"]
        assert obj["status"]["organization"]["stackSetId"] == stack_set["StackSetId"]
        assert obj["status"]["organization"]["memberAccounts"] == len(members)
        for member in members:
            assert "CspmMonitorAws" in defender_roles(sandbox, member)
        body = json.dumps(connector(sandbox, m).json())
        assert f"arn:aws:iam::{management}:role/CspmMonitorAws" in body and f"::{delegate}:role/" not in body
        # the member StackSet, all the operator writes here, says which catalog the object is on (the rollout's)
        wait_for(
            lambda: ((get_object(kubeconfig, namespace, "org") or {}).get("status") or {}).get("catalog"),
            60,
            "status.catalog",
        )
        assert get_object(kubeconfig, namespace, "org")["status"]["catalog"] == {"version": catalog_version()}
        delete(kubeconfig, namespace, "org")
    finally:
        enforce(sandbox)
    active = management_cf.list_stack_sets(Status="ACTIVE")["Summaries"]
    assert [s["StackSetName"] for s in active] == []
    for member in members:
        assert "CspmMonitorAws" not in defender_roles(sandbox, member)
    assert stacks_of(sandbox, management) == [] and defender_roles(sandbox, management) == []
    providers = aws_in(sandbox, management, "iam").list_open_id_connect_providers()[
        "OpenIDConnectProviderList"
    ]
    assert providers == []
    writes = {
        op for op in operator.aws_operations() if not op.startswith(("Describe", "Get", "List", "AssumeRole"))
    }
    assert writes == {"CreateStackSet", "CreateStackInstances", "DeleteStackInstances", "DeleteStackSet"}, (
        writes
    )


def test_an_organization_of_300_accounts_in_20_ous(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """At the size of real organizations: 300 member accounts in 20 OUs through onboarding, exclusions, moves,
    failures, a joining account and delete, the status and the member accounts checked at each step
    (tests/support/organization_scenario.py; `python -m bench.organization` runs it for its figures)."""
    management = account_of(manifest(namespace))  # a fresh account for the management account
    steps = organization_scenario.run(
        sandbox, operator, kubeconfig, namespace, management, accounts=300, ous=20
    )
    assert [s["step"] for s in steps] == [
        "onboard",
        "exclude 10",
        "move 20 out",
        "5 fail",
        "1 joins",
        "delete",
    ]
