"""The service-managed StackSet that puts the Defender roles into an organization's member accounts.

Service-managed StackSets deploy to organizational units (and, with automatic deployment, to accounts that join
them later) but never to the management account itself, which is why that account has its own stack
(aws-cloudformation/cloudformation-coverage-roadmap#1705). IAM is global, so one region per account is enough.
Operations run in the background; the operator starts one, records its id, and looks again. From a delegated
administrator account every call passes ``CallAs: DELEGATED_ADMIN``; the StackSet then lives in the management
account all the same (API_CreateStackSet.html, ``CallAs``).
"""

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import TerminalError
from ..ownership import Owner
from ..writes import Writing, unrecorded
from .api import AwsClientError, call, pages
from .stack import CAPABILITIES, HASH_TAG, tag_list

# Trusted access for StackSets is off in a new organization; CloudFormation then refuses service-managed StackSets.
TRUSTED_ACCESS_MESSAGE = "organizations access"


# CloudFormation's answer to CallAs DELEGATED_ADMIN from an account it does not accept as delegated administrator:
# not registered, or its caller may not organizations:ListDelegatedAdministrators (hashicorp/terraform-provider-aws
# #37069).
NOT_DELEGATED = "not a delegated administrator"


def not_delegated(message: str) -> str:
    return (
        f"CloudFormation does not accept this account as the organization's delegated administrator ({message}). "
        "Register it from the management account (aws organizations register-delegated-administrator --account-id "
        "<spec.aws.organization.delegatedAdministratorAccountId> --service-principal "
        "member.org.stacksets.cloudformation.amazonaws.com) and let the operator's identity call "
        "organizations:ListDelegatedAdministrators (defender-operator aws-setup --only delegated-admin-policy)"
    )


@contextlib.contextmanager
def _delegation_explained() -> Iterator[None]:
    try:
        yield
    except AwsClientError as exc:
        if NOT_DELEGATED in exc.message:
            raise TerminalError("NotDelegatedAdministrator", not_delegated(exc.message)) from None
        raise


@dataclass(frozen=True)
class InstanceState:
    """One stack instance as ListStackInstances reports it (API_StackInstanceSummary.html)."""

    account: str
    status: str  # CURRENT | OUTDATED | INOPERABLE
    detailed: (
        str  # PENDING | RUNNING | SUCCEEDED | FAILED | CANCELLED | INOPERABLE | SKIPPED_SUSPENDED_ACCOUNT
    )
    reason: str

    @property
    def failed(self) -> bool:
        return self.status == "INOPERABLE" or self.detailed in ("FAILED", "INOPERABLE", "CANCELLED")


@dataclass(frozen=True)
class ObservedStackSet:
    stack_set_id: str
    template_hash: str | None
    tags: dict[str, str]
    states: list[InstanceState]
    auto_deployment: bool | None = None  # AutoDeployment.Enabled, as DescribeStackSet says (None: not said)

    @property
    def instances(self) -> list[str]:
        """Member account ids with an instance."""
        return sorted({s.account for s in self.states})


def standing(account: dict[str, Any]) -> str:
    """How an Organizations ``Account`` counts: "active", "closed" or "waiting". ``State`` (AWS Organizations User Guide,
    "Monitor the state of your AWS accounts"): ACTIVE; CLOSED, an account its owner closed, kept for 90 days; and
    PENDING_ACTIVATION, SUSPENDED (restricted by AWS, which may reinstate it) and PENDING_CLOSURE (still functional),
    which are waited for: neither deployed to nor let go. Without ``State``, the older ``Status``: a closed account is
    SUSPENDED there (API_CloseAccount.html: PENDING_CLOSURE, then SUSPENDED once closed), which cannot be told from a
    suspension by AWS."""
    state = account.get("State")
    if state is not None:
        return {"ACTIVE": "active", "CLOSED": "closed"}.get(str(state), "waiting")
    return {"ACTIVE": "active", "SUSPENDED": "closed"}.get(str(account.get("Status", "ACTIVE")), "waiting")


@dataclass(frozen=True)
class MemberAccounts:
    """Accounts of the organization by ``standing``. StackSets skip a closed account (SKIPPED_SUSPENDED_ACCOUNT,
    API_StackInstanceComprehensiveStatus.html) and cannot delete its instance, which can only be detached (AWS re:Post
    knowledge center, "cloudformation-removal-stacksets": DeleteStackInstances with RetainStacks)."""

    active: frozenset[str] = frozenset()
    closed: frozenset[str] = frozenset()
    waiting: frozenset[str] = frozenset()

    def __or__(self, other: "MemberAccounts") -> "MemberAccounts":
        return MemberAccounts(
            self.active | other.active, self.closed | other.closed, self.waiting | other.waiting
        )

    @property
    def known(self) -> frozenset[str]:
        return self.active | self.closed | self.waiting


@dataclass(frozen=True)
class Targets:
    organizational_units: list[str]
    excluded_accounts: list[str]
    region: str
    failure_tolerance_percentage: int = 100
    max_concurrent_percentage: int = 25
    # CloudFormation's automatic deployment to accounts that join the units (API_AutoDeployment.html). Off where the
    # member roles trust a provider the operator sets up first (memberProviderRoleName): an instance made before the
    # provider fails, IAM refusing a trust policy that names a provider that does not exist; the operator's deep
    # pass then deploys to joining accounts once their provider is there.
    auto_deployment: bool = True

    def auto_deployment_setting(self) -> dict[str, bool]:
        if not self.auto_deployment:
            return {"Enabled": False}
        return {"Enabled": True, "RetainStacksOnAccountRemoval": False}

    def preferences(self) -> dict[str, int]:
        """OperationPreferences of every operation (API_StackSetOperationPreferences.html)."""
        return {
            "FailureTolerancePercentage": self.failure_tolerance_percentage,
            "MaxConcurrentPercentage": self.max_concurrent_percentage,
        }

    def deployment_targets(self) -> dict[str, Any]:
        targets: dict[str, Any] = {"OrganizationalUnitIds": self.organizational_units}
        if self.excluded_accounts:
            targets.update({"Accounts": self.excluded_accounts, "AccountFilterType": "DIFFERENCE"})
        return targets


class StackSets:
    def __init__(
        self,
        cloudformation: Any,
        organizations: Any,
        planned: list[str] | None = None,
        writing: Writing = unrecorded,
        call_as: str = "SELF",
    ) -> None:
        """``call_as``: SELF from the management account, DELEGATED_ADMIN from a delegated administrator account
        (API_CreateStackSet.html, ``CallAs``); every StackSet call passes it."""
        self.cf, self.organizations, self.planned = cloudformation, organizations, planned
        self.writing, self.call_as = writing, call_as

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """A StackSet call, as the management account or its delegated administrator (``call_as``)."""
        with _delegation_explained():
            return call(self.cf, operation, CallAs=self.call_as, **kwargs)

    def _pages(self, operation: str, **kwargs: Any) -> list[Any]:
        with _delegation_explained():
            return pages(self.cf, operation, "Summaries", CallAs=self.call_as, **kwargs)

    def root(self) -> str:
        roots = call(self.organizations, "list_roots")["Roots"]
        return str(roots[0]["Id"])

    def accounts_under(
        self, parents: list[str], management_account: str, missing_ok: bool = False
    ) -> MemberAccounts:
        """Every account in these OUs (or the root) and their child OUs, recursively, as a service-managed StackSet
        deploys to them; never the management account (StackSets do not deploy there). ``missing_ok``: a unit that
        does not exist is skipped (a cleanup, after the unit was deleted: it was empty then); otherwise it is the
        error it is (a unit id mistyped in the spec)."""
        found: dict[str, list[str]] = {"active": [], "closed": [], "waiting": []}
        pending = list(parents)
        while pending:
            parent = pending.pop()
            try:
                accounts = pages(self.organizations, "list_accounts_for_parent", "Accounts", ParentId=parent)
            except AwsClientError as exc:
                if not missing_ok or exc.code != "ParentNotFoundException":
                    raise
                continue
            for a in accounts:
                found[standing(a)].append(str(a["Id"]))
            children = pages(
                self.organizations,
                "list_organizational_units_for_parent",
                "OrganizationalUnits",
                ParentId=parent,
            )
            pending += [str(ou["Id"]) for ou in children]
        return MemberAccounts(
            *(frozenset(found[k]) - {management_account} for k in ("active", "closed", "waiting"))
        )

    def described(self, accounts: Iterable[str]) -> MemberAccounts:
        """The standing of accounts the units' listing did not name (moved out of the targets, or out of the
        organization), one DescribeAccount each: there are few. An account no longer in the organization is waited
        for: a StackSet operation addressed through the organization's root cannot reach it, so neither a removal
        nor a detachment would take its instance away (it would be tried again on every pass)."""
        found: dict[str, list[str]] = {"active": [], "closed": [], "waiting": []}
        for account in accounts:
            try:
                described = call(self.organizations, "describe_account", AccountId=account)["Account"]
            except AwsClientError as exc:
                if exc.code != "AccountNotFoundException":
                    raise
                found["waiting"].append(account)
                continue
            found[standing(described)].append(account)
        return MemberAccounts(*(frozenset(found[k]) for k in ("active", "closed", "waiting")))

    def observe(self, name: str) -> ObservedStackSet | None:
        try:
            stack_set = self._call("describe_stack_set", StackSetName=name)["StackSet"]
        except AwsClientError as exc:
            if exc.code in ("StackSetNotFoundException", "StackSetNotFound"):
                return None
            raise
        if stack_set.get("Status") == "DELETED":
            return None
        tags = {t["Key"]: t["Value"] for t in stack_set.get("Tags") or []}
        summaries = self._pages("list_stack_instances", StackSetName=name)
        return ObservedStackSet(
            stack_set_id=str(stack_set["StackSetId"]),
            template_hash=tags.get(HASH_TAG),
            tags=tags,
            states=[
                InstanceState(
                    account=str(s["Account"]),
                    status=str(s.get("Status", "CURRENT")),
                    detailed=str((s.get("StackInstanceStatus") or {}).get("DetailedStatus", "SUCCEEDED")),
                    reason=str(s.get("StatusReason") or ""),
                )
                for s in summaries
            ],
            auto_deployment=(stack_set.get("AutoDeployment") or {}).get("Enabled"),
        )

    def create(self, name: str, body: str, template_hash: str, owner: Owner, targets: Targets) -> None:
        if self.planned is not None:
            self.planned.append(f"create StackSet {name} (template {template_hash[:12]})")
            return
        with self.writing():
            self._call(
                "create_stack_set",
                StackSetName=name,
                Description="Microsoft Defender for Cloud roles in member accounts (managed by defender-operator)",
                TemplateBody=body,
                Capabilities=CAPABILITIES,
                PermissionModel="SERVICE_MANAGED",
                AutoDeployment=targets.auto_deployment_setting(),
                ManagedExecution={"Active": True},
                Tags=tag_list({HASH_TAG: template_hash, **owner.tags()}),
            )

    def deploy(self, name: str, targets: Targets, accounts: list[str] | None = None) -> str:
        """Create instances in the targets' accounts; with ``accounts``, only in those (the ones still missing: the
        targets' accounts narrowed to them, INTERSECTION, API_DeploymentTargets.html), so one missing account is one
        stack operation, not one for every account of the units."""
        if self.planned is not None:
            self.planned.append(f"deploy StackSet {name} to {', '.join(targets.organizational_units)}")
            return ""
        deployment = targets.deployment_targets()
        if accounts:
            deployment.update({"Accounts": accounts, "AccountFilterType": "INTERSECTION"})
        with self.writing():
            result = self._call(
                "create_stack_instances",
                StackSetName=name,
                DeploymentTargets=deployment,
                Regions=[targets.region],
                OperationPreferences=targets.preferences(),
            )
        return str(result["OperationId"])

    def update(self, name: str, body: str, template_hash: str, owner: Owner, targets: Targets) -> str:
        if self.planned is not None:
            self.planned.append(f"update StackSet {name} (template {template_hash[:12]})")
            return ""
        with self.writing():
            result = self._call(
                "update_stack_set",
                StackSetName=name,
                TemplateBody=body,
                Capabilities=CAPABILITIES,
                PermissionModel="SERVICE_MANAGED",
                AutoDeployment=targets.auto_deployment_setting(),
                Tags=tag_list({HASH_TAG: template_hash, **owner.tags()}),
                OperationPreferences=targets.preferences(),
            )
        return str(result["OperationId"])

    def operation(self, name: str, operation_id: str) -> tuple[str, str]:
        """(Status, reason) of an operation: RUNNING, SUCCEEDED, FAILED, STOPPED, ..."""
        op = self._call("describe_stack_set_operation", StackSetName=name, OperationId=operation_id)[
            "StackSetOperation"
        ]
        status = str(op["Status"])
        reason = str(op.get("StatusReason") or "")
        if status == "FAILED" and not reason:
            results = self._pages(
                "list_stack_set_operation_results", StackSetName=name, OperationId=operation_id
            )
            failed = [r for r in results if r.get("Status") == "FAILED"]
            if failed:
                reason = f"account {failed[0]['Account']}: {failed[0].get('StatusReason', '')}"
        return status, reason

    def remove_instances(self, name: str, accounts: list[str], region: str, retain: bool = False) -> str:
        """Delete the instances of exactly these accounts, wherever they sit in the organization now (the root as
        the OU, narrowed to the accounts), so an account moved to another OU or excluded later is found too. With
        ``retain``, detach them and leave their stacks (the only way out for closed accounts: ``MemberAccounts``)."""
        with self.writing():
            result = self._call(
                "delete_stack_instances",
                StackSetName=name,
                DeploymentTargets={
                    "OrganizationalUnitIds": [self.root()],
                    "Accounts": accounts,
                    "AccountFilterType": "INTERSECTION",
                },
                Regions=[region],
                RetainStacks=retain,
            )
        return str(result["OperationId"])

    def delete(self, name: str) -> None:
        with self.writing():
            self._call("delete_stack_set", StackSetName=name)
