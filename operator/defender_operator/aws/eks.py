"""EKS clusters and the access entry that lets Defender's agentless discovery into each (Amazon EKS API reference).

Only the discovery role's own entry is ever written, with the owner mark as tags; an entry for the same role that
someone else made (by hand, by Defender itself, by another object) is read, never changed or deleted.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from ..ownership import Owner
from ..writes import Writing, unrecorded, write
from .api import AwsClientError, call

# What Microsoft's GrantAccessToEksClusters.py grants the discovery role (aws-auth group system:masters), as an
# access policy: AmazonEKSClusterAdminPolicy at cluster scope (docs/aws-permissions.md, "EKS clusters").
ACCESS_POLICY = "arn:{partition}:eks::aws:cluster-access-policy/AmazonEKSClusterAdminPolicy"
CONFIG_MAP = "CONFIG_MAP"


@dataclass(frozen=True)
class ObservedEntry:
    principal_arn: str
    tags: dict[str, str]
    policies: list[str]
    created: Any = None  # createdAt: the second proof of ownership (reconcile/proofs.py)


class EksClusters:
    def __init__(
        self,
        client_in: Callable[[str], Any],
        partition: str,
        planned: list[str] | None = None,
        writing: Writing = unrecorded,
    ) -> None:
        """``client_in(region)`` is the EKS client of a region. With ``planned``, writes are described there."""
        self.client_in, self.partition, self.planned, self.writing = client_in, partition, planned, writing

    def _write(self, description: str) -> AbstractContextManager[bool]:
        return write(self.planned, self.writing, description)

    def names(self, region: str) -> list[str]:
        """Every cluster of a region (ListClusters is paged with a lower-case ``nextToken``)."""
        eks, token = self.client_in(region), None
        names: list[str] = []
        while True:
            page = call(eks, "list_clusters", **({"nextToken": token} if token else {}))
            names.extend(page.get("clusters") or [])
            token = page.get("nextToken")
            if not token:
                return names

    def authentication_mode(self, region: str, name: str) -> str | None:
        """The cluster's mode, or None when it is gone (deleted between the list and now)."""
        try:
            eks = self.client_in(region)
            cluster = call(eks, "describe_cluster", name=name)["cluster"]
        except AwsClientError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        return str((cluster.get("accessConfig") or {}).get("authenticationMode", CONFIG_MAP))

    def entry(self, region: str, cluster: str, principal: str) -> ObservedEntry | None:
        eks = self.client_in(region)
        try:
            found = call(eks, "describe_access_entry", clusterName=cluster, principalArn=principal)
            policies = call(
                eks, "list_associated_access_policies", clusterName=cluster, principalArn=principal
            )
        except AwsClientError as exc:
            if exc.code == "ResourceNotFoundException":
                return None
            raise
        return ObservedEntry(
            principal_arn=principal,
            tags=dict(found["accessEntry"].get("tags") or {}),
            created=found["accessEntry"].get("createdAt"),
            policies=[p["policyArn"] for p in policies.get("associatedAccessPolicies") or []],
        )

    def grant(self, region: str, cluster: str, principal: str, owner: Owner) -> bool:
        """Create the entry marked as the owner's and associate the access policy. When the entry exists already
        (someone else created it between the read and now: ResourceInUseException), the policy is associated only if
        the entry carries the owner's mark (this object's own, from an attempt that died before associating); an
        entry another actor made is never given cluster-admin. Returns whether the entry is the owner's."""
        eks = self.client_in(region)
        with self._write(f"create access entry for {principal} in EKS cluster {region}/{cluster}") as writing:
            if writing:
                try:
                    call(
                        eks,
                        "create_access_entry",
                        clusterName=cluster,
                        principalArn=principal,
                        tags=owner.tags(),
                    )
                except AwsClientError as exc:
                    if exc.code != "ResourceInUseException":
                        raise
                    existing = self.entry(region, cluster, principal)
                    if existing is None or not owner.owns(existing.tags):
                        return False
        self.associate(region, cluster, principal)
        return True

    def associate(self, region: str, cluster: str, principal: str) -> None:
        policy = ACCESS_POLICY.format(partition=self.partition)
        with self._write(f"associate {policy} with {principal} in EKS cluster {region}/{cluster}") as writing:
            if writing:
                eks = self.client_in(region)
                call(
                    eks,
                    "associate_access_policy",
                    clusterName=cluster,
                    principalArn=principal,
                    policyArn=policy,
                    accessScope={"type": "cluster"},
                )

    def revoke(self, region: str, cluster: str, principal: str) -> None:
        with self._write(f"delete access entry for {principal} in EKS cluster {region}/{cluster}") as writing:
            if writing:
                eks = self.client_in(region)
                try:
                    call(
                        eks,
                        "delete_access_entry",
                        clusterName=cluster,
                        principalArn=principal,
                    )
                except AwsClientError as exc:
                    if exc.code != "ResourceNotFoundException":
                        raise
