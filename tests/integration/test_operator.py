"""The operator end to end: a real process, a real API server, moto and the ARM emulator, driven with kubectl."""

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from defender_operator.api.names import ANNOTATION_PAUSED, FINALIZER
from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.aws.stack import HASH_TAG
from defender_operator.render import render
from defender_operator.sandbox import Sandbox
from tests.support.account_admin import ec2_instance, instance_profile
from tests.support.checks import schema_errors
from tests.support.clouds import (
    TENANT,
    arm_client,
    arm_control,
    arm_requests,
    aws_control,
    connector_url,
    delete_role_by_hand,
    send,
)
from tests.support.kube import (
    apply,
    changes_between,
    condition,
    get_object,
    kubectl,
    list_version,
    wait_for,
)
from tests.support.onboarding import (
    MS_PROVIDER,
    account_of,
    aws_in,
    connector,
    defender_roles,
    delete,
    drift_checked,
    manifest,
    member_connector,
    onboarded,
    organization_ou,
    reconcile_handled,
    request_reconcile,
    stacks_of,
)
from tests.support.operator import (
    STACK_PENDING,
    OperatorProcess,
    connector_puts,
    events,
    module_operator,
    set_health,
    wait_condition,
    wait_events,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def operator(sandbox: Sandbox, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    with module_operator(sandbox, tmp_path_factory, "operator") as running:
        yield running


def test_create_reaches_ready_with_the_right_stack_roles_and_connector(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace)
    operator.reset_aws_operations()
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    calls = operator.aws_operations()
    # No read a first onboarding can do without: the identity provider and the stack are created without a read
    # first (an existing one would be refused by IAM or CloudFormation, then looked at), and the stack is described
    # once, complete, after.
    assert (calls.get("CreateStack"), calls.get("DescribeStacks")) == (1, 1), calls
    assert "GetOpenIDConnectProvider" not in calls, (
        calls
    )  # nor the provider: created, then recorded in status
    account = account_of(m)
    status = obj["status"]
    assert obj["metadata"]["finalizers"] == [FINALIZER]
    # Kopf keeps no copy of the spec in an annotation (no creation or update handler needs one): a write less.
    assert not [k for k in obj["metadata"].get("annotations", {}) if "last-handled" in k], obj["metadata"]
    assert status["aws"]["stackStatus"] == "CREATE_COMPLETE"
    # A stack just made from the template is not checked for drift (one call and one pass less to Ready).
    assert status["aws"]["lastDriftCheck"] and "driftDetectionId" not in status["aws"], status["aws"]
    assert status["aws"]["oidcProvider"] == {
        "arn": f"arn:aws:iam::{account}:oidc-provider/{MS_PROVIDER}",
        "owned": True,
        "addedAudiences": [],
    }
    assert set(status["aws"]["roles"]) == {
        "cspmMonitor",
        "agentlessScanner",
        "defenderForServers",
        "arcAutoProvisioning",
        "ssmAutomation",
        "containersK8s",
        "dataCollection",
        "cloudWatchToKinesis",
        "kinesisToS3",
        "k8sAgentlessDiscovery",
        "imageAssessment",
        "databasesDspm",
        "databasesThreatProtection",
    }
    (stack,) = stacks_of(sandbox, account)
    spec = AWSConnectorSpec.model_validate(m["spec"])
    tags = {t["Key"]: t["Value"] for t in stack["Tags"]}
    assert tags["defender-operator-template-hash"] == render(spec).cloudformation.sha256
    iam = aws_in(sandbox, account, "iam")
    assert (
        iam.get_role(RoleName="CspmMonitorAws")["Role"]["Arn"]
        == f"arn:aws:iam::{account}:role/CspmMonitorAws"
    )
    live = connector(sandbox, m).json()
    assert live["properties"]["hierarchyIdentifier"] == account
    assert status["azure"]["connectorId"] == live["id"] and status["azure"]["trialEndDate"]
    expected = render(spec).connector.content
    assert {k: live[k] for k in ("location",)} == {"location": expected["location"]}
    assert (
        schema_errors(
            {k: v for k, v in live.items() if k not in ("id", "name", "type", "systemData", "etag", "kind")}
        )
        == []
    )
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True",
        "Reconciling": "False",
        "Stalled": "False",
        "AWSReady": "True",
        "AzureReady": "True",
        "Healthy": "True",
        "Prerequisites": "False",  # the sandbox's subscription has every Defender plan off, as a new one has
    }
    row = kubectl(
        kubeconfig, "get", "awsc", "-n", namespace, "acme", "--no-headers", check=True
    ).stdout.split()
    assert row[1:6] == [account, "4", "CSPM,Servers(P2),Containers,Databases", "True", "Onboarded"]
    delete(kubeconfig, namespace, "acme")


def test_a_new_object_costs_four_writes_and_posts_only_its_warnings_until_it_is_onboarded(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """What a first onboarding writes to the API server: Kopf's finalizer, the OnboardingRecord before each cloud's
    first write (the proof of ownership, docs/design-decisions.md), one status write with the first pass's result (no
    announcement for an object with no status yet), and no Normal Event for what it makes (it used to be ten writes,
    five of them Events). Its Warning is posted (the sandbox's subscription has the Defender plans off), and a change
    to the onboarding, once it exists, is an Event again."""
    since = list_version(kubeconfig, namespace)
    assert apply(kubeconfig, manifest(namespace)).returncode == 0
    ready = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    writes = changes_between(kubeconfig, namespace, "acme", since, ready["metadata"]["resourceVersion"])
    finalized = [FINALIZER in (o["metadata"].get("finalizers") or []) for _, o in writes]
    statuses = [bool(set(o.get("status") or {}) - {"observedGeneration"}) for _, o in writes]  # 0: the CRD's
    assert [t for t, _ in writes] == ["ADDED", "MODIFIED", "MODIFIED"], [
        (
            t,
            o["metadata"].get("finalizers"),
            sorted(o.get("status") or {}),
            [
                (c["type"], c["status"], c.get("reason"))
                for c in (o.get("status") or {}).get("conditions", [])
            ],
        )
        for t, o in writes
    ]
    assert finalized == [False, True, True] and statuses == [False, False, True]
    record = kubectl(
        kubeconfig, "get", "onboardingrecords", ready["metadata"]["uid"], "-o", "json", check=True
    )
    assert (
        json.loads(record.stdout)["metadata"]["generation"] == 2
    )  # made before AWS's write, changed before Azure's
    told = wait_events(kubeconfig, namespace, "acme", {"PrerequisitesMissing"})
    assert [e["reason"] for e in told if e["type"] == "Normal"] == []
    kubectl(kubeconfig, "patch", "awsc", "-n", namespace, "acme", "--type=merge",
            "-p", '{"spec": {"scanIntervalHours": 12}}', check=True)  # fmt: skip
    wait_events(kubeconfig, namespace, "acme", {"ConnectorUpdated"})
    delete(kubeconfig, namespace, "acme")


def test_a_pass_in_sync_makes_no_write_calls(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Between deep checks (deepCheckSeconds), a pass in sync is two reads: DescribeStacks and GET connector."""
    m, _ = onboarded(kubeconfig, namespace)
    request = request_reconcile(
        kubeconfig, namespace, "acme"
    )  # a drift check now, not in the measured passes
    wait_for(lambda: drift_checked(kubeconfig, namespace, request), 30, "a drift check")
    # The AWS calls are counted for the whole operator: earlier tests' objects still being cleaned up (waiting on
    # their stacks' deletion) would be counted too, so they must be gone first.
    wait_for(
        lambda: (
            kubectl(kubeconfig, "get", "awsc", "-A", "-o", "name", check=True).stdout.split()
            == ["awsconnector.defender-operator.io/acme"]
        ),
        120,
        "this object to be the only one the operator reconciles",
    )
    before = get_object(kubeconfig, namespace, "acme")
    # Azure's count first, then AWS's: a pass the two resets split shows its GET alone, and one still running when
    # AWS is read shows its DescribeStacks alone, so a pass of one AWS and one ARM call leaves the two counts at
    # most one apart however the passes fall (a count of AWS alone, before Azure's reached 2, once read 4 to 2);
    # a pass of two AWS calls leaves them n - 2 apart after n passes.
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")
    operator.reset_aws_operations()
    rg = m["spec"]["azure"]["resourceGroup"]

    def mine() -> list[tuple[str, str]]:
        return [
            (r["method"], r["path"].rsplit("/", 1)[-1])
            for r in arm_requests(sandbox)
            if f"/resourceGroups/{rg}/" in r["path"]
        ]

    def four() -> int | None:
        return calls if (calls := len(mine())) >= 4 else None

    arm = wait_for(four, 90, "four resync passes to reach Azure")
    aws = operator.aws_operations()
    assert set(aws) == {"DescribeStacks"}, aws  # no identity, provider or health reads, no writes
    assert set(mine()) == {("GET", "acme")}  # the connector, nothing else
    assert abs(aws["DescribeStacks"] - arm) <= 1, (aws, arm)  # one AWS and one ARM call per pass
    after = get_object(kubeconfig, namespace, "acme")
    assert before is not None and after is not None
    assert after["status"] == before["status"]
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"], (
        "the pass wrote the object"
    )
    delete(kubeconfig, namespace, "acme")


def test_spec_changes_update_stack_and_connector(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, first = onboarded(kubeconfig, namespace)
    m["spec"].update(
        {
            "scanIntervalHours": 12,
            "access": "LeastPrivilege",
            "plans": {"cspm": {"enabled": True}, "containers": {"enabled": False}},
        }
    )
    m["spec"]["aws"]["regions"] = ["eu-west-1", "us-east-1"]
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    assert obj["metadata"]["generation"] == 2 == obj["status"]["observedGeneration"]
    assert obj["status"]["aws"]["templateHash"] != first["status"]["aws"]["templateHash"]
    assert obj["status"]["aws"]["stackStatus"] == "UPDATE_COMPLETE"
    iam = aws_in(sandbox, account_of(m), "iam")
    assert (
        iam.list_attached_role_policies(RoleName="CspmMonitorAws")["AttachedPolicies"] == []
    )  # least privilege
    assert iam.get_role(RoleName="SensitiveDataDiscovery")  # Defender CSPM added a role
    live = connector(sandbox, m).json()["properties"]
    assert live["environmentData"]["scanInterval"] == 12 and live["environmentData"]["regions"] == [
        "eu-west-1",
        "us-east-1",
    ]
    assert {o["offeringType"] for o in live["offerings"]} == {
        "CspmMonitorAws",
        "DefenderCspmAws",
        "DefenderForServersAws",
        "DefenderForDatabasesAws",
    }
    wait_events(kubeconfig, namespace, "acme", {"ConnectorUpdated"})
    delete(kubeconfig, namespace, "acme")


def test_role_names_change_only_when_the_spec_says_so(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """The portal's current names for a new object; a name set in the spec renames the role; taking the name out of
    the spec again keeps the role as it is (status.aws.roleNames), no silent rename back to the default."""
    m, first = onboarded(kubeconfig, namespace)
    assert first["status"]["aws"]["roleNames"]["containersK8s"] == "MDCContainersK8sRole"
    iam = aws_in(sandbox, account_of(m), "iam")
    assert iam.get_role(RoleName="MDCContainersK8sRole")

    def named(name: str) -> bool:
        status = (get_object(kubeconfig, namespace, "acme") or {}).get("status", {})
        ready = condition(get_object(kubeconfig, namespace, "acme"), "Ready") or {}
        return status.get("aws", {}).get("roleNames", {}).get("containersK8s") == name and (
            ready.get("status") == "True"
            and ready.get("observedGeneration") == status.get("observedGeneration")
        )

    m["spec"]["aws"]["roleNames"] = {"containersK8s": "TeamContainersK8s"}
    assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: named("TeamContainersK8s"), 60, "the renamed role")
    assert iam.get_role(RoleName="TeamContainersK8s")
    kubectl(
        kubeconfig, "patch", "awsc", "-n", namespace, "acme", "--type=json",
        "-p", '[{"op":"remove","path":"/spec/aws/roleNames"}]', check=True,
    )  # fmt: skip
    # Ready for the new generation: the pass is over (the generation is acknowledged with Ready Unknown before it)
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    assert named("TeamContainersK8s")
    roles = {r["RoleName"] for r in iam.list_roles()["Roles"]}
    assert "TeamContainersK8s" in roles and "MDCContainersK8sRole" not in roles
    delete(kubeconfig, namespace, "acme")


def test_a_reconcile_requested_while_the_stack_is_busy_still_looks_for_drift_once_it_is_settled(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """A person deletes a role by hand and asks for a reconcile while CloudFormation updates the stack: the pass that
    takes the request meets the stack in progress and cannot look for drift yet, but hands the request in as handled.
    The look for drift must still come once the stack is settled, not at the next hourly check."""
    m, _ = onboarded(kubeconfig, namespace)
    iam = aws_in(sandbox, account_of(m), "iam")
    aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 10})
    try:
        m["spec"]["plans"] = {
            "containers": {"enabled": False}
        }  # an update that leaves the Servers role alone
        assert apply(kubeconfig, m).returncode == 0
        wait_condition(kubeconfig, namespace, "acme", "Ready", "False", reason="StackUpdating")
        for policy in iam.list_role_policies(RoleName="DefenderForCloud-DefenderForServers")["PolicyNames"]:
            iam.delete_role_policy(RoleName="DefenderForCloud-DefenderForServers", PolicyName=policy)
        iam.delete_role(RoleName="DefenderForCloud-DefenderForServers")
        request = request_reconcile(kubeconfig, namespace, "acme")
        wait_for(
            lambda: reconcile_handled(kubeconfig, namespace, "acme", request), 30, "the request to be handled"
        )
    finally:
        aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 0})
    wait_for(
        lambda: "DefenderForCloud-DefenderForServers" in [r["RoleName"] for r in iam.list_roles()["Roles"]],
        60,
        "the deleted role to be recreated",
    )
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    delete(kubeconfig, namespace, "acme")


def test_an_update_that_meets_a_role_deleted_by_hand_makes_it_again(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """A person deletes a role and, before the hourly drift check finds it, the spec changes that role (a catalog
    rollout does the same: campaign seed 285180). CloudFormation's update fails on the missing role and so does its
    rollback: UPDATE_ROLLBACK_FAILED. The role is the object's and its template says what it is, so no person is
    needed: the operator finishes the rollback without it and updates through a drift-aware change set that makes it
    again, and the object is Ready on the new template."""
    m, _ = onboarded(kubeconfig, namespace)
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    delete_role_by_hand(iam, "CspmMonitorAws")
    m["spec"]["access"] = "LeastPrivilege"  # CspmMonitorRole: inline policies instead of ReadOnlyAccess
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=90)
    repaired = wait_events(kubeconfig, namespace, "acme", {"DriftRepaired"})
    assert any("rollback failed on them" in e["message"] for e in repaired if e["reason"] == "DriftRepaired")
    assert obj["status"]["aws"]["rolesRemadeFor"] == obj["status"]["aws"]["templateHash"]
    role = iam.get_role(RoleName="CspmMonitorAws")["Role"]
    assert iam.list_role_policies(RoleName="CspmMonitorAws")["PolicyNames"]
    assert not iam.list_attached_role_policies(RoleName="CspmMonitorAws")["AttachedPolicies"]
    assert obj["status"]["aws"]["roles"]["cspmMonitor"] == role["Arn"]
    (stack,) = stacks_of(sandbox, account)
    assert stack["StackStatus"] == "UPDATE_COMPLETE"
    assert {t["Key"]: t["Value"] for t in stack["Tags"]}[HASH_TAG] == obj["status"]["aws"]["templateHash"]
    delete(kubeconfig, namespace, "acme")
    assert "CspmMonitorAws" not in [r["RoleName"] for r in iam.list_roles()["Roles"]]


def test_killed_right_after_finishing_the_rollback_and_after_executing_the_change_set(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """As above, with the operator killed right after ContinueUpdateRollback and again right after ExecuteChangeSet,
    before either pass wrote its status: the stack's own events, not a record of the operator's, say which roles
    the rollback was finished without, so the restarted operator still makes them again."""
    m, _ = onboarded(kubeconfig, namespace)
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    delete_role_by_hand(iam, "CspmMonitorAws")
    operator.kill_after("aws", "ContinueUpdateRollback")
    m["spec"]["access"] = "LeastPrivilege"
    assert apply(kubeconfig, m).returncode == 0
    wait_for(lambda: not operator.record or not operator.record.alive(), 60, "the operator to be killed")
    assert stacks_of(sandbox, account)[0]["StackStatus"] == "UPDATE_ROLLBACK_COMPLETE"
    operator.kill_after("aws", "ExecuteChangeSet")
    operator.start()
    wait_for(
        lambda: not operator.record or not operator.record.alive(), 60, "the operator to be killed again"
    )
    operator.start()
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=90)
    role = iam.get_role(RoleName="CspmMonitorAws")["Role"]
    assert obj["status"]["aws"]["roles"]["cspmMonitor"] == role["Arn"]
    assert not iam.list_attached_role_policies(RoleName="CspmMonitorAws")["AttachedPolicies"]
    (stack,) = stacks_of(sandbox, account)
    assert {t["Key"]: t["Value"] for t in stack["Tags"]}[HASH_TAG] == obj["status"]["aws"]["templateHash"]
    delete(kubeconfig, namespace, "acme")


def test_out_of_band_changes_are_repaired(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, _ = onboarded(kubeconfig, namespace)
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    # a role's trust is opened up, and another role is deleted
    iam.update_assume_role_policy(
        RoleName="CspmMonitorAws",
        PolicyDocument=json.dumps(
            {
                "Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}],
            }
        ),
    )
    for policy in iam.list_role_policies(RoleName="DefenderForCloud-DefenderForServers")["PolicyNames"]:
        iam.delete_role_policy(RoleName="DefenderForCloud-DefenderForServers", PolicyName=policy)
    iam.delete_role(RoleName="DefenderForCloud-DefenderForServers")
    request_reconcile(kubeconfig, namespace, "acme")
    wait_for(
        lambda: (
            iam.get_role(RoleName="CspmMonitorAws")["Role"]["AssumeRolePolicyDocument"]["Statement"][0][
                "Action"
            ]
            == "sts:AssumeRoleWithWebIdentity"
        ),
        60,
        "the trust policy to be restored",
    )
    wait_for(
        lambda: "DefenderForCloud-DefenderForServers" in [r["RoleName"] for r in iam.list_roles()["Roles"]],
        60,
        "the deleted role to be recreated",
    )
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    # the connector is deleted, then changed, in Azure
    send(arm_client(sandbox), "DELETE", connector_url("acme", m["spec"]["azure"]["resourceGroup"]))
    request_reconcile(kubeconfig, namespace, "acme")
    wait_for(lambda: connector(sandbox, m).status_code == 200, 60, "the connector to be recreated")
    send(
        arm_client(sandbox),
        "PATCH",
        connector_url("acme", m["spec"]["azure"]["resourceGroup"]),
        {"properties": {"environmentData": {"environmentType": "AwsAccount", "scanInterval": 24}}},
    )
    request_reconcile(kubeconfig, namespace, "acme")
    wait_for(
        lambda: connector(sandbox, m).json()["properties"]["environmentData"]["scanInterval"] == 4,
        60,
        "the scan interval to be put back",
    )
    # the stack itself is deleted
    cf = aws_in(sandbox, account, "cloudformation")
    cf.delete_stack(StackName=f"DefenderForCloud-{account}")
    request_reconcile(kubeconfig, namespace, "acme")
    wait_for(
        lambda: [s["StackStatus"] for s in stacks_of(sandbox, account)] == ["CREATE_COMPLETE"],
        60,
        "the stack to be recreated",
    )
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    wait_for(
        lambda: (
            len([e for e in events(kubeconfig, namespace, "acme") if e["reason"] == "DriftRepaired"]) >= 4
        ),
        60,
        "an Event for each repair",
    )
    assert 'defender_operator_drift_repairs_total{kind="role"}' in operator.metrics()
    delete(kubeconfig, namespace, "acme")


def test_a_new_generation_is_acknowledged_before_any_cloud_call(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """GitOps tools never take the last generation's Ready for the new one's (a new object has no status to take:
    its first pass's result is its first status)."""
    m, _ = onboarded(kubeconfig, namespace)
    connector_before = connector(sandbox, m).json()
    # the pass's first cloud call is slow (8 s: time to read the announcement and the clouds on a busy machine); the
    # credentials are cached since the object was onboarded, so that call is the stack's description
    operator.inject_aws_fault(pathPattern="DescribeStacks", latency=8, count=1)
    kubectl(kubeconfig, "patch", "awsc", "-n", namespace, "acme", "--type=merge",
            "-p", '{"spec": {"scanIntervalHours": 12}}', check=True)  # fmt: skip
    obj = wait_condition(
        kubeconfig, namespace, "acme", "Reconciling", "True", timeout=15, reason="Progressing"
    )
    assert obj["status"]["observedGeneration"] == 2
    assert condition(obj, "Ready")["status"] == "Unknown"  # type: ignore[index]
    assert connector(sandbox, m).json() == connector_before  # written before the clouds answered
    wait_for(
        lambda: condition(get_object(kubeconfig, namespace, "acme"), "Ready")["status"] == "True",  # type: ignore[index]
        120,
        "the new generation Ready",
    )
    delete(kubeconfig, namespace, "acme")


def test_asynchronous_cloudformation_shows_reconciling_then_ready(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 8})
    try:
        m = manifest(namespace)
        apply(kubeconfig, m)
        obj = wait_condition(
            kubeconfig, namespace, "acme", "Ready", "False", timeout=30, reason=STACK_PENDING
        )
        assert condition(obj, "Reconciling")["status"] == "True"  # type: ignore[index]
        assert condition(obj, "Stalled")["status"] == "False"  # type: ignore[index]
        assert obj["status"]["aws"]["stackStatus"] in ("CREATE_IN_PROGRESS",)
        assert connector(sandbox, m).status_code == 404  # Azure waits for the roles
        wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=60)
    finally:
        aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 0})
    # (a cleanup that waits on a stack being deleted: test_safety.py, test_cleanup_writes_and_reports_each_step_once)
    delete(kubeconfig, namespace, "acme")
    assert stacks_of(sandbox, account_of(m)) == []


def test_health_is_reported(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    _m, obj = onboarded(kubeconfig, namespace)
    issue = {
        "issueKey": "RoleAssumptionFailed",
        "issueName": "Role cannot be assumed",
        "issueDescription": "CspmMonitorAws trust policy rejects the token",
        "remediationSteps": "Redeploy the CloudFormation stack",
    }
    set_health(sandbox, obj["status"]["azure"]["connectorId"], "NotHealthy", [issue])
    request_reconcile(kubeconfig, namespace, "acme")
    obj = wait_condition(kubeconfig, namespace, "acme", "Healthy", "False")
    message = condition(obj, "Healthy")["message"]  # type: ignore[index]
    assert "Role cannot be assumed" in message and "Redeploy the CloudFormation stack" in message
    assert obj["status"]["azure"]["health"]["issues"][0]["key"] == "RoleAssumptionFailed"
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    wait_events(kubeconfig, namespace, "acme", {"NotHealthy"})
    set_health(sandbox, obj["status"]["azure"]["connectorId"], "Healthy")
    request_reconcile(kubeconfig, namespace, "acme")
    wait_condition(kubeconfig, namespace, "acme", "Healthy", "True")
    delete(kubeconfig, namespace, "acme")


def test_prerequisites_name_the_defender_plans_off_in_the_subscription_and_see_them_turned_on(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 28: a subscription with Defender for Servers and Containers off (Free, as a new subscription is) onboards
    and is Ready, but Prerequisites says what is not protected and how to fix it (-o wide, an event); turned on by
    a subscription owner, the next deep pass sees it."""
    subscription = str(uuid.uuid4())
    m = manifest(namespace, "acme", plans={"databases": {"enabled": False}})
    m["spec"]["azure"]["subscriptionId"] = subscription
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Prerequisites", "False")
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    message = condition(obj, "Prerequisites")["message"]  # type: ignore[index]
    assert condition(obj, "Prerequisites")["reason"] == "DefenderPlanOff"  # type: ignore[index]
    assert (
        "VirtualMachines" in message and "Containers" in message and "SqlServerVirtualMachines" not in message
    )
    assert (
        f"az security pricing create -n Containers --tier standard --subscription {subscription}" in message
    )
    wait_events(kubeconfig, namespace, "acme", {"PrerequisitesMissing"})
    wide = kubectl(kubeconfig, "get", "awsc", "-n", namespace, "acme", "-o", "wide", check=True).stdout
    assert "PREREQUISITES" in wide.splitlines()[0] and "False" in wide.splitlines()[1]
    arm = arm_client(sandbox)
    for plan in ("VirtualMachines", "Containers"):
        url = f"/subscriptions/{subscription}/providers/Microsoft.Security/pricings/{plan}?api-version=2024-01-01"
        assert send(arm, "PUT", url, {"properties": {"pricingTier": "Standard"}}).status_code == 200
    request_reconcile(kubeconfig, namespace, "acme")
    obj = wait_condition(kubeconfig, namespace, "acme", "Prerequisites", "True")
    assert condition(obj, "Prerequisites")["reason"] == "Met"  # type: ignore[index]
    wait_events(kubeconfig, namespace, "acme", {"PrerequisitesMet"})
    delete(kubeconfig, namespace, "acme")


def test_prerequisites_name_the_instances_arc_cannot_reach_until_systems_manager_manages_them(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 28, build 2: with Arc auto-provisioning on, a running EC2 instance that Systems Manager does not manage
    (its profile's role cannot register the agent) cannot get the Arc agent: Prerequisites says which, while the
    object is Ready; once its role has AmazonSSMManagedInstanceCore the next deep pass sees it."""
    subscription = str(uuid.uuid4())
    m = manifest(namespace, "acme", plans={"containers": {"enabled": False}, "databases": {"enabled": False}})
    m["spec"]["azure"]["subscriptionId"] = subscription
    url = f"/subscriptions/{subscription}/providers/Microsoft.Security/pricings/VirtualMachines?api-version=2024-01-01"
    assert (
        send(arm_client(sandbox), "PUT", url, {"properties": {"pricingTier": "Standard"}}).status_code == 200
    )
    account = account_of(m)
    core = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    instance_profile(sandbox, account, "ssm-core", core)
    instance_profile(sandbox, account, "own-profile", None)
    managed, unmanaged = (
        ec2_instance(sandbox, account, "ssm-core"),
        ec2_instance(sandbox, account, "own-profile"),
    )
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(
        kubeconfig, namespace, "acme", "Prerequisites", "False", reason="InstancesNotManaged"
    )
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    message = condition(obj, "Prerequisites")["message"]  # type: ignore[index]
    assert "1 of 2 running EC2 instances" in message and f"{unmanaged} (us-east-1)" in message
    assert managed not in message and "AmazonSSMManagedInstanceCore" in message
    aws_in(sandbox, account, "iam").attach_role_policy(RoleName="own-profile", PolicyArn=core)
    request_reconcile(kubeconfig, namespace, "acme")
    obj = wait_condition(kubeconfig, namespace, "acme", "Prerequisites", "True", reason="Met")
    assert "Systems Manager manages all 2 running EC2 instances" in condition(obj, "Prerequisites")["message"]  # type: ignore[index]
    delete(kubeconfig, namespace, "acme")


def test_prerequisites_find_ciems_entra_application_or_say_how_to_make_it(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Issue 28, build 2: with CIEM on, the service principal oidcSubject names must be CIEM's Entra application (its
    name, the identifier URI its provider takes as audience). Read with Graph (Application.Read.All); until the
    operator's identity may, the condition says how to see the check; a missing or different application is named
    with how to make it, while the object is Ready."""
    subject = str(uuid.uuid4())
    off = {"enabled": False}
    ciem = {"enabled": True, "ciem": {"enabled": True, "oidcSubject": subject}}
    m = manifest(namespace, "acme", plans={"servers": off, "containers": off, "databases": off, "cspm": ciem})
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(
        kubeconfig, namespace, "acme", "Prerequisites", "Unknown", reason="CiemApplicationUnreadable"
    )
    assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
    assert "Application.Read.All" in condition(obj, "Prerequisites")["message"]  # type: ignore[index]
    arm_control(sandbox, "/_sandbox/graph", {"readers": ["sandbox-operator"]})
    request_reconcile(kubeconfig, namespace, "acme")
    obj = wait_condition(
        kubeconfig, namespace, "acme", "Prerequisites", "False", reason="CiemApplicationMissing"
    )
    message = condition(obj, "Prerequisites")["message"]  # type: ignore[index]
    assert (
        subject in message and "mciem-aws-oidc-connector" in message and "api://mciem-aws-oidc-app" in message
    )
    principal = {"tenantId": TENANT, "id": subject, "displayName": "someone-else"}
    arm_control(sandbox, "/_sandbox/graph", {"servicePrincipals": [principal]})
    request_reconcile(kubeconfig, namespace, "acme")
    obj = wait_condition(
        kubeconfig, namespace, "acme", "Prerequisites", "False", reason="CiemApplicationMismatch"
    )
    message = condition(obj, "Prerequisites")["message"]  # type: ignore[index]
    assert "another application than mciem-aws-oidc-connector" in message and "someone-else" not in message
    principal.update(
        displayName="mciem-aws-oidc-connector", servicePrincipalNames=["api://mciem-aws-oidc-app"]
    )
    arm_control(sandbox, "/_sandbox/graph", {"servicePrincipals": [principal]})
    request_reconcile(kubeconfig, namespace, "acme")
    obj = wait_condition(kubeconfig, namespace, "acme", "Prerequisites", "True")
    assert (
        "CIEM's Entra application mciem-aws-oidc-connector is in tenant"
        in condition(obj, "Prerequisites")["message"]
    )  # type: ignore[index]
    delete(kubeconfig, namespace, "acme")


def test_delete_removes_everything_it_created(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, _ = onboarded(kubeconfig, namespace)
    account = account_of(m)
    delete(kubeconfig, namespace, "acme")
    assert connector(sandbox, m).status_code == 404
    assert stacks_of(sandbox, account) == []
    iam = aws_in(sandbox, account, "iam")
    assert iam.list_roles()["Roles"] == []
    assert iam.list_open_id_connect_providers()["OpenIDConnectProviderList"] == []
    wait_events(
        kubeconfig, namespace, "acme", {"ConnectorDeleted", "StackDeleting", "IdentityProviderReleased"}
    )


def test_orphan_leaves_both_clouds(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, _ = onboarded(kubeconfig, namespace, deletionPolicy="Orphan")
    delete(kubeconfig, namespace, "acme")
    assert connector(sandbox, m).status_code == 200
    assert [s["StackStatus"] for s in stacks_of(sandbox, account_of(m))] == ["CREATE_COMPLETE"]


def test_paused_object_is_left_alone_and_can_still_be_deleted(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m, _ = onboarded(kubeconfig, namespace)
    kubectl(kubeconfig, "annotate", "awsc", "-n", namespace, "acme", f"{ANNOTATION_PAUSED}=true", check=True)
    paused = wait_condition(kubeconfig, namespace, "acme", "Paused", "True")  # Argo CD: Suspended
    assert condition(paused, "Reconciling")["status"] == "False"  # type: ignore[index]  # kstatus: not stuck
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")
    m["spec"]["scanIntervalHours"] = 24
    assert apply(kubeconfig, m).returncode == 0
    request_reconcile(kubeconfig, namespace, "acme")
    unchanged = lambda: connector(sandbox, m).json()["properties"]["environmentData"]["scanInterval"] == 4  # noqa: E731
    # Nothing may change, so there is no condition to wait for: give the operator time for several passes (it would
    # act within a second of the spec change), then check that nothing was written.
    time.sleep(3)
    assert unchanged() and connector_puts(sandbox, "acme") == []
    delete(kubeconfig, namespace, "acme")
    assert connector(sandbox, m).status_code == 200  # paused: cleanup skipped, deletion not blocked
    wait_events(kubeconfig, namespace, "acme", {"PausedNotCleanedUp"})


def test_restart_mid_create_makes_exactly_one_stack_and_connector(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")  # the PUTs counted below are this test's only
    aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 8})
    try:
        m = manifest(namespace)
        apply(kubeconfig, m)
        wait_condition(kubeconfig, namespace, "acme", "Ready", "False", timeout=30, reason=STACK_PENDING)
        operator.kill()
        operator.start()
        wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=90)
        assert len(stacks_of(sandbox, account_of(m))) == 1
        puts = [
            r for r in connector_puts(sandbox, "acme") if r["method"] == "PUT" and r["status"] in (200, 201)
        ]
        assert len(puts) == 1
    finally:
        aws_control(sandbox, "/_sandbox/config", {"asyncStackSeconds": 0})
    delete(kubeconfig, namespace, "acme")


def test_second_object_for_the_same_account_is_stalled_and_writes_nothing(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    first, _ = onboarded(kubeconfig, namespace, "first")
    second = manifest(namespace, "second", account=account_of(first))
    assert apply(kubeconfig, second).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "second", "Stalled", "True", reason="ConnectorConflict")
    assert f"{namespace}/first" in condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert connector_puts(sandbox, "second") == []
    assert len(stacks_of(sandbox, account_of(first))) == 1
    # from another namespace the winner is not named: a tenant learns nothing of which team onboards the account
    other = f"{namespace}-o"
    kubectl(kubeconfig, "create", "namespace", other, check=True)
    assert apply(kubeconfig, manifest(other, "third", account=account_of(first))).returncode == 0
    obj = wait_condition(kubeconfig, other, "third", "Stalled", "True", reason="ConnectorConflict")
    message = condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert "an object in another namespace already onboards" in message and namespace not in message, message
    delete(kubeconfig, other, "third")
    kubectl(kubeconfig, "delete", "namespace", other, "--wait=false")
    delete(kubeconfig, namespace, "second")
    assert connector(sandbox, first, "first").status_code == 200  # deleting the duplicate touched nothing
    assert len(stacks_of(sandbox, account_of(first))) == 1
    delete(kubeconfig, namespace, "first")


def test_existing_provider_is_shared_and_left_intact(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace)
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    sentinel_audience = "api://1462b192-27f7-4cb9-8523-0f4ecb54b47e"
    arn = iam.create_open_id_connect_provider(
        Url=f"https://{MS_PROVIDER}",
        ClientIDList=[sentinel_audience],
        ThumbprintList=["626d44e704d1ceabe3bf0d53397464ac8080142c"],
    )["OpenIDConnectProviderArn"]
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    provider = obj["status"]["aws"]["oidcProvider"]
    assert provider["arn"] == arn and provider["owned"] is False
    assert sentinel_audience not in provider["addedAudiences"] and len(provider["addedAudiences"]) == 6
    assert sentinel_audience in iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"]
    delete(kubeconfig, namespace, "acme")
    assert iam.get_open_id_connect_provider(OpenIDConnectProviderArn=arn)["ClientIDList"] == [
        sentinel_audience
    ]


def test_bad_credentials_stall_with_a_clear_message(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    kubectl(
        kubeconfig,
        "create",
        "secret",
        "generic",
        "azure-onboarding",
        "-n",
        namespace,
        "--from-literal=clientId=onboarding-app",
        "--from-literal=clientSecret=not-the-secret",
        check=True,
    )
    m = manifest(namespace)
    m["spec"]["azure"]["credentialsSecretRef"] = {"name": "azure-onboarding"}
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="AzureCredentialsRejected")
    message = condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert "AADSTS7000215" in message and "not-the-secret" not in message
    log = operator.log()
    assert "not-the-secret" not in log
    assert "not-the-secret" not in json.dumps(
        wait_events(kubeconfig, namespace, "acme", {"AzureCredentialsRejected"})
    )
    missing = manifest(namespace, "missing-secret")
    missing["spec"]["azure"]["credentialsSecretRef"] = {"name": "nope"}
    assert apply(kubeconfig, missing).returncode == 0
    obj = wait_condition(
        kubeconfig, namespace, "missing-secret", "Stalled", "True", reason="CredentialsSecretMissing"
    )
    assert "nope" in condition(obj, "Stalled")["message"]  # type: ignore[index]
    delete(kubeconfig, namespace, "acme")
    delete(kubeconfig, namespace, "missing-secret")


def test_failed_stack_is_stalled_with_the_reason_then_recovers(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace)
    account = account_of(m)
    iam = aws_in(sandbox, account, "iam")
    iam.create_role(
        RoleName="CspmMonitorAws",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "Stalled", "True", reason="StackCreateFailed")
    message = condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert "CspmMonitorRole" in message and "already exists" in message
    iam.delete_role(RoleName="CspmMonitorAws")  # the person fixes the cause...
    request_reconcile(kubeconfig, namespace, "acme")  # ...and asks for another try
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=90)
    delete(kubeconfig, namespace, "acme")


def test_throttling_is_retried(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    operator.inject_aws_fault(pathPattern="CreateStack", count=6, status=400)
    m = manifest(namespace)
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=90)
    assert (
        'defender_operator_cloud_throttled_total{cloud="aws",operation="create_stack",service="cloudformation"}'
        in operator.metrics()
    )
    delete(kubeconfig, namespace, "acme")


def test_terraform_method_waits_for_the_roles(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(
        namespace,
        plans={
            "servers": {"enabled": False},
            "containers": {"enabled": False},
            "databases": {"enabled": False},
        },
        deployment={"method": "Terraform"},
    )
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "acme", "AWSReady", "False", reason="AwaitingTerraform")
    assert "CspmMonitorAws" in condition(obj, "AWSReady")["message"]  # type: ignore[index]
    assert stacks_of(sandbox, account_of(m)) == []
    iam = aws_in(sandbox, account_of(m), "iam")
    iam.create_role(
        RoleName="CspmMonitorAws",
        AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}),
    )
    request_reconcile(kubeconfig, namespace, "acme")
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True")
    delete(kubeconfig, namespace, "acme")
    assert iam.get_role(RoleName="CspmMonitorAws")  # Terraform's roles are Terraform's to destroy


def test_management_account_onboards_its_organization(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    m = manifest(namespace, "org")
    management = account_of(m)
    ou, members = organization_ou(sandbox, management, 3, email="member")
    m["spec"]["aws"]["organization"] = {"organizationalUnitIds": [ou], "excludedAccountIds": [members[2]]}
    assert apply(kubeconfig, m).returncode == 0
    obj = wait_condition(kubeconfig, namespace, "org", "MembersReady", "True", timeout=90)
    org_status = obj["status"]["organization"]
    assert org_status["memberAccounts"] == 2 and org_status["stackSetId"]
    for member in members[:2]:
        assert "CspmMonitorAws" in [
            r["RoleName"] for r in aws_in(sandbox, member, "iam").list_roles()["Roles"]
        ]
        providers = aws_in(sandbox, member, "iam").list_open_id_connect_providers()[
            "OpenIDConnectProviderList"
        ]
        assert [p["Arn"] for p in providers] == [f"arn:aws:iam::{member}:oidc-provider/{MS_PROVIDER}"]
    assert defender_roles(sandbox, members[2]) == []  # excluded
    live = connector(sandbox, m, "org").json()["properties"]["environmentData"]["organizationalData"]
    assert live == {
        "organizationMembershipType": "Organization",
        "stacksetName": "DefenderForCloud-Members",
        "excludedAccountIds": [members[2]],
    }
    # Defender creates member connectors by itself, later; the operator reports them and never writes them.
    member_body = member_connector(members[0], management)
    assert (
        send(
            arm_client(sandbox), "PUT", connector_url(f"member-{members[0]}", "defender-members"), member_body
        ).status_code
        == 201
    )
    request_reconcile(kubeconfig, namespace, "org")
    wait_for(
        lambda: (
            (get_object(kubeconfig, namespace, "org") or {})
            .get("status", {})
            .get("organization", {})
            .get("memberConnectors")
            == 1
        ),
        30,
        "the member connector to be reported",
    )
    delete(kubeconfig, namespace, "org")
    for member in members[:2]:
        assert defender_roles(sandbox, member) == []
    assert aws_in(sandbox, management, "cloudformation").list_stack_sets()["Summaries"] == [] or all(
        s["Status"] == "DELETED"
        for s in aws_in(sandbox, management, "cloudformation").list_stack_sets()["Summaries"]
    )
    assert (
        send(
            arm_client(sandbox), "GET", connector_url(f"member-{members[0]}", "defender-members")
        ).status_code
        == 200
    )  # not ours


def test_plan_shows_changes_and_writes_nothing(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str, tmp_path: Path
) -> None:
    m = manifest(namespace, "planned")
    manifest_file = tmp_path / "planned.yaml"
    manifest_file.write_text(yaml.safe_dump(m))
    env = {**os.environ, **sandbox.env(), "AWS_ENDPOINT_URL": operator.aws_proxy}
    operator.reset_aws_operations()
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")
    planned = subprocess.run(
        [sys.executable, "-m", "defender_operator.cli", "plan", "-f", str(manifest_file)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert planned.returncode == 0, planned.stderr
    assert (
        "create identity provider" in planned.stdout
        and f"create stack DefenderForCloud-{account_of(m)}" in planned.stdout
    )
    writes = {
        op: n for op, n in operator.aws_operations().items() if not op.startswith(("Describe", "Get", "List"))
    }
    assert set(writes) <= {"AssumeRole"}  # signing in is not a change
    assert [r for r in arm_requests(sandbox) if r["method"] != "GET"] == []
    assert stacks_of(sandbox, account_of(m)) == []
    assert apply(kubeconfig, m).returncode == 0
    wait_condition(kubeconfig, namespace, "planned", "Ready", "True")
    in_sync = plan_command(env, manifest_file, "--detailed-exitcode")
    assert "no changes" in in_sync.stdout and in_sync.returncode == 0, in_sync.stdout + in_sync.stderr
    m["spec"]["scanIntervalHours"] = 24
    manifest_file.write_text(yaml.safe_dump(m))
    changed = plan_command(env, manifest_file, "--detailed-exitcode")
    assert "update connector" in changed.stdout and changed.returncode == 2, changed.stdout + changed.stderr
    assert "update stack" not in changed.stdout  # the interval lives in Azure only
    # Unreachable clouds or cluster: exit 1, one line, no traceback (CI can trust the exit code).
    unreachable = tmp_path / "unreachable-kubeconfig"
    unreachable.write_text(
        re.sub(r"server: https://\S+", "server: https://127.0.0.1:9", kubeconfig.read_text())
    )
    for broken in ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, {"KUBECONFIG": str(unreachable)}):
        failed = plan_command({**env, **broken}, manifest_file, "--detailed-exitcode")
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1, failed.stderr
    # Machine-readable, with the cluster named explicitly (no KUBECONFIG in the environment).
    no_kubeconfig = {k: v for k, v in env.items() if k != "KUBECONFIG"} | {"HOME": str(tmp_path)}
    explicit = plan_command(
        no_kubeconfig, manifest_file, "-o", "json", "--kubeconfig", str(kubeconfig), "--context", "sandbox"
    )
    assert explicit.returncode == 0, explicit.stderr
    (planned_object,) = json.loads(explicit.stdout)["objects"]
    assert planned_object["object"] == f"{namespace}/planned" and planned_object["result"] == "changes"
    assert any(c.startswith("update connector") for c in planned_object["changes"]), planned_object
    # No cluster configured: an error that says so, not a plan that silently ignores what the operator created.
    alone = plan_command(no_kubeconfig, manifest_file)
    assert alone.returncode == 1 and "--no-cluster" in alone.stderr, alone.stderr
    # A usage error is never 2 ("changes").
    usage = plan_command(env, manifest_file, "--detailed-exitcode", "--no-such-flag")
    assert usage.returncode == 64, usage.returncode
    delete(kubeconfig, namespace, "planned")


def plan_command(env: dict[str, str], manifest_file: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "defender_operator.cli", "plan", "-f", str(manifest_file), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def metric_values(operator: OperatorProcess) -> dict[str, float]:
    """One scrape of the operator's /metrics: series (name and labels) -> value."""
    values: dict[str, float] = {}
    for line in operator.metrics().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def test_the_workqueue_metrics_time_a_pass_in_progress_and_count_its_retries(
    kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """controller-runtime's meanings, seen happen: a pass held up by a slow cloud call shows in
    ``workqueue_unfinished_work_seconds`` and ``workqueue_longest_running_processor_seconds`` while it runs, and a
    pass that fails for a retryable reason counts one in ``workqueue_retries_total``."""
    q = 'name="awsconnector"'
    retries = metric_values(operator)[f"workqueue_retries_total{{{q}}}"]
    operator.inject_aws_fault(pathPattern="AssumeRole", latency=10, count=1)  # the first pass waits 10 s
    # throttled for longer than one pass's tries (the SDK's four, and more): a pass fails, and is retried
    operator.inject_aws_fault(pathPattern="CreateStack", count=12, status=400)
    assert apply(kubeconfig, manifest(namespace)).returncode == 0

    def in_progress() -> dict[str, float] | None:
        values = metric_values(operator)
        return values if values[f"workqueue_longest_running_processor_seconds{{{q}}}"] >= 2 else None

    values = wait_for(in_progress, 9, "the slow pass to show as running for 2 s")
    longest = values[f"workqueue_longest_running_processor_seconds{{{q}}}"]
    # every pass in progress, summed (each gauge reads the clock as the scrape reaches it: a millisecond apart)
    assert values[f"workqueue_unfinished_work_seconds{{{q}}}"] >= longest - 0.1
    wait_condition(kubeconfig, namespace, "acme", "Ready", "True", timeout=120)
    assert metric_values(operator)[f"workqueue_retries_total{{{q}}}"] > retries, (
        operator.aws_faulted(),
        operator.aws_operations(),
    )
    delete(kubeconfig, namespace, "acme")


def test_metrics_have_controller_runtimes_meanings(operator: OperatorProcess) -> None:
    """Runs last in this module: earlier tests made passes of every kind (success, requeue_after, terminal)."""
    values = metric_values(operator)
    c = 'controller="awsconnector"'
    assert f'controller_runtime_reconcile_total{{{c},result="requeue"}}' in values  # pre-created, even at 0
    assert f"controller_runtime_reconcile_panics_total{{{c}}}" in values
    terminal = values[f"controller_runtime_terminal_reconcile_errors_total{{{c}}}"]
    assert terminal > 0 and values[f"controller_runtime_reconcile_errors_total{{{c}}}"] >= terminal
    assert (
        values[f"controller_runtime_active_workers{{{c}}}"]
        <= values[f"controller_runtime_max_concurrent_reconciles{{{c}}}"]
    )
    assert (
        values['workqueue_adds_total{name="awsconnector"}'] > 0
        and 'workqueue_depth{name="awsconnector"}' in values
    )
    q = 'name="awsconnector"'
    assert values[f"workqueue_retries_total{{{q}}}"] >= 0  # pre-created
    assert values[f"workqueue_unfinished_work_seconds{{{q}}}"] >= 0
    assert values[f"workqueue_longest_running_processor_seconds{{{q}}}"] >= 0
    requests = {k: v for k, v in values.items() if k.startswith("rest_client_requests_total{")}
    assert any('code="200"' in k and 'method="PATCH"' in k for k in requests), requests  # status writes


def test_each_object_has_a_ready_status_series_that_goes_with_it(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """One series per object and status, for alerts that name the object (cert-manager's certificate_ready_status)."""
    m, _ = onboarded(kubeconfig, namespace, "series")
    labels = f'account="{account_of(m)}",condition="True",name="series",namespace="{namespace}"'  # sorted
    line = f"defender_operator_awsconnector_ready_status{{{labels}}} 1.0"
    wait_for(lambda: line in operator.metrics(), 30, "the object's ready series")
    delete(kubeconfig, namespace, "series")
    wait_for(
        lambda: f'name="series",namespace="{namespace}"' not in operator.metrics(), 30, "the series to go"
    )


def test_a_subscription_is_verified_once_for_many_accounts(
    sandbox: Sandbox, kubeconfig: Path, operator: OperatorProcess, namespace: str
) -> None:
    """Many AWS accounts onboard into one subscription: the operator reads it (reachable, in spec.azure.tenantId)
    once an hour per credential, not before every object's first connector write."""
    first, second = manifest(namespace, "first"), manifest(namespace, "second")
    assert apply(kubeconfig, first).returncode == 0
    wait_condition(kubeconfig, namespace, "first", "Ready", "True")
    arm_control(sandbox, "/_sandbox/requests", method="DELETE")  # read by now (or by an earlier test)
    assert apply(kubeconfig, second).returncode == 0
    wait_condition(kubeconfig, namespace, "second", "Ready", "True")
    subscription = f"/subscriptions/{first['spec']['azure']['subscriptionId']}"
    reads = [
        r for r in arm_requests(sandbox) if r["method"] == "GET" and r["path"].split("?")[0] == subscription
    ]
    assert reads == [], reads
    assert connector(sandbox, first).status_code == connector(sandbox, second).status_code == 200
    delete(kubeconfig, namespace, "first")
    delete(kubeconfig, namespace, "second")
