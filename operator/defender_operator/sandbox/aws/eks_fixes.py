"""EKS access entries and authentication modes in moto, which has neither.

Faithful to the Amazon EKS API reference where defender-operator depends on it:

- ``CreateCluster`` takes ``accessConfig``; ``authenticationMode`` defaults to ``CONFIG_MAP`` for clusters created
  through the API, SDKs or CloudFormation (API_CreateAccessConfigRequest.html), and with an API mode and
  ``bootstrapClusterCreatorAdminPermissions`` (default true) the creator gets an access entry with
  ``AmazonEKSClusterAdminPolicy`` (docs.aws.amazon.com/eks/latest/userguide/creating-access-entries.html).
  ``DescribeCluster`` shows ``accessConfig``; ``UpdateClusterConfig`` moves the mode one way only, ``CONFIG_MAP`` ->
  ``API_AND_CONFIG_MAP`` -> ``API`` (userguide/setting-up-access-entries.html).
- Access entries (``CreateAccessEntry``, ``DescribeAccessEntry``, ``ListAccessEntries``, ``DeleteAccessEntry``) and
  their access policies (``AssociateAccessPolicy``, ``ListAssociatedAccessPolicies``, ``DisassociateAccessPolicy``):
  every one fails with ``InvalidRequestException`` while the cluster is in ``CONFIG_MAP`` mode; a second entry for
  a principal is ``ResourceInUseException``; lists are paged (``maxResults`` 1-100, ``nextToken``; the sandbox's
  ``pageSize`` setting caps a page, as for StackSet instances); only the AWS-managed access policies exist.
"""

import uuid
from dataclasses import dataclass, field
from typing import Any

from moto.core.responses import ActionResult, EmptyResult
from moto.core.utils import utcnow
from moto.eks import urls as eks_urls
from moto.eks.exceptions import (
    InvalidParameterException,
    InvalidRequestException,
    ResourceInUseException,
    ResourceNotFoundException,
)
from moto.eks.models import Cluster, EKSBackend
from moto.eks.responses import EKSResponse
from moto.sts.models import sts_backends
from moto.utilities.utils import get_partition

from . import delays

CONFIG_MAP, BOTH, API = "CONFIG_MAP", "API_AND_CONFIG_MAP", "API"
_MODE_ORDER = (CONFIG_MAP, BOTH, API)
POLICIES = frozenset(
    f"arn:aws:eks::aws:cluster-access-policy/{name}"
    for name in (
        "AmazonEKSAdminPolicy",
        "AmazonEKSClusterAdminPolicy",
        "AmazonEKSEditPolicy",
        "AmazonEKSViewPolicy",
        "AmazonEKSAdminViewPolicy",
    )
)
_NOT_IN_API_MODE = "The cluster's authentication mode must be set to one of [API, API_AND_CONFIG_MAP] to perform this operation."


@dataclass
class AccessEntry:
    cluster: str
    principal_arn: str
    arn: str
    kubernetes_groups: list[str]
    username: str
    type: str
    tags: dict[str, str]
    created_at: Any = field(default_factory=utcnow)
    policies: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy ARN -> association

    def view(self) -> dict[str, Any]:
        return {
            "clusterName": self.cluster,
            "principalArn": self.principal_arn,
            "kubernetesGroups": self.kubernetes_groups,
            "accessEntryArn": self.arn,
            "createdAt": self.created_at,
            "modifiedAt": self.created_at,
            "tags": self.tags,
            "username": self.username,
            "type": self.type,
        }


def _entries(cluster: Cluster) -> dict[str, AccessEntry]:
    entries: dict[str, AccessEntry] | None = getattr(cluster, "access_entries", None)
    if entries is None:
        entries = {}
        cluster.access_entries = entries  # type: ignore[attr-defined]
    return entries


def _mode(cluster: Cluster) -> str:
    return str(getattr(cluster, "access_config", {}).get("authenticationMode", CONFIG_MAP))


def _cluster(backend: EKSBackend, name: str) -> Cluster:
    if name not in backend.clusters:
        raise ResourceNotFoundException(clusterName=name, message=f"No cluster found for name: {name}.")
    return backend.clusters[name]


def _api_cluster(backend: EKSBackend, name: str) -> Cluster:
    cluster = _cluster(backend, name)
    if _mode(cluster) == CONFIG_MAP:
        raise InvalidRequestException(clusterName=name, message=_NOT_IN_API_MODE)
    return cluster


def _entry(cluster: Cluster, principal: str) -> AccessEntry:
    entry = _entries(cluster).get(principal)
    if entry is None:
        raise ResourceNotFoundException(
            clusterName=cluster.name,
            message=f"The specified principalArn could not be found. You can view your available access entries "
            f"with 'list-access-entries'. ({principal})",
        )
    return entry


def _page(self: EKSResponse, items: list[Any]) -> tuple[list[Any], str | None]:
    limit = int(self._get_param("maxResults") or 100)
    if not 1 <= limit <= 100:
        raise InvalidParameterException(message="maxResults must be between 1 and 100")
    limit = min(limit, delays.Settings.page_size or 100)
    start = int(self._get_param("nextToken") or 0)
    page = items[start : start + limit]
    return page, str(start + limit) if start + limit < len(items) else None


def _add_entry(
    cluster: Cluster, principal: str, groups: list[str], username: str, kind: str, tags: dict[str, str]
) -> AccessEntry:
    if principal in _entries(cluster):
        raise ResourceInUseException(
            clusterName=cluster.name,
            message="The specified access entry resource is already in use on this cluster.",
        )
    arn_parts = principal.split(":")
    account, resource = arn_parts[4], arn_parts[5]
    kind_name, _, name = resource.partition("/")
    entry = AccessEntry(
        cluster=cluster.name,
        principal_arn=principal,
        arn=f"{cluster.arn.replace(':cluster/', ':access-entry/')}/{kind_name}/{account}/{name.split('/')[-1]}/"
        f"{uuid.uuid4()}",
        kubernetes_groups=groups,
        username=username or principal,
        type=kind,
        tags=tags,
    )
    _entries(cluster)[principal] = entry
    return entry


def _associate(entry: AccessEntry, policy: str, scope: dict[str, Any]) -> dict[str, Any]:
    if policy not in POLICIES:
        raise ResourceNotFoundException(message=f"The specified policy {policy} could not be found.")
    if scope.get("type") not in ("cluster", "namespace"):
        raise InvalidParameterException(message="accessScope.type must be cluster or namespace")
    now = utcnow()
    association = {
        "policyArn": policy,
        "accessScope": {"type": scope["type"], "namespaces": scope.get("namespaces", [])},
        "associatedAt": entry.policies.get(policy, {}).get("associatedAt", now),
        "modifiedAt": now,
    }
    entry.policies[policy] = association
    return association


# --- responses -------------------------------------------------------------------------------------------------------


_original_create_cluster = EKSResponse.create_cluster
_original_update_cluster_config = EKSResponse.update_cluster_config


def create_cluster(self: EKSResponse) -> ActionResult:
    access = self._get_param("accessConfig") or {}
    mode = access.get("authenticationMode", CONFIG_MAP)
    if mode not in _MODE_ORDER:
        raise InvalidParameterException(message=f"Unsupported authentication mode: {mode}")
    result = _original_create_cluster(self)
    cluster = self.eks_backend.clusters[self._get_param("name")]
    bootstrap = bool(access.get("bootstrapClusterCreatorAdminPermissions", True))
    cluster.access_config = {  # type: ignore[attr-defined]
        "authenticationMode": mode,
        "bootstrapClusterCreatorAdminPermissions": bootstrap,
    }
    if bootstrap and mode != CONFIG_MAP:
        creator = _creator(self)
        entry = _add_entry(cluster, creator, [], creator, "STANDARD", {})
        _associate(
            entry, "arn:aws:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy", {"type": "cluster"}
        )
    return result


def _creator(self: EKSResponse) -> str:
    """The IAM principal behind the request (an assumed role's role, not its session), as EKS records it."""
    sts = sts_backends[self.current_account][get_partition(self.region)]
    _, arn, account = sts.get_caller_identity(self.get_access_key(), self.region)
    if ":assumed-role/" in arn:
        role = arn.split(":assumed-role/")[1].split("/")[0]
        return f"arn:{get_partition(self.region)}:iam::{account}:role/{role}"
    return arn.replace(":sts::", ":iam::")


def update_cluster_config(self: EKSResponse) -> ActionResult:
    access = self._get_param("accessConfig")
    if not access:
        result: ActionResult = _original_update_cluster_config(self)
        return result
    cluster = _cluster(self.eks_backend, self._get_param("name"))
    current, wanted = _mode(cluster), access.get("authenticationMode", _mode(cluster))
    if wanted not in _MODE_ORDER or _MODE_ORDER.index(wanted) < _MODE_ORDER.index(current):
        raise InvalidParameterException(
            message=f"Unsupported authentication mode update from {current} to {wanted}"
        )
    cluster.access_config = {**getattr(cluster, "access_config", {}), "authenticationMode": wanted}  # type: ignore[attr-defined]
    update = {
        "id": str(uuid.uuid4()),
        "status": "Successful",
        "type": "AccessConfigUpdate",
        "params": [{"type": "AuthenticationMode", "value": wanted}],
        "createdAt": utcnow(),
        "errors": [],
    }
    return ActionResult({"update": update})


def create_access_entry(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    entry = _add_entry(
        cluster,
        self._get_param("principalArn"),
        self._get_param("kubernetesGroups") or [],
        self._get_param("username") or "",
        self._get_param("type") or "STANDARD",
        self._get_param("tags") or {},
    )
    return ActionResult({"accessEntry": entry.view()})


def describe_access_entry(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    return ActionResult({"accessEntry": _entry(cluster, self._get_param("principalArn")).view()})


def list_access_entries(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    policy = self._get_param("associatedPolicyArn")
    principals = [p for p, e in _entries(cluster).items() if policy is None or policy in e.policies]
    page, token = _page(self, principals)
    return ActionResult({"accessEntries": page, **({"nextToken": token} if token else {})})


def delete_access_entry(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    principal = self._get_param("principalArn")
    _entry(cluster, principal)
    del _entries(cluster)[principal]
    return EmptyResult()


def associate_access_policy(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    entry = _entry(cluster, self._get_param("principalArn"))
    association = _associate(entry, self._get_param("policyArn"), self._get_param("accessScope") or {})
    return ActionResult(
        {
            "clusterName": cluster.name,
            "principalArn": entry.principal_arn,
            "associatedAccessPolicy": association,
        }
    )


def list_associated_access_policies(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    entry = _entry(cluster, self._get_param("principalArn"))
    page, token = _page(self, list(entry.policies.values()))
    return ActionResult(
        {
            "clusterName": cluster.name,
            "principalArn": entry.principal_arn,
            "associatedAccessPolicies": page,
            **({"nextToken": token} if token else {}),
        }
    )


def disassociate_access_policy(self: EKSResponse) -> ActionResult:
    cluster = _api_cluster(self.eks_backend, self._get_param("name"))
    entry = _entry(cluster, self._get_param("principalArn"))
    if entry.policies.pop(self._get_param("policyArn"), None) is None:
        raise ResourceNotFoundException(
            message="The specified policy is not associated with this access entry."
        )
    return EmptyResult()


def apply() -> None:
    for handler in (
        create_cluster,
        update_cluster_config,
        create_access_entry,
        describe_access_entry,
        list_access_entries,
        delete_access_entry,
        associate_access_policy,
        list_associated_access_policies,
        disassociate_access_policy,
    ):
        setattr(EKSResponse, handler.__name__, handler)
    dispatch = eks_urls.response.dispatch
    eks_urls.url_paths.update(
        {
            "{0}/clusters/(?P<name>[^/]+)/access-entries$": dispatch,
            "{0}/clusters/(?P<name>[^/]+)/access-entries/(?P<rest>.+)$": dispatch,
        }
    )
