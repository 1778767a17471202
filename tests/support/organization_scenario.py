"""Issue 12's organization scenario, run by the integration tests (``test_organizations.py``) and by
``bench/organization.py`` (which prints its figures).

An emulated AWS organization (the AWS emulator's Organizations API) of ``accounts`` member accounts spread over
``ous`` organizational units, onboarded by one AWSConnector for the management account. Steps, each waited on
through the object's status and checked against the member accounts themselves:

1. onboard: every member account gets its instance (``status.organization.instances.current``);
2. exclude 10 accounts (``excludedAccountIds``): their instances and roles go;
3. move 20 accounts to an OU that is not a target: their instances and roles go;
4. make 5 fail: a role name the next template needs is taken in 5 accounts, then Defender CSPM is turned on:
   ``MembersReady=False`` with exactly those 5 in ``failingAccounts``, Ready stays True;
5. a new account joins a target OU: it gets its instance;
6. delete: nothing of the onboarding is left in any member account.
"""

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from defender_operator.sandbox import Sandbox

from .kube import apply, condition, get_object, kubectl, wait_for
from .onboarding import aws_in, defender_roles, manifest, request_reconcile
from .operator import OperatorProcess

MINIMUM_ACCOUNTS = 36  # 10 excluded, 20 moved, 5 failing, and one that stays
NO_PAID_PLANS = {
    "servers": {"enabled": False},
    "containers": {"enabled": False},
    "databases": {"enabled": False},
}
TAKEN_ROLE = "DefenderForCloud-AgentlessScanner"  # a role Defender CSPM adds


def organization(
    box: Sandbox, management: str, accounts: int, ous: int
) -> tuple[Any, list[str], list[str], str]:
    """The organization: ``ous`` target OUs under the root, accounts spread over them, and one OU outside."""
    org = aws_in(box, management, "organizations")
    org.create_organization(FeatureSet="ALL")
    root = org.list_roots()["Roots"][0]["Id"]
    targets = [
        org.create_organizational_unit(ParentId=root, Name=f"ou-{i}")["OrganizationalUnit"]["Id"]
        for i in range(ous)
    ]
    outside = org.create_organizational_unit(ParentId=root, Name="outside")["OrganizationalUnit"]["Id"]
    members = [join(org, root, targets[i % ous], f"m{i}") for i in range(accounts)]
    return org, targets, members, outside


def join(org: Any, root: str, ou: str, name: str) -> str:
    request = org.create_account(Email=f"{name}@example.com", AccountName=name)["CreateAccountStatus"]["Id"]
    account = str(
        org.describe_create_account_status(CreateAccountRequestId=request)["CreateAccountStatus"]["AccountId"]
    )
    org.move_account(AccountId=account, SourceParentId=root, DestinationParentId=ou)
    return account


def status_of(kubeconfig: Path, namespace: str) -> dict[str, Any]:
    return (get_object(kubeconfig, namespace, "org") or {}).get("status") or {}


def step(
    name: str,
    operator: OperatorProcess,
    kubeconfig: Path,
    namespace: str,
    change: Callable[[], None],
    reached: Callable[[dict[str, Any]], bool],
    results: list[dict[str, Any]],
) -> dict[str, Any]:
    """Make ``change``, then wait until the object's status satisfies ``reached``; record the time and the calls."""
    operator.reset_aws_operations()
    started = time.monotonic()
    change()
    status: dict[str, Any] = wait_for(
        lambda: (s := status_of(kubeconfig, namespace)) and reached(s) and s, 1800, name, 1.0
    )
    seconds = time.monotonic() - started
    calls = operator.aws_operations()
    results.append(
        {"step": name, "seconds": round(seconds, 1), "aws_calls": sum(calls.values()), "by_call": calls}
    )
    print(json.dumps(results[-1]), flush=True)  # progress, as the steps take a while at scale
    return status


def instances(status: dict[str, Any]) -> dict[str, int]:
    return dict((status.get("organization") or {}).get("instances") or {})


def members_ready(status: dict[str, Any], value: str) -> bool:
    found = condition({"status": status}, "MembersReady")
    return found is not None and found["status"] == value


def run(
    box: Sandbox,
    operator: OperatorProcess,
    kubeconfig: Path,
    namespace: str,
    management: str,
    accounts: int,
    ous: int,
) -> list[dict[str, Any]]:
    """The scenario, asserting the status and the member accounts at each step; the time and calls of each step."""
    assert accounts >= MINIMUM_ACCOUNTS, f"at least {MINIMUM_ACCOUNTS} accounts"
    results: list[dict[str, Any]] = []
    built = time.monotonic()
    org, targets, members, outside = organization(box, management, accounts, ous)
    print(json.dumps({"organization_built_s": round(time.monotonic() - built, 1)}), flush=True)
    m = manifest(namespace, "org", management)
    m["spec"]["plans"] = NO_PAID_PLANS
    m["spec"]["aws"]["organization"] = {"organizationalUnitIds": targets}
    total = len(members)

    def settled(current: int, failed: int = 0) -> Callable[[dict[str, Any]], bool]:
        return lambda s: instances(s) == {
            "current": current, "outdated": 0, "failed": failed, "inoperable": 0
        } and members_ready(s, "True" if failed == 0 else "False")  # fmt: skip

    step("onboard", operator, kubeconfig, namespace, lambda: apply(kubeconfig, m), settled(total), results)
    excluded, moved = members[:10], members[10:30]
    m["spec"]["aws"]["organization"]["excludedAccountIds"] = excluded
    step(
        "exclude 10",
        operator,
        kubeconfig,
        namespace,
        lambda: apply(kubeconfig, m),
        settled(total - 10),
        results,
    )
    assert all(defender_roles(box, a) == [] for a in excluded)

    def move() -> None:
        for account in moved:
            parent = org.list_parents(ChildId=account)["Parents"][0]["Id"]
            org.move_account(AccountId=account, SourceParentId=parent, DestinationParentId=outside)
        request_reconcile(kubeconfig, namespace, "org")

    step("move 20 out", operator, kubeconfig, namespace, move, settled(total - 30), results)
    assert all(defender_roles(box, a) == [] for a in moved)
    failing = members[30:35]

    def break_five() -> None:
        for account in failing:
            aws_in(box, account, "iam").create_role(
                RoleName=TAKEN_ROLE, AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}'
            )
        m["spec"]["plans"] = {**NO_PAID_PLANS, "cspm": {"enabled": True}}
        apply(kubeconfig, m)

    status = step("5 fail", operator, kubeconfig, namespace, break_five, settled(total - 35, 5), results)
    assert sorted(a["accountId"] for a in status["organization"]["failingAccounts"]) == sorted(failing)
    ready = condition({"status": status}, "Ready")
    assert ready is not None and ready["status"] == "True"

    def add_one() -> None:
        members.append(join(org, org.list_roots()["Roots"][0]["Id"], targets[0], "late"))
        request_reconcile(kubeconfig, namespace, "org")

    step("1 joins", operator, kubeconfig, namespace, add_one, settled(total - 34, 5), results)
    assert defender_roles(box, members[-1]) != []

    def delete() -> None:
        kubectl(kubeconfig, "delete", "awsc", "-n", namespace, "org", "--wait=false", check=True)

    operator.reset_aws_operations()
    started = time.monotonic()
    delete()
    wait_for(lambda: get_object(kubeconfig, namespace, "org") is None, 1800, "the object to go", 1.0)
    calls = operator.aws_operations()
    results.append({"step": "delete", "seconds": round(time.monotonic() - started, 1),
                    "aws_calls": sum(calls.values()), "by_call": calls})  # fmt: skip
    print(json.dumps(results[-1]), flush=True)
    left = {a: roles for a in members if (roles := [r for r in defender_roles(box, a) if r != TAKEN_ROLE])}
    assert not left, f"left in {len(left)} member accounts: {dict(list(left.items())[:3])}"
    return results
