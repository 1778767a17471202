"""IAM in moto, made faithful where defender-operator depends on it.

Each fix names the AWS behaviour it reproduces. They patch moto's classes (its extension point for behaviour is the
backend and response classes), so they survive ``/moto-api/reset``.
"""

import json
from functools import cache
from typing import Any

from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.core.responses import EmptyResult
from moto.iam import models as iam_models
from moto.iam.aws_managed_policies import aws_managed_policies_data
from moto.iam.models import AccessKey, AWSManagedPolicy, IAMBackend, Role, iam_backends
from moto.iam.responses import IamResponse
from moto.utilities.utils import get_partition

from . import authorization


@cache
def _managed_policy_data() -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(aws_managed_policies_data)
    return parsed


def ensure_aws_managed_policy(backend: IAMBackend, arn: str) -> None:
    """AWS managed policies exist in every account (moto loads all ~1,300 only with an opt-in that slows every reset
    by seconds; this loads the one asked for)."""
    if arn in backend.managed_policies or ":iam::aws:policy/" not in arn:
        return
    name = arn.rsplit("/", 1)[-1]
    data = _managed_policy_data().get(name)
    if data is not None:
        policy = AWSManagedPolicy.from_data(name, backend.account_id, backend.region_name, data)
        backend.managed_policies[policy.arn] = policy


def _patch_managed_policy_lookup() -> None:
    original_attach = IAMBackend.attach_role_policy
    original_get = IAMBackend.get_policy

    def attach_role_policy(self: IAMBackend, policy_arn: str, role_name: str) -> None:
        ensure_aws_managed_policy(self, policy_arn)
        original_attach(self, policy_arn, role_name)

    def get_policy(self: IAMBackend, policy_arn: str) -> Any:
        ensure_aws_managed_policy(self, policy_arn)
        return original_get(self, policy_arn)

    IAMBackend.attach_role_policy = attach_role_policy  # type: ignore[method-assign]
    IAMBackend.get_policy = get_policy  # type: ignore[method-assign]


# --- OIDC provider audiences -----------------------------------------------------------------------------------------
# AddClientIDToOpenIDConnectProvider adds an audience and "does nothing" when it is already there;
# RemoveClientIDFromOpenIDConnectProvider removes it and also succeeds when it is absent
# (docs.aws.amazon.com/IAM/latest/APIReference/API_AddClientIDToOpenIDConnectProvider.html,
#  .../API_RemoveClientIDFromOpenIDConnectProvider.html). moto 5.2 implements neither.


def _add_client_id(self: IamResponse) -> EmptyResult:
    provider = self.backend.get_open_id_connect_provider(self._get_param("OpenIDConnectProviderArn"))
    client_id = self._get_param("ClientID")
    if client_id not in provider.client_id_list:
        provider.client_id_list.append(client_id)
    return EmptyResult()


def _remove_client_id(self: IamResponse) -> EmptyResult:
    provider = self.backend.get_open_id_connect_provider(self._get_param("OpenIDConnectProviderArn"))
    client_id = self._get_param("ClientID")
    if client_id in provider.client_id_list:
        provider.client_id_list.remove(client_id)
    return EmptyResult()


# --- AWS::IAM::Role in CloudFormation --------------------------------------------------------------------------------
# CloudFormation creates a role with its inline Policies and attaches ManagedPolicyArns; an update changes the trust
# policy, description, inline and managed policies and tags in place; a delete detaches and deletes the policies
# first (docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-iam-role.html). moto ignores
# ManagedPolicyArns, stores inline documents unserialised, ignores most updates, and fails the delete with
# DeleteConflict when a managed policy is attached.


def _json(document: Any) -> str:
    return document if isinstance(document, str) else json.dumps(document)


def _tags(properties: dict[str, Any]) -> list[dict[str, str]]:
    return list(properties.get("Tags", []))


def _sync_policies(backend: IAMBackend, role: Role, properties: dict[str, Any]) -> None:
    wanted_inline = {p["PolicyName"]: _json(p["PolicyDocument"]) for p in properties.get("Policies", [])}
    for name in list(role.policies):
        if name not in wanted_inline:
            backend.delete_role_policy(role.name, name)
    for name, document in wanted_inline.items():
        backend.put_role_policy(role.name, name, document)
    wanted_managed = set(properties.get("ManagedPolicyArns", []))
    for arn in list(role.managed_policies):
        if arn not in wanted_managed:
            backend.detach_role_policy(arn, role.name)
    for arn in sorted(wanted_managed - set(role.managed_policies)):
        backend.attach_role_policy(arn, role.name)


def _role_arn(account_id: str, properties: dict[str, Any], name: str) -> str:
    return f"arn:aws:iam::{account_id}:role{properties.get('Path', '/')}{name}"


def _forward_policy_changes(account_id: str, arn: str, role: Role | None, properties: dict[str, Any]) -> None:
    """The IAM calls CloudFormation makes for the stack's caller to give a role these policies."""
    boundary = (
        {"iam:PermissionsBoundary": properties["PermissionsBoundary"]}
        if properties.get("PermissionsBoundary")
        else {}
    )
    inline = {p["PolicyName"]: _json(p["PolicyDocument"]) for p in properties.get("Policies", [])}
    managed = set(properties.get("ManagedPolicyArns", []))
    for name, document in inline.items():
        if role is None or role.policies.get(name) != document:
            authorization.forwarded(account_id, "iam:PutRolePolicy", arn, boundary)
    if set(role.policies if role else ()) - set(inline):
        authorization.forwarded(account_id, "iam:DeleteRolePolicy", arn, boundary)
    for policy in sorted(managed - set(role.managed_policies if role else ())):
        authorization.forwarded(
            account_id, "iam:AttachRolePolicy", arn, {**boundary, "iam:PolicyARN": policy}
        )
    for policy in sorted(set(role.managed_policies if role else ()) - managed):
        authorization.forwarded(
            account_id, "iam:DetachRolePolicy", arn, {**boundary, "iam:PolicyARN": policy}
        )


def _create_role(
    cls: type[Role],
    resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
    **kwargs: Any,
) -> Role:
    properties = cloudformation_json["Properties"]
    backend = iam_backends[account_id][get_partition(region_name)]
    name = properties.get("RoleName", resource_name)
    arn = _role_arn(account_id, properties, name)
    boundary = properties.get("PermissionsBoundary")
    authorization.forwarded(
        account_id, "iam:CreateRole", arn, {"iam:PermissionsBoundary": boundary} if boundary else {}
    )
    if properties.get("Tags"):
        authorization.forwarded(account_id, "iam:TagRole", arn)
    _forward_policy_changes(account_id, arn, None, properties)
    role = backend.create_role(
        role_name=name,
        assume_role_policy_document=_json(properties["AssumeRolePolicyDocument"]),
        path=properties.get("Path", "/"),
        permissions_boundary=properties.get("PermissionsBoundary", ""),
        description=properties.get("Description", ""),
        tags=_tags(properties),
        max_session_duration=properties.get("MaxSessionDuration", 3600),
    )
    _sync_policies(backend, role, properties)
    return role


def _update_role(
    cls: type[Role],
    original_resource: Role,
    new_resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
) -> Role:
    properties = cloudformation_json["Properties"]
    backend = iam_backends[account_id][get_partition(region_name)]
    if properties.get("RoleName", original_resource.name) != original_resource.name:
        # A new RoleName means replacement: create the new role, then delete the old one.
        _delete_role(cls, original_resource.name, cloudformation_json, account_id, region_name)
        return _create_role(cls, new_resource_name, cloudformation_json, account_id, region_name)
    role = backend.get_role(original_resource.name)
    arn = _role_arn(account_id, properties, role.name)
    authorization.forwarded(account_id, "iam:UpdateAssumeRolePolicy", arn)
    _forward_policy_changes(account_id, arn, role, properties)
    backend.update_assume_role_policy(role.name, _json(properties["AssumeRolePolicyDocument"]))
    role.description = properties.get("Description", "")
    role.max_session_duration = properties.get("MaxSessionDuration", 3600)
    role.tags = _tags(properties)
    _sync_policies(backend, role, properties)
    return role


def _delete_role(
    cls: type[Role],
    resource_name: str,
    cloudformation_json: dict[str, Any],
    account_id: str,
    region_name: str,
) -> None:
    backend = iam_backends[account_id][get_partition(region_name)]
    role = next((r for r in backend.roles.values() if r.name == resource_name), None)
    if role is None:
        return  # deleted out of band: CloudFormation treats that as deleted
    arn = role.arn
    for policy in role.managed_policies:
        authorization.forwarded(account_id, "iam:DetachRolePolicy", arn, {"iam:PolicyARN": policy})
    if role.policies:
        authorization.forwarded(account_id, "iam:DeleteRolePolicy", arn)
    authorization.forwarded(account_id, "iam:DeleteRole", arn)
    for arn in list(role.managed_policies):
        backend.detach_role_policy(arn, role.name)
    for name in list(role.policies):
        backend.delete_role_policy(role.name, name)
    for profile in backend.instance_profiles.values():
        profile.delete_role(role_name=role.name)
    backend.delete_role(role.name)


# access key id -> (account, partition) of the IAM backend holding it
_KEY_OWNERS: dict[str, tuple[str, str]] = {}


class _IndexedKeys(dict[str, AccessKey]):
    """One IAM backend's access keys, each also entered in the index of every account's keys."""

    def __init__(self, account_id: str, partition: str, keys: dict[str, AccessKey]) -> None:
        super().__init__(keys)
        self.owner = (account_id, partition)
        for key_id in keys:
            _KEY_OWNERS[key_id] = self.owner

    def __setitem__(self, key_id: str, key: AccessKey) -> None:
        super().__setitem__(key_id, key)
        _KEY_OWNERS[key_id] = self.owner

    def __delitem__(self, key_id: str) -> None:
        super().__delitem__(key_id)
        _KEY_OWNERS.pop(key_id, None)


def _index_access_keys(backend: IAMBackend) -> None:
    if not isinstance(backend.access_keys, _IndexedKeys):
        backend.access_keys = _IndexedKeys(backend.account_id, backend.partition, backend.access_keys)


def account_of_access_key(access_key: str) -> str:
    """The account whose credentials these are, as STS and every AWS service know at once. moto looks through every
    partition of every account on every request, so each request took longer the more accounts existed (300
    onboardings in a row took 35, 39, then 46 s); the index answers in constant time. A key the index holds but its
    account no longer does (after ``/moto-api/reset``) is unknown, as moto's own lookup finds it."""
    owner = _KEY_OWNERS.get(access_key)
    if owner is not None and access_key in iam_backends[owner[0]][owner[1]].access_keys:
        return owner[0]
    return DEFAULT_ACCOUNT_ID


def _patch_access_key_lookup() -> None:
    original_init = IAMBackend.__init__

    def init(self: IAMBackend, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        _index_access_keys(self)

    IAMBackend.__init__ = init  # type: ignore[method-assign]
    for account in list(iam_backends.values()):  # backends made before the patch
        for backend in list(account.values()):
            _index_access_keys(backend)
    iam_models.get_account_id_from = account_of_access_key  # moto's responses import it at each request


def apply() -> None:
    _patch_managed_policy_lookup()
    _patch_access_key_lookup()
    IamResponse.add_client_id_to_open_id_connect_provider = _add_client_id  # type: ignore[attr-defined]
    IamResponse.remove_client_id_from_open_id_connect_provider = _remove_client_id  # type: ignore[attr-defined]
    Role.create_from_cloudformation_json = classmethod(_create_role)  # type: ignore[method-assign,assignment,arg-type]
    Role.update_from_cloudformation_json = classmethod(_update_role)  # type: ignore[method-assign,assignment]
    Role.delete_from_cloudformation_json = classmethod(_delete_role)  # type: ignore[method-assign,assignment]
    assert iam_models  # imported for its side effects on registration
