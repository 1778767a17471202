"""CloudFormation drift detection for IAM roles, which moto does not implement (it answers HTTP 500).

DetectStackDrift compares each resource's template properties with the live resource and records a detection;
DescribeStackDriftDetectionStatus reports it; DescribeStackResourceDrifts lists per-resource results with property
differences (docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_DetectStackDrift.html and
API_DescribeStackResourceDrifts.html). Roles are checked for what defender-operator owns: trust policy,
description, inline policies and managed policies. Other resource types are reported NOT_CHECKED, as AWS does for
types that do not support drift detection.
"""

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from moto.cloudformation.exceptions import CloudFormationError, ValidationError
from moto.cloudformation.parsing import clean_json
from moto.cloudformation.responses import CloudFormationResponse
from moto.core.responses import ActionResult
from moto.iam.models import iam_backends
from moto.utilities.utils import get_partition

_DETECTIONS: dict[str, dict[str, Any]] = {}


def reset() -> None:
    _DETECTIONS.clear()


def _normalised(document: Any) -> Any:
    if isinstance(document, str):
        from urllib.parse import unquote

        try:
            document = json.loads(unquote(document))
        except ValueError:
            return document
    return json.loads(json.dumps(document, sort_keys=True))


def _role_properties(properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "AssumeRolePolicyDocument": _normalised(properties.get("AssumeRolePolicyDocument")),
        "Description": properties.get("Description", ""),
        "ManagedPolicyArns": sorted(properties.get("ManagedPolicyArns", [])),
        "Policies": sorted(
            (
                {"PolicyName": p["PolicyName"], "PolicyDocument": _normalised(p["PolicyDocument"])}
                for p in properties.get("Policies", [])
            ),
            key=lambda p: str(p["PolicyName"]),
        ),
    }


def _live_role(account_id: str, region: str, name: str) -> dict[str, Any] | None:
    backend = iam_backends[account_id][get_partition(region)]
    role = next((r for r in backend.roles.values() if r.name == name), None)
    if role is None:
        return None
    return {
        "AssumeRolePolicyDocument": _normalised(role.assume_role_policy_document),
        "Description": role.description or "",
        "ManagedPolicyArns": sorted(role.managed_policies),
        "Policies": sorted(
            ({"PolicyName": n, "PolicyDocument": _normalised(d)} for n, d in role.policies.items()),
            key=lambda p: str(p["PolicyName"]),
        ),
    }


def resource_drifts(stack: Any, live: bool = False) -> list[dict[str, Any]]:
    """Each resource's drift as DetectStackDrift reports it: a resource skipped by ContinueUpdateRollback is
    NOT_CHECKED (API_StackResourceDrift.html). ``live``: as a drift-aware change set reads the live resources,
    skipped or not."""
    drifts = []
    skipped: set[str] = set() if live else getattr(stack, "skipped_resources", set())
    now = datetime.now(UTC)
    resource_map = stack.resource_map
    for logical_id, resource_json in resource_map._resource_json_map.items():
        resource = resource_map._parsed_resources.get(logical_id)
        if resource is None or isinstance(resource, str):
            continue
        resource_type = resource_json["Type"]
        entry: dict[str, Any] = {
            "StackId": stack.stack_id,
            "LogicalResourceId": logical_id,
            "PhysicalResourceId": getattr(resource, "physical_resource_id", ""),
            "ResourceType": resource_type,
            "Timestamp": now,
            "PropertyDifferences": [],
        }
        if resource_type != "AWS::IAM::Role" or logical_id in skipped:
            entry["StackResourceDriftStatus"] = "NOT_CHECKED"
            drifts.append(entry)
            continue
        expected_properties = clean_json(resource_json.get("Properties", {}), resource_map)
        expected = _role_properties(expected_properties)
        actual = _live_role(
            stack.account_id, stack.region_name, expected_properties.get("RoleName", resource.name)
        )
        entry["ExpectedProperties"] = json.dumps(expected, sort_keys=True)
        if actual is None:
            entry["StackResourceDriftStatus"] = "DELETED"
        else:
            entry["ActualProperties"] = json.dumps(actual, sort_keys=True)
            differences = [
                {
                    "PropertyPath": f"/{key}",
                    "ExpectedValue": json.dumps(expected[key], sort_keys=True),
                    "ActualValue": json.dumps(actual[key], sort_keys=True),
                    "DifferenceType": "NOT_EQUAL",
                }
                for key in expected
                if expected[key] != actual[key]
            ]
            entry["PropertyDifferences"] = differences
            entry["StackResourceDriftStatus"] = "MODIFIED" if differences else "IN_SYNC"
        drifts.append(entry)
    return drifts


def _detect_stack_drift(self: CloudFormationResponse) -> ActionResult:
    stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
    drifts = resource_drifts(stack)
    drifted = sum(1 for d in drifts if d["StackResourceDriftStatus"] in ("MODIFIED", "DELETED"))
    detection_id = str(uuid.uuid4())
    _DETECTIONS[detection_id] = {
        "StackId": stack.stack_id,
        "StackDriftDetectionId": detection_id,
        "StackDriftStatus": "DRIFTED" if drifted else "IN_SYNC",
        "DetectionStatus": "DETECTION_COMPLETE",
        "DriftedStackResourceCount": drifted,
        "Timestamp": datetime.now(UTC),
    }
    return ActionResult({"StackDriftDetectionId": detection_id})


def _describe_detection(self: CloudFormationResponse) -> ActionResult:
    return ActionResult(_DETECTIONS[self._get_param("StackDriftDetectionId")])


def _describe_resource_drifts(self: CloudFormationResponse) -> ActionResult:
    stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
    wanted = set(self._get_param("StackResourceDriftStatusFilters", []) or [])
    drifts = [d for d in resource_drifts(stack) if not wanted or d["StackResourceDriftStatus"] in wanted]
    return ActionResult({"StackResourceDrifts": drifts})


# --- drift-aware change sets -----------------------------------------------------------------------------------------
# CreateChangeSet with DeploymentMode=REVERT_DRIFT compares the template with the live resources and, when executed,
# brings drifted resources back to their template definition
# (docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/drift-aware-change-sets.html). moto ignores the mode, so a
# change set with an unchanged template "didn't contain changes" and nothing is reverted.


def revert_role_drift(stack: Any) -> None:
    """Put every drifted or deleted role of the stack back to its template definition."""
    from moto.iam.models import Role

    for entry in resource_drifts(stack, live=True):
        if entry["StackResourceDriftStatus"] not in ("MODIFIED", "DELETED"):
            continue
        logical_id = entry["LogicalResourceId"]
        resource_json = clean_json(stack.resource_map._resource_json_map[logical_id], stack.resource_map)
        original = stack.resource_map._parsed_resources[logical_id]
        if entry["StackResourceDriftStatus"] == "DELETED":
            role = Role.create_from_cloudformation_json(
                original.name, resource_json, stack.account_id, stack.region_name
            )
            role.logical_resource_id = logical_id  # type: ignore[attr-defined]
            stack.resource_map._parsed_resources[logical_id] = role
        else:
            Role.update_from_cloudformation_json(
                original, original.name, resource_json, stack.account_id, stack.region_name
            )


_original_create_change_set = CloudFormationResponse.create_change_set


class InvalidChangeSetStatus(CloudFormationError):
    code = "InvalidChangeSetStatus"


def _create_change_set(self: CloudFormationResponse) -> ActionResult:
    if self._get_param("ChangeSetType", "CREATE") == "UPDATE":
        # a stack that cannot be updated gets no update change set either
        stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
        if stack.status.endswith("_IN_PROGRESS") or stack.status == "UPDATE_ROLLBACK_FAILED":
            raise ValidationError(
                stack.stack_id,
                message=f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.",
            )
    reverting = self._get_param("DeploymentMode") == "REVERT_DRIFT"
    if reverting:
        self._validate_different_update = lambda *args: None  # type: ignore[method-assign]
    result = _original_create_change_set(self)
    change_set = self.cloudformation_backend.change_sets[result.result["Id"]]  # type: ignore[index]
    if change_set.change_set_type == "UPDATE":
        # DescribeChangeSet gives the change set's tags as a list of Key/Value, which moto's dict serialises as []
        change_set.tags = [{"Key": k, "Value": v} for k, v in (change_set.tags or {}).items()]  # type: ignore[assignment]
    if not reverting:
        return result
    change_set.deployment_mode = "REVERT_DRIFT"  # type: ignore[attr-defined]
    drifted = [
        d
        for d in resource_drifts(change_set.stack, live=True)
        if d["StackResourceDriftStatus"] in ("MODIFIED", "DELETED")
    ]
    if drifted and change_set.status == "FAILED":
        change_set.status, change_set.execution_status, change_set.status_reason = (
            "CREATE_COMPLETE",
            "AVAILABLE",
            None,
        )
    return result


def _execute_change_set(backend: Any, change_set_name: str, stack_name: str | None = None) -> None:
    change_set = backend.describe_change_set(change_set_name)
    if change_set.change_set_type != "UPDATE":
        _original_execute(backend, change_set_name, stack_name)
        return
    if change_set.execution_status != "AVAILABLE":  # executed already, or obsolete
        raise InvalidChangeSetStatus(
            f"ChangeSet [{change_set.change_set_id}] cannot be executed in its current execution status of "
            f"[{change_set.execution_status}]"
        )
    stack = backend.stacks[change_set.stack_id]
    if stack.status.endswith("_IN_PROGRESS") or stack.status == "UPDATE_ROLLBACK_FAILED":
        raise InvalidChangeSetStatus(
            f"ChangeSet [{change_set.change_set_id}] cannot be executed while the stack is {stack.status}"
        )
    # "CloudFormation deletes all other change sets associated with the stack because they aren't valid for the
    # updated stack" (API_ExecuteChangeSet.html)
    for other in [
        k for k, c in backend.change_sets.items() if c.stack_id == stack.stack_id and c is not change_set
    ]:
        del backend.change_sets[other]
    stack.revert_drift = getattr(change_set, "deployment_mode", None) == "REVERT_DRIFT"
    change_set.execution_status = "EXECUTE_COMPLETE"
    # the change set's stack tags, when it has any (UpdateStack's rule: none given, the stack's are kept)
    tags = {t["Key"]: t["Value"] for t in change_set.tags or []}
    stack.update(
        change_set.template,
        change_set.role_arn,
        parameters=change_set.parameters,
        tags=tags or None,
    )


_original_execute: Any = None


def apply_change_sets() -> None:
    global _original_execute
    from moto.cloudformation.models import CloudFormationBackend

    _original_execute = CloudFormationBackend.execute_change_set
    CloudFormationResponse.create_change_set = _create_change_set  # type: ignore[method-assign]
    CloudFormationBackend.execute_change_set = _execute_change_set  # type: ignore[method-assign,assignment]


def apply() -> None:
    apply_change_sets()
    CloudFormationResponse.detect_stack_drift = _detect_stack_drift  # type: ignore[attr-defined]
    CloudFormationResponse.describe_stack_drift_detection_status = _describe_detection  # type: ignore[attr-defined]
    CloudFormationResponse.describe_stack_resource_drifts = _describe_resource_drifts  # type: ignore[attr-defined]
