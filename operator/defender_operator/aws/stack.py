"""The CloudFormation stack of one onboarding: observe, create, update, delete, failure reasons, drift.

Calls return at once; CloudFormation works in the background and the next reconcile pass looks again. The template
hash travels as a stack tag, so one DescribeStacks tells whether the stack already has the desired template.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from ..ownership import Owner
from ..writes import Writing, unrecorded
from .api import AwsClientError, call

HASH_TAG = "defender-operator-template-hash"
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
FAILED_RESOURCE_STATES = {"CREATE_FAILED", "UPDATE_FAILED", "DELETE_FAILED"}
# The stack events of a continued rollback after the one that failed, newest first (User Guide, "Stack status codes")
ROLLBACK_ENDING = {
    "UPDATE_ROLLBACK_COMPLETE",
    "UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS",
    "UPDATE_ROLLBACK_IN_PROGRESS",
}


@dataclass(frozen=True)
class ObservedStack:
    stack_id: str
    status: str
    status_reason: str
    template_hash: str | None
    tags: dict[str, str]
    outputs: dict[str, str]
    parameters: dict[str, str]
    created: Any = None  # CreationTime: the second proof of ownership (reconcile/proofs.py)

    @property
    def in_progress(self) -> bool:
        return self.status.endswith("_IN_PROGRESS")


@dataclass(frozen=True)
class ChangeSetState:
    """What DescribeChangeSet says of a change set the operator made."""

    status: (
        str  # CREATE_PENDING, CREATE_IN_PROGRESS, CREATE_COMPLETE, FAILED; or GONE (see change_set_status)
    )
    reason: str = ""
    template_hash: str | None = None  # the template hash tag the change set gives the stack, if any

    @property
    def empty(self) -> bool:
        """FAILED because there was nothing to change (CloudFormation's StatusReason, API_DescribeChangeSet.html)."""
        return self.status == "FAILED" and "didn't contain changes" in self.reason


@dataclass(frozen=True)
class DriftResult:
    """A finished drift detection: which resources differ from the template."""

    drifted: bool
    resources: list[str] = field(default_factory=list)


def idempotency_token(kind: str) -> str:
    """A fresh ClientRequestToken for one attempt. botocore resends the same parameters when it retries a call, so
    a retried request is not applied twice; a new attempt (after a rollback, a fix, a later pass) gets a new token,
    because CloudFormation answers a reused token with the outcome of the request it first came with
    (API_CreateStack.html, API_UpdateStack.html: "ClientRequestToken")."""
    return f"defender-operator-{kind}-{uuid.uuid4().hex}"


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]


class Stacks:
    def __init__(
        self,
        cloudformation: Any,
        planned: list[str] | None = None,
        writing: Writing = unrecorded,
        iam: Any = None,
    ) -> None:
        """With ``planned``, writes are not made but described there (``defender-operator plan``);
        ``writing`` wraps every call that changes something (the operator records that it wrote); ``iam`` (the same
        account's) tells whether a role of the stack still exists."""
        self.cf, self.planned, self.writing, self.iam = cloudformation, planned, writing, iam

    @property
    def dry_run(self) -> bool:
        return self.planned is not None

    def observe(self, name: str) -> ObservedStack | None:
        try:
            stacks = call(self.cf, "describe_stacks", StackName=name)["Stacks"]
        except AwsClientError as exc:
            if exc.code == "ValidationError" and "does not exist" in exc.aws_message:
                return None
            raise
        stack = stacks[0]
        if stack["StackStatus"] == "DELETE_COMPLETE":
            return None
        tags = {t["Key"]: t["Value"] for t in stack.get("Tags", [])}
        return ObservedStack(
            stack_id=stack["StackId"],
            status=stack["StackStatus"],
            status_reason=stack.get("StackStatusReason", ""),
            template_hash=tags.get(HASH_TAG),
            tags=tags,
            outputs={o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs") or []},
            parameters={
                p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters") or []
            },
            created=stack.get("CreationTime"),
        )

    def _tags(self, template_hash: str, owner: Owner) -> list[dict[str, str]]:
        return tag_list({HASH_TAG: template_hash, **owner.tags()})

    def create(
        self, name: str, body: str, template_hash: str, parameters: dict[str, str], owner: Owner
    ) -> str | None:
        """The new stack's id; None when a stack of that name exists already (CloudFormation refuses to create
        it, AlreadyExistsException, and changes nothing), so a caller may try the create before any read."""
        if self.planned is not None:
            self.planned.append(f"create stack {name} (template {template_hash[:12]})")
            return ""
        try:
            with self.writing():
                result = call(
                    self.cf,
                    "create_stack",
                    **self._template(name, body, template_hash, parameters, owner),
                    ClientRequestToken=idempotency_token("create"),
                    OnFailure="ROLLBACK",
                )
        except AwsClientError as exc:
            if exc.code == "AlreadyExistsException":
                return None
            raise
        return str(result["StackId"])

    def _template(
        self, name: str, body: str, template_hash: str, parameters: dict[str, str], owner: Owner
    ) -> dict[str, Any]:
        """The arguments CreateStack and UpdateStack share: the template, its parameters and the stack's tags."""
        return {
            "StackName": name,
            "TemplateBody": body,
            "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in sorted(parameters.items())],
            "Capabilities": CAPABILITIES,
            "Tags": self._tags(template_hash, owner),
        }

    def update(
        self, name: str, body: str, template_hash: str, parameters: dict[str, str], owner: Owner
    ) -> bool:
        """Start an update; False when CloudFormation finds nothing to change."""
        if self.planned is not None:
            self.planned.append(f"update stack {name} (template {template_hash[:12]})")
            return True
        try:
            with self.writing():
                call(
                    self.cf,
                    "update_stack",
                    **self._template(name, body, template_hash, parameters, owner),
                    ClientRequestToken=idempotency_token("update"),
                )
        except AwsClientError as exc:
            if exc.code == "ValidationError" and "No updates are to be performed" in exc.aws_message:
                return False
            raise
        return True

    def delete(self, name_or_id: str) -> None:
        if self.planned is not None:
            self.planned.append(f"delete stack {name_or_id}")
            return
        with self.writing():
            call(self.cf, "delete_stack", StackName=name_or_id)

    def first_failure(self, stack_id: str) -> str:
        """The reason of the earliest failed resource of the latest operation, as CloudFormation words it."""
        events = call(self.cf, "describe_stack_events", StackName=stack_id)["StackEvents"]  # newest first
        failures = []
        for event in events:
            if event["ResourceStatus"] in FAILED_RESOURCE_STATES and event["LogicalResourceId"] != event.get(
                "StackName"
            ):
                failures.append(event)
            if (
                event["ResourceType"] == "AWS::CloudFormation::Stack"
                and event["ResourceStatus"]
                in (
                    "CREATE_IN_PROGRESS",
                    "UPDATE_IN_PROGRESS",
                )
                and event.get("ResourceStatusReason") == "User Initiated"
            ):
                break
        if not failures:
            return ""
        first = failures[-1]
        return f"{first['LogicalResourceId']}: {first.get('ResourceStatusReason', first['ResourceStatus'])}"

    # --- a rollback that failed --------------------------------------------------------------------------------------

    def roles_gone_in_failed_rollback(self, stack_id: str) -> list[str]:
        """The logical ids of the resources the stack's latest failed rollback failed on, if each is a role that no
        longer exists in IAM: someone deleted it, and CloudFormation, which still believes in it, could neither
        update nor restore it (User Guide, troubleshooting, "Update rollback failed"). Read from the stack's events
        (newest first; a rollback continued since, ``UPDATE_ROLLBACK_COMPLETE``, still names them), so that no
        record of the operator's can be lost between ContinueUpdateRollback and the next pass. Empty when the
        latest operation is no such rollback, or when any resource failed for another reason (a person must look)."""
        events = call(self.cf, "describe_stack_events", StackName=stack_id)["StackEvents"]
        failed: dict[str, str] = {}
        collecting = False
        for event in events:
            if event["LogicalResourceId"] == event.get("StackName"):
                state = event["ResourceStatus"]
                if collecting and state == "UPDATE_ROLLBACK_IN_PROGRESS":
                    break  # the start of the rollback that failed
                if state == "UPDATE_ROLLBACK_FAILED":
                    collecting = True
                elif not collecting and state not in ROLLBACK_ENDING:
                    return []  # the latest operation is something else
                continue
            if collecting and event["ResourceStatus"] == "UPDATE_FAILED":
                if event["ResourceType"] != "AWS::IAM::Role" or not event.get("PhysicalResourceId"):
                    return []
                failed[event["LogicalResourceId"]] = event["PhysicalResourceId"]
        for role in failed.values():
            try:
                call(self.iam, "get_role", RoleName=role)
            except AwsClientError as exc:
                if exc.code == "NoSuchEntity":
                    continue
                raise
            return []  # it exists: its rollback failed for another reason
        return sorted(failed)

    def continue_rollback(self, stack_id: str, skipping: list[str]) -> bool:
        """Finish a failed rollback without the resources ``skipping`` (API_ContinueUpdateRollback.html); False when
        the stack is no longer UPDATE_ROLLBACK_FAILED (another replica or a person continued it first)."""
        if self.planned is not None:
            self.planned.append(f"continue the rollback of stack {stack_id} without {', '.join(skipping)}")
            return True
        try:
            with self.writing():
                call(
                    self.cf,
                    "continue_update_rollback",
                    StackName=stack_id,
                    ResourcesToSkip=skipping,
                    ClientRequestToken=idempotency_token("rollback"),
                )
        except AwsClientError as exc:
            if exc.code == "ValidationError":
                return False
            raise
        return True

    # --- drift -------------------------------------------------------------------------------------------------------

    def start_drift_detection(self, name: str) -> str:
        return str(call(self.cf, "detect_stack_drift", StackName=name)["StackDriftDetectionId"])

    def drift_result(self, name: str, detection_id: str) -> DriftResult | None:
        """None while detection runs."""
        status = call(self.cf, "describe_stack_drift_detection_status", StackDriftDetectionId=detection_id)
        if status["DetectionStatus"] == "DETECTION_IN_PROGRESS":
            return None
        if status.get("StackDriftStatus") != "DRIFTED":
            return DriftResult(drifted=False)
        drifts = call(
            self.cf,
            "describe_stack_resource_drifts",
            StackName=name,
            StackResourceDriftStatusFilters=["MODIFIED", "DELETED"],
        )["StackResourceDrifts"]
        return DriftResult(
            drifted=True,
            resources=sorted(
                f"{d['LogicalResourceId']} ({d['StackResourceDriftStatus'].lower()})" for d in drifts
            ),
        )

    def start_drift_repair(
        self, name: str, parameters: dict[str, str], template: tuple[str, str, Owner] | None = None
    ) -> str:
        """A drift-aware change set that puts drifted resources back to the template
        (docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/drift-aware-change-sets.html): the stack's own
        template, or ``template`` (body, hash, owner), which the change set deploys as UpdateStack would, over the
        live resources rather than over what CloudFormation believes they are."""
        if self.planned is not None:
            self.planned.append(f"create a drift-aware change set for stack {name}")
            return ""
        if template is None:
            changes: dict[str, Any] = {
                "StackName": name,
                "UsePreviousTemplate": True,
                "Parameters": [{"ParameterKey": k, "UsePreviousValue": True} for k in sorted(parameters)],
                "Capabilities": CAPABILITIES,
            }
        else:
            body, template_hash, owner = template
            changes = self._template(name, body, template_hash, parameters, owner)
        with self.writing():
            result = call(
                self.cf,
                "create_change_set",
                **changes,
                ChangeSetName=idempotency_token("repair"),
                ChangeSetType="UPDATE",
                DeploymentMode="REVERT_DRIFT",
                ClientToken=idempotency_token("repair"),
            )
        return str(result["Id"])

    def change_set_status(self, change_set_id: str) -> ChangeSetState:
        """A change set's Status, StatusReason and template hash tag; GONE when it no longer exists or can no longer
        be executed (executed already: a pass that died after ExecuteChangeSet and before its status was written;
        or made obsolete by another update of the stack)."""
        try:
            result = call(self.cf, "describe_change_set", ChangeSetName=change_set_id)
        except AwsClientError as exc:
            if exc.code in ("ChangeSetNotFound", "ChangeSetNotFoundException", "ValidationError"):
                return ChangeSetState("GONE")
            raise
        if (
            result["Status"] == "CREATE_COMPLETE"
            and result.get("ExecutionStatus", "AVAILABLE") != "AVAILABLE"
        ):
            return ChangeSetState("GONE")
        tags = {t["Key"]: t["Value"] for t in result.get("Tags") or []}
        return ChangeSetState(
            str(result["Status"]), str(result.get("StatusReason") or ""), tags.get(HASH_TAG)
        )

    def execute_change_set(self, change_set_id: str) -> None:
        if self.planned is not None:
            self.planned.append(f"execute change set {change_set_id}")
            return
        with self.writing():
            call(self.cf, "execute_change_set", ChangeSetName=change_set_id)

    def delete_change_set(self, change_set_id: str) -> None:
        if self.planned is not None:
            self.planned.append(f"delete change set {change_set_id}")
            return
        try:
            with self.writing():
                call(self.cf, "delete_change_set", ChangeSetName=change_set_id)
        except AwsClientError as exc:
            if exc.code not in ("ChangeSetNotFound", "ChangeSetNotFoundException", "ValidationError"):
                raise
