"""CloudFormation in moto, made faithful where defender-operator depends on it.

- Capabilities: a template with IAM resources needs CAPABILITY_IAM, and CAPABILITY_NAMED_IAM when they have custom
  names, or CreateStack/UpdateStack fail with InsufficientCapabilitiesException
  (docs.aws.amazon.com/AWSCloudFormation/latest/APIReference/API_CreateStack.html, "Capabilities").
- Failures: a resource that cannot be created does not fail the API call. The stack records the resource's
  CREATE_FAILED event with its reason, rolls back and ends in ROLLBACK_COMPLETE; a failed update ends in
  UPDATE_ROLLBACK_COMPLETE with the previous template, parameters and stack tags restored; a failed delete ends in DELETE_FAILED
  (.../UserGuide/using-cfn-describing-stacks.html, "Stack status codes"). moto raises the resource's error from the
  API call instead and leaves half-created resources behind.
- Idempotency tokens: a CreateStack, UpdateStack or ContinueUpdateRollback that carries a ClientRequestToken the
  stack has already seen is a retry of that request, answered with the stack's id and applied no second time
  (.../APIReference/API_UpdateStack.html, "ClientRequestToken": "so that CloudFormation knows that you're not
  attempting to update a stack with the same name"). moto ignores the token, which would hide a client that reuses
  one token for a new attempt (the attempt would silently do nothing in AWS).
- Asynchrony: with a delay configured, create, update and delete stay *_IN_PROGRESS for that long before the
  resources change, and a stack in progress refuses updates ("... is in UPDATE_IN_PROGRESS state and can not be
  updated"). moto finishes every operation inside the API call.
- Removed resources: an update that drops a resource deletes it and forgets it, so a later update that adds it back
  creates it again (moto kept the deleted resource in the stack and re-created nothing, reporting UPDATE_COMPLETE).
- A failed rollback: an update that meets a resource deleted outside CloudFormation fails it, and its rollback fails
  on it again ("CloudFormation doesn't know the database was deleted, it assumes that the database instance still
  exists and attempts to roll back to it, causing the update rollback to fail", User Guide, troubleshooting, "Update
  rollback failed"): the stack ends in UPDATE_ROLLBACK_FAILED, refuses updates, and ContinueUpdateRollback finishes
  the rollback, skipping the resources named in ResourcesToSkip, which must be in UPDATE_FAILED
  (.../APIReference/API_ContinueUpdateRollback.html); drift detection then reports them NOT_CHECKED
  (API_StackResourceDrift.html, "StackResourceDriftStatus"). moto raised the rollback's error from UpdateStack itself
  and has no ContinueUpdateRollback.
"""

import json
import threading
from collections.abc import Callable
from typing import Any

import yaml
from moto.cloudformation import parsing
from moto.cloudformation.exceptions import CloudFormationError, ValidationError
from moto.cloudformation.models import CloudFormationBackend, Event, Stack
from moto.cloudformation.responses import CloudFormationResponse
from moto.cloudformation.utils import yaml_tag_constructor
from moto.core.responses import ActionResult

from .delays import later


class InsufficientCapabilities(CloudFormationError):
    code = "InsufficientCapabilitiesException"


# --- capabilities ----------------------------------------------------------------------------------------------------

_NAME_PROPERTIES = {
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::User": "UserName",
    "AWS::IAM::Group": "GroupName",
    "AWS::IAM::InstanceProfile": "InstanceProfileName",
}


def _template(body: str) -> dict[str, Any]:
    yaml.add_multi_constructor("", yaml_tag_constructor)
    try:
        parsed: dict[str, Any] = json.loads(body)
    except ValueError:
        parsed = yaml.load(body, Loader=yaml.Loader)
    return parsed


def required_capability(body: str | None) -> str | None:
    if not body:
        return None
    resources = _template(body).get("Resources", {}).values()
    iam = [r for r in resources if str(r.get("Type", "")).startswith("AWS::IAM::")]
    if any(_NAME_PROPERTIES.get(r["Type"]) in r.get("Properties", {}) for r in iam):
        return "CAPABILITY_NAMED_IAM"
    return "CAPABILITY_IAM" if iam else None


def _check_capabilities(response: CloudFormationResponse, body: str | None) -> None:
    needed = required_capability(body)
    given = set(response._get_param("Capabilities", []) or [])
    if needed and not (needed in given or "CAPABILITY_NAMED_IAM" in given):
        raise InsufficientCapabilities(f"Requires capabilities : [{needed}]")


def _with_capability_check(name: str) -> None:
    original = getattr(CloudFormationResponse, name)

    def checked(self: CloudFormationResponse) -> Any:
        body = self._get_param("TemplateBody")
        if body is None and self._get_bool_param("UsePreviousTemplate", False):
            body = self.cloudformation_backend.get_stack(self._get_param("StackName")).template
        _check_capabilities(self, body)
        return original(self)

    setattr(CloudFormationResponse, name, checked)


# --- idempotency tokens ------------------------------------------------------------------------------------------------


def _existing(self: CloudFormationResponse, name: str) -> Stack | None:
    try:
        stack: Stack = self.cloudformation_backend.get_stack(name)
    except ValidationError:
        return None
    return None if stack.status == "DELETE_COMPLETE" else stack


def _with_request_token(name: str) -> None:
    original = getattr(CloudFormationResponse, name)

    def replayed(self: CloudFormationResponse) -> Any:
        token = self._get_param("ClientRequestToken")
        stack = _existing(self, self._get_param("StackName"))
        if token and stack is not None and token in getattr(stack, "request_tokens", set()):
            return ActionResult({"StackId": stack.stack_id})  # a retry of a request already applied
        result = original(self)
        stack = _existing(self, self._get_param("StackName"))
        if token and stack is not None:
            stack.request_tokens = getattr(stack, "request_tokens", set()) | {token}  # type: ignore[attr-defined]
        return result

    setattr(CloudFormationResponse, name, replayed)


# --- failures, rollback and asynchrony -------------------------------------------------------------------------------

_current = threading.local()


def _tracking(original: Callable[..., Any]) -> Callable[..., Any]:
    """Remember the resource being made or changed (the one that failed when an operation raises), and which
    resources of the operation are failing now: moto tries the others and retries them before it gives up."""

    def create(logical_id: str, resource_json: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        resource_type = resource_json.get("Type", "")
        name = resource_json.get("Properties", {}).get(_NAME_PROPERTIES.get(resource_type, ""), logical_id)
        _current.resource = (logical_id, resource_type, name)
        failing: dict[str, tuple[str, str, Exception]] = getattr(_current, "failing", {})
        try:
            result = original(logical_id, resource_json, *args, **kwargs)
        except Exception as exc:
            failing[logical_id] = (resource_type, name, exc)
            raise
        failing.pop(logical_id, None)
        return result

    return create


def _track_from_scratch() -> dict[str, tuple[str, str, Exception]]:
    _current.resource, _current.failing = ("", "", ""), {}
    failing: dict[str, tuple[str, str, Exception]] = _current.failing
    return failing


def _failed() -> tuple[str, str, str]:
    resource: tuple[str, str, str] = getattr(_current, "resource", ("", "", ""))
    return resource


def _reason(exc: Exception, resource_type: str, name: str) -> str:
    code = getattr(exc, "code", type(exc).__name__)
    message = getattr(exc, "message", None) or str(exc)
    if code == "EntityAlreadyExists":
        # The message CloudFormation's resource handlers give for a name that is taken.
        return f"Resource of type '{resource_type}' with identifier '{name}' already exists."
    service = resource_type.split("::")[1] if "::" in resource_type else "CloudFormation"
    return f"{message} (Service: {service}, Status Code: 400, Error Code: {code})"


def _resource_event(
    stack: Stack, logical_id: str, resource_type: str, status: str, reason: str, physical_id: str = ""
) -> None:
    stack.events.append(
        Event(
            stack_id=stack.stack_id,
            stack_name=stack.name,
            logical_resource_id=logical_id,
            physical_resource_id=physical_id,
            resource_type=resource_type,
            resource_status=status,
            resource_status_reason=reason,
            resource_properties=None,
        )
    )


def _forget_outputs(stack: Stack) -> None:
    """A stack whose resources are gone (rolled back, deleted) has no outputs."""
    stack.template_dict = {**stack.template_dict, "Outputs": {}}
    stack.output_map = stack._create_output_map()


def _create_resources(self: Stack) -> None:
    self.status = "CREATE_IN_PROGRESS"

    def create() -> None:
        _current.resource = ("", "", "")
        try:
            if self.resource_map.create(self.template_dict):
                self.mark_creation_complete()
        except Exception as exc:
            logical_id, resource_type, name = _failed()
            _resource_event(
                self, logical_id, resource_type, "CREATE_FAILED", _reason(exc, resource_type, name)
            )
            self.status = "ROLLBACK_IN_PROGRESS"
            self._add_stack_event(
                "ROLLBACK_IN_PROGRESS",
                resource_status_reason=f"The following resource(s) failed to create: [{logical_id}]. "
                "Rollback requested by user.",
            )
            try:
                self.resource_map.delete()
            finally:
                _forget_outputs(self)
                self.status = "ROLLBACK_COMPLETE"
                self._add_stack_event("ROLLBACK_COMPLETE")

    later(create)


_original_update = Stack.update


def _update(
    self: Stack,
    template: str,
    role_arn: str | None = None,
    parameters: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    previous_template, previous_parameters = self.template, dict(self.resource_map.input_parameters)
    previous_tags = dict(self.tags)
    self.status = "UPDATE_IN_PROGRESS"
    self._add_stack_event("UPDATE_IN_PROGRESS", resource_status_reason="User Initiated")
    if tags is not None:
        self.tags = tags

    def update() -> None:
        _track_from_scratch()
        try:
            self.events, events = [], self.events  # moto's update adds its own events; keep ours only
            try:
                if getattr(self, "revert_drift", False):
                    # a drift-aware change set: what drifted or was deleted is put back first, then the template
                    # (a new one too) is applied over it
                    from .drift import revert_role_drift

                    revert_role_drift(self)
                _original_update(self, template, role_arn, parameters, None)
                _only_declared_parameters(self)
            finally:
                self.events = events
                self.revert_drift = False  # type: ignore[attr-defined]
            self.skipped_resources = set()  # type: ignore[attr-defined]  # updated since: checked for drift again
            self.status = "UPDATE_COMPLETE"
            self._add_stack_event("UPDATE_COMPLETE")
        except Exception as exc:
            logical_id, resource_type, name = _failed()
            _resource_event(
                self, logical_id, resource_type, "UPDATE_FAILED", _reason(exc, resource_type, name), name
            )
            self.status = "UPDATE_ROLLBACK_IN_PROGRESS"
            self._add_stack_event(
                "UPDATE_ROLLBACK_IN_PROGRESS",
                resource_status_reason=f"The following resource(s) failed to update: [{logical_id}].",
            )
            # "a previous working state": template, parameters and stack tags as they were before the update
            self.template, self.tags = previous_template, previous_tags
            self._parse_template()
            self.rollback_parameters = previous_parameters  # type: ignore[attr-defined]
            _roll_back(self, lambda: self.resource_map.update(self.template_dict, previous_parameters))

    later(update)


def _only_declared_parameters(stack: Stack) -> None:
    """A stack has the parameters its template declares (API_Stack.html, ``Parameters``); moto kept those an update's
    template no longer declares, so DescribeStacks went on listing them, and a caller comparing the stack's parameters
    with the ones it sends found a change after every update (a CIEM provider's parameter, with CIEM turned off)."""
    declared = set((stack.template_dict or {}).get("Parameters") or {})
    for kept in (stack.resource_map.resolved_parameters, stack.resource_map.input_parameters):
        for key in [k for k in kept if k not in declared]:
            del kept[key]


def _roll_back(stack: Stack, roll_back: Callable[[], None]) -> None:
    """Run a rollback's changes: UPDATE_ROLLBACK_COMPLETE, or UPDATE_ROLLBACK_FAILED with an UPDATE_FAILED event for
    each resource that could not be put back (remembered for ContinueUpdateRollback)."""
    failing = _track_from_scratch()
    try:
        roll_back()
    except Exception:
        for logical_id, (resource_type, name, exc) in sorted(failing.items()):
            _resource_event(
                stack, logical_id, resource_type, "UPDATE_FAILED", _reason(exc, resource_type, name), name
            )
        stack.rollback_failed = dict(failing)  # type: ignore[attr-defined]
        stack.status = "UPDATE_ROLLBACK_FAILED"
        stack._add_stack_event(
            "UPDATE_ROLLBACK_FAILED",
            resource_status_reason=f"The following resource(s) failed to update: [{', '.join(sorted(failing))}].",
        )
        return
    stack.rollback_failed = {}  # type: ignore[attr-defined]
    _only_declared_parameters(stack)  # a parameter the failed update's template added goes with it
    stack.output_map = stack._create_output_map()
    # CloudFormation removes what the failed update made, then completes ("Stack status codes")
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE_CLEANUP_IN_PROGRESS")
    stack.status = "UPDATE_ROLLBACK_COMPLETE"
    stack._add_stack_event("UPDATE_ROLLBACK_COMPLETE")


def _continue_update_rollback(self: CloudFormationResponse) -> ActionResult:
    """Finish a failed rollback: the resources it failed on are tried again, but for those in ResourcesToSkip, which
    CloudFormation marks as rolled back without touching them (API_ContinueUpdateRollback.html)."""
    stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
    if stack.status != "UPDATE_ROLLBACK_FAILED":
        raise ValidationError(
            stack.stack_id,
            message=f"Stack {stack.stack_id} is in {stack.status} state and can not continue its update rollback.",
        )
    failed: dict[str, tuple[str, str, Exception]] = getattr(stack, "rollback_failed", {})
    skip = set(self._get_param("ResourcesToSkip", []) or [])
    if skip - set(failed):
        raise ValidationError(
            stack.stack_id,
            message=f"Resources [{', '.join(sorted(skip - set(failed)))}] are not in UPDATE_FAILED state and "
            "can not be skipped.",
        )
    stack.status = "UPDATE_ROLLBACK_IN_PROGRESS"
    stack._add_stack_event("UPDATE_ROLLBACK_IN_PROGRESS", resource_status_reason="User Initiated")
    parameters = getattr(stack, "rollback_parameters", None)

    def put_back() -> None:
        resources = stack.resource_map
        if parameters:
            resources.input_parameters = parameters
        for logical_id in sorted(set(failed) - skip):
            resources._parsed_resources[logical_id] = parsing.parse_and_update_resource(
                logical_id,
                resources._resource_json_map[logical_id],
                resources,
                stack.account_id,
                stack.region_name,
            )

    def finish() -> None:
        _roll_back(stack, put_back)
        if stack.status == "UPDATE_ROLLBACK_COMPLETE":
            stack.skipped_resources = getattr(stack, "skipped_resources", set()) | skip  # type: ignore[attr-defined]

    later(finish)
    return ActionResult({})


_original_backend_delete = CloudFormationBackend.delete_stack


def _delete_stack(self: CloudFormationBackend, name_or_stack_id: str) -> None:
    try:
        stack = self.get_stack(name_or_stack_id)
    except ValidationError:
        return  # deleting a stack that does not exist succeeds
    if stack.status == "DELETE_COMPLETE" or stack.status == "DELETE_IN_PROGRESS":
        return
    if stack.status.endswith("_IN_PROGRESS"):
        raise ValidationError(
            message=f"Stack {stack.stack_id} is in {stack.status} state and can not be deleted."
        )
    stack.status = "DELETE_IN_PROGRESS"
    stack._add_stack_event("DELETE_IN_PROGRESS", resource_status_reason="User Initiated")

    def delete() -> None:
        try:
            stack.resource_map.delete()
        except Exception as exc:
            stack.status = "DELETE_FAILED"
            stack._add_stack_event("DELETE_FAILED", resource_status_reason=str(getattr(exc, "message", exc)))
            return
        stack.resource_map._resource_json_map = {}  # nothing left for moto's own delete to do
        _forget_outputs(stack)
        stack.events, events = [], stack.events
        _original_backend_delete(self, stack.stack_id)
        stack.events = events
        stack.status = "DELETE_COMPLETE"
        stack._add_stack_event("DELETE_COMPLETE")

    later(delete)


# Reading a stack must not create its resources: moto's resource map creates a resource when it is first looked
# up, so DescribeStacks (outputs) or ListStackResources during CREATE_IN_PROGRESS would create everything at once.
# CloudFormation shows outputs only once the stack is complete, and lists only the resources that exist.
_NO_OUTPUTS = {
    "CREATE_PENDING",
    "CREATE_IN_PROGRESS",
    "ROLLBACK_IN_PROGRESS",
    "ROLLBACK_COMPLETE",
    "DELETE_COMPLETE",
}
_original_outputs = Stack.outputs


def _outputs(self: Stack) -> Any:
    return None if self.status in _NO_OUTPUTS else _original_outputs.fget(self)  # type: ignore[attr-defined]


def _existing_resources(self: Stack) -> list[Any]:
    return [
        r
        for r in self.resource_map._parsed_resources.values()
        if not isinstance(r, str) and hasattr(r, "logical_resource_id")
    ]


_original_map_update = parsing.ResourceMap.update


def _map_update(
    self: parsing.ResourceMap, template: dict[str, Any], parameters: dict[str, Any] | None = None
) -> None:
    """An update that removes a resource forgets it: moto deleted the resource but kept it among the stack's
    resources, so ListStackResources still named it and an update that added it back created nothing and reported
    UPDATE_COMPLETE. CloudFormation deletes a resource removed from the template and creates it anew when a later
    template has it again (AWS CloudFormation User Guide, "Update behaviors of stack resources")."""
    before = set(self._resource_json_map)
    _original_map_update(self, template, parameters)
    for logical_id in before - set(template.get("Resources", {})):
        self._parsed_resources.pop(logical_id, None)


_original_update_stack = CloudFormationResponse.update_stack


def _update_stack(self: CloudFormationResponse) -> Any:
    """An update of a stack that is still in progress, or whose rollback failed, is refused before anything else is
    checked."""
    stack = self.cloudformation_backend.get_stack(self._get_param("StackName"))
    if stack.status.endswith("_IN_PROGRESS") or stack.status == "UPDATE_ROLLBACK_FAILED":
        raise ValidationError(
            stack.stack_id,
            message=f"Stack:{stack.stack_id} is in {stack.status} state and can not be updated.",
        )
    return _original_update_stack(self)


def apply() -> None:
    CloudFormationResponse.update_stack = _update_stack  # type: ignore[method-assign]
    CloudFormationResponse.continue_update_rollback = _continue_update_rollback  # type: ignore[attr-defined]
    for name in ("create_stack", "update_stack", "create_stack_set", "update_stack_set"):
        _with_capability_check(name)
    for name in ("create_stack", "update_stack", "continue_update_rollback"):
        _with_request_token(name)
    parsing.parse_and_create_resource = _tracking(parsing.parse_and_create_resource)
    parsing.parse_and_update_resource = _tracking(parsing.parse_and_update_resource)
    Stack.create_resources = _create_resources  # type: ignore[method-assign]
    Stack.update = _update  # type: ignore[method-assign]
    parsing.ResourceMap.update = _map_update  # type: ignore[method-assign]
    CloudFormationBackend.delete_stack = _delete_stack  # type: ignore[method-assign]
    Stack.outputs = property(_outputs)  # type: ignore[method-assign,assignment]
    Stack.stack_resources = property(_existing_resources)  # type: ignore[method-assign,assignment]
