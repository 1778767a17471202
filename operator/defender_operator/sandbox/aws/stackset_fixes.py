"""StackSets and the identity-provider resource in moto, made faithful where defender-operator depends on them.

- ``AWS::IAM::OIDCProvider`` exists in CloudFormation (docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/
  aws-resource-iam-oidcprovider.html; ``Ref`` returns the ARN); moto skips it with a warning, so trust policies that
  ``Ref`` it come out empty. The member template creates it.
- ``CreateStackInstances`` honours ``DeploymentTargets.AccountFilterType`` (DIFFERENCE excludes the listed accounts
  from the OUs' accounts, INTERSECTION keeps only them: API_DeploymentTargets.html), covers child OUs at any depth,
  and never deploys a second instance to an account and region that have one; moto adds the listed accounts,
  descends one level and duplicates instances.
- ``DeleteStackInstances`` with ``DeploymentTargets.OrganizationalUnitIds`` deletes the OUs' instances, narrowed by
  ``AccountFilterType``; moto deletes nothing (then DeleteStackSet fails with StackSetNotEmptyException).
- ``UpdateStackSet`` with a new template updates every stack instance; moto only records the operation.
- A stack instance reports its member stack's state (API_StackInstanceSummary.html): ``CURRENT``/``SUCCEEDED`` once
  the stack is complete, ``OUTDATED``/``FAILED`` with the failing resource's reason when it rolled back; moto says
  ``CURRENT``/``SUCCEEDED`` whatever happened.
- ``DescribeStackSetOperation`` returns the ``OperationPreferences`` and ``DeploymentTargets`` the operation was
  started with (API_StackSetOperation.html); moto drops them (they are recorded, not enforced: failure tolerance
  does not stop a deployment here).
- ``ListStackInstances`` and ``ListStackSetOperationResults`` are paged (``MaxResults`` 1-100, ``NextToken``:
  API_ListStackInstances.html); moto returns everything at once, which hides a client that reads one page only.
- A stack instance's resources are made by StackSets' own execution role in the member account
  (``stacksets-exec-*``, AWSCloudFormationStackSetExecutionRole: stacksets-orgs-activate-trusted-access.html), never
  with the caller's permissions, so the emulator's authorization of what CloudFormation does for its caller skips
  them (it matters where the caller's own account is a target: a delegated administrator's).
- ``ListStackSets`` honours its ``Status`` filter (ACTIVE or DELETED); moto lists deleted stack sets either way.
- A StackSet's name is unique among the account's StackSets that are not deleted, and ``CreateStackSet`` is
  idempotent on its ``ClientRequestToken``, which the SDK fills in when the caller does not and sends again on each of
  its own retries (API_CreateStackSet.html: "Specify this token if you plan to retry requests so that CloudFormation
  knows that you're not attempting to create another StackSet with the same name"; errors:
  ``NameAlreadyExistsException``, "The specified name is already in use"). moto makes one more StackSet of the same
  name for every call, so an answer lost on the way back (the campaign's seed 65218: the SDK retried a
  ``CreateStackSet`` whose answer was dropped) left StackSets no one knew of, which the deletion of the one known
  left behind.
- One operation at a time: an operation runs until the member stacks it touched are complete, so
  ``DescribeStackSetOperation`` says ``RUNNING`` while one of them is in progress (with a stack delay configured).
  Meanwhile a StackSet with ``ManagedExecution`` active queues every other operation (``CreateStackInstances``,
  ``DeleteStackInstances``, ``UpdateStackSet``): ``QUEUED``, then started in request order once the StackSet is free
  (API_ManagedExecution.html: "StackSets ... queues conflicting operations. After conflicting operations finish,
  StackSets starts queued operations in request order"; "If there are already running or queued operations,
  StackSets queues all incoming operations"); without it they are refused (API_CreateStackInstances.html and the
  other writes: "OperationInProgressException: Another operation is currently in progress for this stack set. Only
  one operation can be performed for a stack set at a given time", HTTP 409), and ``DeleteStackSet`` is refused
  either way (it is no operation). moto reports every operation ``SUCCEEDED`` at once, ignores ``ManagedExecution``,
  and deletes a member stack still being created, whose resources the pending creation then makes anyway, in an
  account no StackSet reaches any more.
"""

import uuid
from collections.abc import Callable
from typing import Any

from moto.cloudformation.exceptions import CloudFormationError
from moto.cloudformation.models import StackInstance, StackInstances, StackSet
from moto.cloudformation.responses import CloudFormationResponse, StackSetOperationDTO
from moto.core.common_models import CloudFormationModel
from moto.core.responses import ActionResult
from moto.iam.models import iam_backends
from moto.organizations.models import FakeAccount, organizations_backends
from moto.utilities.utils import get_partition

from . import authorization, delays


class OidcProviderResource(CloudFormationModel):
    def __init__(self, arn: str, account_id: str, partition: str) -> None:
        self.arn, self.account_id, self.partition = arn, account_id, partition

    @staticmethod
    def cloudformation_type() -> str:
        return "AWS::IAM::OIDCProvider"

    @staticmethod
    def cloudformation_name_type() -> str:
        return ""

    @property
    def physical_resource_id(self) -> str:
        return self.arn

    @classmethod
    def has_cfn_attr(cls, attr: str) -> bool:
        return attr == "Arn"

    def get_cfn_attribute(self, attribute_name: str) -> str:
        return self.arn

    @classmethod
    def create_from_cloudformation_json(
        cls,
        resource_name: str,
        cloudformation_json: dict[str, Any],
        account_id: str,
        region_name: str,
        **kwargs: Any,
    ) -> "OidcProviderResource":
        properties = cloudformation_json["Properties"]
        partition = get_partition(region_name)
        provider = iam_backends[account_id][partition].create_open_id_connect_provider(
            properties["Url"],
            properties.get("ThumbprintList", []),
            properties.get("ClientIdList", []),
            properties.get("Tags", []),
        )
        return cls(provider.arn, account_id, partition)

    @classmethod
    def delete_from_cloudformation_json(
        cls, resource_name: str, cloudformation_json: dict[str, Any], account_id: str, region_name: str
    ) -> None:
        backend = iam_backends[account_id][get_partition(region_name)]
        if resource_name in backend.open_id_providers:
            backend.delete_open_id_connect_provider(resource_name)

    def delete(self, account_id: str, region_name: str) -> None:
        self.delete_from_cloudformation_json(self.arn, {}, account_id, region_name)


_original_create_instances = StackInstances.create_instances


def _create_instances(self: StackInstances, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    with authorization.acting_for(None):  # StackSets' own execution roles create the instances' resources
        return _create_each(self, *args, **kwargs)


def _create_each(
    self: StackInstances,
    accounts: list[str],
    regions: list[str],
    parameters: list[dict[str, Any]] | None,
    deployment_targets: dict[str, Any],
    permission_model: str,
) -> list[dict[str, Any]]:
    """Service-managed targets: the OUs' accounts (and their child OUs'), filtered by AccountFilterType, and never
    a second instance for an account and region that have one."""
    ou_ids = deployment_targets.get("OrganizationalUnitIds") or []
    if not ou_ids:
        return _original_create_instances(
            self, accounts, regions, parameters, deployment_targets, permission_model
        )
    mode = deployment_targets.get("AccountFilterType", "NONE")
    listed = set(deployment_targets.get("Accounts") or [])
    closed = _closed(self.org_backend)
    in_ous = [a for a in _accounts_in(self.org_backend, ou_ids) if a not in closed]  # skipped there
    if mode == "DIFFERENCE":
        chosen = [a for a in in_ous if a not in listed]
    elif mode == "INTERSECTION":
        chosen = [a for a in in_ous if a in listed]
    else:
        chosen = list(in_ous)
    created = []
    for region in regions:
        existing = {i.account_id for i in self.stack_instances if i.region_name == region}
        fresh = [a for a in chosen if a not in existing]
        if fresh:
            created += _original_create_instances(self, fresh, [region], parameters, {}, permission_model)
    return created


def _accounts_in(org: Any, ou_ids: list[str]) -> list[str]:
    """Accounts under these OUs (or the root), child OUs included, as a service-managed StackSet deploys to them."""
    wanted, pending = set(), list(ou_ids)
    while pending:
        parent = pending.pop()
        wanted.add(parent)
        pending += [ou.id for ou in org.ou if ou.parent_id == parent and ou.id not in wanted]
    root = org.org.root_id if getattr(org, "org", None) else None
    management = org.org.master_account_id if getattr(org, "org", None) else None
    return [
        a.id
        for a in org.accounts
        if (a.parent_id in wanted or (root in wanted and a.parent_id == root)) and a.id != management
    ]


def _ou_accounts(stack_set: StackSet, ou_ids: list[str]) -> list[str]:
    return _accounts_in(stack_set.instances.org_backend, ou_ids)


def _closed(org: Any) -> set[str]:
    """The organization's closed accounts (moto's CloseAccount makes them SUSPENDED)."""
    return {a.id for a in org.accounts if a.status != "ACTIVE"}


def _account_closed(account_id: str) -> bool:
    """Whether a member account is closed, found through its organization's management account."""
    management = organizations_backends.master_accounts.get(account_id)
    if management is None:
        return False
    org = organizations_backends[management[0]][management[1]]
    return any(a.id == account_id and a.status != "ACTIVE" for a in org.accounts)


# (StackSet id, account) of instances whose deletion failed because the account is closed: INOPERABLE until
# detached (RetainStacks).
_INOPERABLE: set[tuple[str, str]] = set()


_original_delete_instances = CloudFormationResponse.delete_stack_instances


def _delete_stack_instances(self: CloudFormationResponse) -> Any:
    targets = self._get_params().get("DeploymentTargets") or {}
    if not targets.get("OrganizationalUnitIds"):
        return _original_delete_instances(self)
    stack_set = self.cloudformation_backend.describe_stack_set(self._get_param("StackSetName"))
    accounts = _ou_accounts(stack_set, targets["OrganizationalUnitIds"])
    listed, mode = set(targets.get("Accounts") or []), targets.get("AccountFilterType", "NONE")
    if mode == "INTERSECTION":
        accounts = [a for a in accounts if a in listed]
    elif mode == "DIFFERENCE":
        accounts = [a for a in accounts if a not in listed]
    regions = self._get_param("Regions", [])
    closed = _closed(stack_set.instances.org_backend)
    if str(self._get_param("RetainStacks")).lower() == "true":  # detached: the stacks stay where they are
        instances = stack_set.instances.stack_instances
        for instance in [i for i in instances if i.account_id in accounts and i.region_name in regions]:
            instances.remove(instance)
            _INOPERABLE.discard((stack_set.id, instance.account_id))
        accounts = []
    else:
        _INOPERABLE.update(
            (stack_set.id, i.account_id)
            for i in stack_set.instances.stack_instances
            if i.account_id in accounts and i.account_id in closed and i.region_name in regions
        )
        accounts = [a for a in accounts if a not in closed]
    with authorization.acting_for(None):
        stack_set.delete_stack_instances(accounts, regions)
    return ActionResult({"OperationId": stack_set.operations[-1]["OperationId"]})


_original_update = StackSet.update


def _update(self: StackSet, template: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    operation = _original_update(self, template, *args, **kwargs)
    if template:
        with authorization.acting_for(None):
            _update_instances(self, template)
    return operation


def _update_instances(self: StackSet, template: str) -> None:
    closed = _closed(self.instances.org_backend)
    for instance in self.stack_instances:
        if instance.account_id in closed:  # skipped: the instance keeps its template
            continue
        instance.template = template
        instance.stack.update(template, parameters=instance.stack.resource_map.input_parameters)


_FAILED_STACK = {"ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "UPDATE_ROLLBACK_COMPLETE", "UPDATE_ROLLBACK_FAILED"}
_original_to_dict = StackInstance.to_dict


def _instance_summary(self: StackInstance) -> dict[str, Any]:
    summary = _original_to_dict(self)
    stack_status = getattr(getattr(self, "stack", None), "status", "CREATE_COMPLETE")
    if (self.stackset_id, self.account_id) in _INOPERABLE:
        summary.update(
            {
                "Status": "INOPERABLE",
                "StatusReason": f"Account {self.account_id} is suspended: the stack instance could not be deleted",
                "StackInstanceStatus": {"DetailedStatus": "INOPERABLE"},
            }
        )
    elif _account_closed(self.account_id):
        summary.update(
            {"Status": "OUTDATED", "StackInstanceStatus": {"DetailedStatus": "SKIPPED_SUSPENDED_ACCOUNT"}}
        )
    elif stack_status in _FAILED_STACK:
        failures = [
            e
            for e in self.stack.events
            if str(e.resource_status).endswith("_FAILED") and e.resource_status_reason
        ]
        reason = failures[0].resource_status_reason if failures else stack_status
        summary.update(
            {
                "Status": "OUTDATED",
                "StatusReason": f"ResourceLogicalId:{failures[0].logical_resource_id}, {reason}"
                if failures
                else reason,
                "StackInstanceStatus": {"DetailedStatus": "FAILED"},
            }
        )
    elif stack_status.endswith("_IN_PROGRESS"):
        summary.update({"Status": "OUTDATED", "StackInstanceStatus": {"DetailedStatus": "RUNNING"}})
    return summary


def _paged(name: str) -> None:
    original = getattr(CloudFormationResponse, name)

    def paged(self: CloudFormationResponse) -> Any:
        everything: dict[str, Any] = original(self).result
        items = list(everything.get("Summaries") or [])
        size = min(int(self._get_param("MaxResults") or 100), delays.Settings.page_size)
        start = int(self._get_param("NextToken") or 0)
        page: dict[str, Any] = {"Summaries": items[start : start + size]}
        if start + size < len(items):
            page["NextToken"] = str(start + size)
        return ActionResult(page)

    setattr(CloudFormationResponse, name, paged)


# OperationPreferences and DeploymentTargets of each operation, as given (moto ignores them; DescribeStackSetOperation
# returns them: API_StackSetOperation.html), so a test can see what the operator asked for.
_PREFERENCES: dict[str, dict[str, Any]] = {}
_TARGETS: dict[str, dict[str, Any]] = {}


def _recording_preferences(name: str) -> None:
    original = getattr(CloudFormationResponse, name)

    def recorded(self: CloudFormationResponse) -> Any:
        result = original(self)
        preferences = self._get_param("OperationPreferences")
        targets = self._get_param("DeploymentTargets")
        operation_id = (getattr(result, "result", None) or {}).get("OperationId")
        if preferences and operation_id:
            _PREFERENCES[operation_id] = dict(preferences)
        if targets and operation_id:
            _TARGETS[operation_id] = dict(targets)
        return result

    setattr(CloudFormationResponse, name, recorded)


class OperationInProgress(CloudFormationError):
    code = "OperationInProgressException"


class NameAlreadyExists(CloudFormationError):
    code = "NameAlreadyExistsException"


def _created_once() -> None:
    """``CreateStackSet``: a retry of a request already applied (its token) answers as the first did; any other
    creation of a name in use is refused."""
    original = CloudFormationResponse.create_stack_set

    def create(self: CloudFormationResponse) -> Any:
        name, token = self._get_param("StackSetName"), self._get_param("ClientRequestToken")
        for stack_set in self.cloudformation_backend.stacksets.values():
            if stack_set.name == name and stack_set.status != "DELETED":
                if token and getattr(stack_set, "request_token", None) == token:
                    return ActionResult({"StackSetId": stack_set.id})
                raise NameAlreadyExists("The specified name is already in use.")
        result = original(self)
        self.cloudformation_backend.describe_stack_set(name).request_token = token  # type: ignore[attr-defined]
        return result

    CloudFormationResponse.create_stack_set = create  # type: ignore[method-assign]


QUEUE_POLL_SECONDS = 0.2
_QUEUED: dict[
    str, list[Callable[[], None]]
] = {}  # StackSet id -> operations waiting to start, in request order
_STARTED: dict[str, dict[str, Any]] = {}  # StackSet id -> the operation that started last


def _busy(stack_set: StackSet) -> bool:
    """Its last operation still runs: a member stack it touched is in progress."""
    return any(
        str(getattr(getattr(i, "stack", None), "status", "")).endswith("_IN_PROGRESS")
        for i in stack_set.instances.stack_instances
    )


def _start(stack_set: StackSet, run: Callable[[], Any], operation_id: str | None = None) -> Any:
    """Run an operation now; ``operation_id``: the id it was queued under, which the operation keeps."""
    before = len(stack_set.operations)
    result = run()
    if len(stack_set.operations) > before:
        operation = stack_set.operations[-1]
        if operation_id is not None:
            del stack_set.operations[-1]
            placeholder = next(o for o in stack_set.operations if o["OperationId"] == operation_id)
            for recorded in (_PREFERENCES, _TARGETS):
                if operation["OperationId"] in recorded:
                    recorded[operation_id] = recorded.pop(operation["OperationId"])
            placeholder.update({**operation, "OperationId": operation_id})
            operation = placeholder
        _STARTED[stack_set.id] = operation
    return result


def _drain(stack_set: StackSet) -> None:
    """Start the queued operations one at a time, each once the one before it has finished."""
    queue = _QUEUED.get(stack_set.id)
    if not queue:
        return
    if not _busy(stack_set):
        queue.pop(0)()
    if queue:
        delays.after(QUEUE_POLL_SECONDS, lambda: _drain(stack_set))


def _one_operation_at_a_time(name: str, action: str | None) -> None:
    """``action``: the operation's kind (CREATE, DELETE, UPDATE); None for DeleteStackSet, which is no operation."""
    original = getattr(CloudFormationResponse, name)

    def one_at_a_time(self: CloudFormationResponse) -> Any:
        try:
            stack_set = self.cloudformation_backend.describe_stack_set(self._get_param("StackSetName"))
        except Exception:  # no such StackSet: moto's own answer
            return original(self)
        if not _busy(stack_set) and not _QUEUED.get(stack_set.id):
            return _start(stack_set, lambda: original(self))
        if action is None or not getattr(stack_set, "managed_active", False):
            raise OperationInProgress(f"Another Operation on StackSet {stack_set.id} is in progress")
        operation_id = str(uuid.uuid4())
        stack_set._create_operation(operation_id=operation_id, action=action, status="QUEUED")
        queue = _QUEUED.setdefault(stack_set.id, [])
        principal = authorization.current()

        def start() -> None:
            with authorization.acting_for(principal):
                _start(stack_set, lambda: original(self), operation_id)

        queue.append(start)
        if len(queue) == 1:
            delays.after(QUEUE_POLL_SECONDS, lambda: _drain(stack_set))
        return ActionResult({"OperationId": operation_id})

    setattr(CloudFormationResponse, name, one_at_a_time)


_original_operation_dto = StackSetOperationDTO.__init__


def _operation_dto(self: StackSetOperationDTO, operation: dict[str, Any], stack_set: StackSet) -> None:
    _original_operation_dto(self, operation, stack_set)
    # only the operation that started last can still run
    if operation is _STARTED.get(stack_set.id) and _busy(stack_set):
        self.status = "RUNNING"
    self.operation_preferences = _PREFERENCES.get(operation["OperationId"])  # type: ignore[attr-defined]
    self.deployment_targets = _TARGETS.get(operation["OperationId"])  # type: ignore[attr-defined]


def _list_stack_sets(self: CloudFormationResponse) -> ActionResult:
    """``Status`` (ACTIVE or DELETED) filters the stack sets listed (API_ListStackSets.html); moto ignores it and
    lists deleted stack sets beside active ones."""
    wanted = self._get_param("Status")
    stack_sets = self.cloudformation_backend.list_stack_sets()
    return ActionResult({"Summaries": [s for s in stack_sets if wanted is None or s.status == wanted]})


def _recording_settings(name: str) -> None:
    """``AutoDeployment`` and ``ManagedExecution`` as the StackSet was created or last updated with them (moto
    drops both: DescribeStackSet returns them, API_StackSet.html, and the latter decides whether a busy StackSet
    queues or refuses)."""
    original = getattr(CloudFormationResponse, name)

    def recorded(self: CloudFormationResponse) -> Any:
        result = original(self)
        auto, managed = self._get_param("AutoDeployment"), self._get_param("ManagedExecution")
        if auto or managed:
            stack_set = self.cloudformation_backend.describe_stack_set(self._get_param("StackSetName"))
        if auto:
            stack_set.auto_deployment = {  # type: ignore[attr-defined]
                key: str(value).lower() == "true" for key, value in dict(auto).items()
            }
        if managed:
            stack_set.managed_active = str(dict(managed).get("Active")).lower() == "true"  # type: ignore[attr-defined]
        return result

    setattr(CloudFormationResponse, name, recorded)


def _close(self: FakeAccount) -> None:
    _original_close(self)
    self.state = "CLOSED"


_original_close = FakeAccount.close


def apply() -> None:
    FakeAccount.close = _close  # type: ignore[method-assign]
    CloudFormationResponse.list_stack_sets = _list_stack_sets  # type: ignore[method-assign]
    for name in ("create_stack_set", "update_stack_set"):
        _recording_settings(name)
    _created_once()
    for name in ("create_stack_instances", "update_stack_set"):
        _recording_preferences(name)
    StackSetOperationDTO.__init__ = _operation_dto  # type: ignore[method-assign]
    # OidcProviderResource registers itself with moto's template parser by subclassing CloudFormationModel.
    StackInstances.create_instances = _create_instances  # type: ignore[method-assign]
    CloudFormationResponse.delete_stack_instances = _delete_stack_instances  # type: ignore[method-assign]
    StackSet.update = _update  # type: ignore[method-assign]
    StackInstance.to_dict = _instance_summary  # type: ignore[method-assign]
    for name in ("list_stack_instances", "list_stack_set_operation_results"):
        _paged(name)
    StackSet.managed_execution = property(  # type: ignore[method-assign,assignment]
        lambda self: {"Active": getattr(self, "managed_active", False)}
    )
    for name, action in (
        ("create_stack_instances", "CREATE"),
        ("delete_stack_instances", "DELETE"),
        ("update_stack_set", "UPDATE"),
        ("delete_stack_set", None),
    ):
        _one_operation_at_a_time(name, action)
