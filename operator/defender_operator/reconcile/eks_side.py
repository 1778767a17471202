"""EKS clusters: whether Defender's agentless discovery reaches each one, and, where the object opts in, the
discovery role's access entry.

Runs after the connector is Ready, on deep passes only (a cluster created later shows within deepCheckSeconds, or at
once on a requested reconcile). Its failures go to ``status.eks.error`` and never to Ready: onboarding does not
depend on it; a region that cannot be read (an opt-in region not enabled, say) is named there and the others are
still read. Only entries that carry this object's owner mark and that the operator's record proves are this
object's (created after its first write to AWS) are ever changed or deleted. The regions where entries are made are
recorded before the first one is made, so entries in a region later dropped from the spec are removed then, and on
delete, whatever the spec says by then.
"""

from dataclasses import dataclass, field
from typing import TypeGuard

import boto3

from ..api.record import OnboardingRecordSpec
from ..api.spec import AWSConnectorSpec
from ..api.status import EksCluster, EksStatus
from ..aws.eks import ACCESS_POLICY, CONFIG_MAP, EksClusters, ObservedEntry
from ..errors import CloudError
from ..ownership import Owner
from ..render.catalog import role_name
from .ledger import UNRECORDED_LEDGER, Ledger
from .model import Event
from .proofs import Proof

LISTED = 50  # clusters named on status; the counts cover all


def discovery_on(spec: AWSConnectorSpec) -> bool:
    """Defender's agentless Kubernetes discovery (and so its role) is part of this onboarding."""
    plans = spec.plans
    return (plans.cspm.enabled and plans.cspm.kubernetes_discovery.enabled) or (
        plans.containers.enabled and plans.containers.kubernetes_discovery.enabled
    )


def regions_of(spec: AWSConnectorSpec, partition: str, service: str = "eks") -> list[str]:
    """The connector's regions; all of the partition's regions of ``service`` when the spec leaves them empty."""
    return list(spec.aws.regions) or boto3.session.Session().get_available_regions(service, partition)


def discovery_role(spec: AWSConnectorSpec, partition: str, account: str) -> str:
    return f"arn:{partition}:iam::{account}:role/{role_name(spec, 'k8sAgentlessDiscovery')}"


def _config_map_fix(region: str, name: str, role: str) -> str:
    return (
        f"the cluster reads only the aws-auth ConfigMap: map the role as Microsoft's GrantAccessToEksClusters.py "
        f"does (eksctl create iamidentitymapping --cluster {name} --region {region} --arn {role} --group "
        f"system:masters), or allow access entries (aws eks update-cluster-config --name {name} --region {region} "
        f"--access-config authenticationMode=API_AND_CONFIG_MAP; one way) and set spec.aws.eksAccessEntries: Manage"
    )


def _create_fix(region: str, name: str, role: str, policy: str) -> str:
    return (
        f"set spec.aws.eksAccessEntries: Manage, or run aws eks create-access-entry --cluster-name {name} --region "
        f"{region} --principal-arn {role} and aws eks associate-access-policy --cluster-name {name} --region "
        f"{region} --principal-arn {role} --policy-arn {policy} --access-scope type=cluster"
    )


@dataclass
class EksResult:
    status: EksStatus
    events: list[Event] = field(default_factory=list)


def reconcile_eks(
    spec: AWSConnectorSpec,
    owner: Owner,
    eks: EksClusters,
    partition: str,
    account: str,
    ledger: Ledger = UNRECORDED_LEDGER,
) -> EksResult:
    manage = spec.aws.eks_access_entries == "Manage"
    role = discovery_role(spec, partition, account)
    policy = ACCESS_POLICY.format(partition=partition)
    clusters: list[EksCluster] = []
    events: list[Event] = []
    regions = regions_of(spec, partition)
    record = ledger.recorded()
    proof = ledger.proof("aws")
    dropped = sorted(set(record.eks_regions) - set(regions)) if record is not None else []
    if dropped:  # regions taken out of the spec: what this object made there goes, as with any role it drops
        events += remove_entries(spec, owner, eks, partition, account, dropped, proof, record)
        ledger.eks_regions_cleared(dropped)
    unreadable: dict[str, str] = {}
    for region in regions:
        try:
            names = sorted(eks.names(region))
        except CloudError as exc:
            unreadable[region] = exc.message
            continue
        for name in names:
            mode = eks.authentication_mode(region, name)
            if mode is None:
                continue
            seen = EksCluster(region=region, name=name, authentication_mode=mode, access="ConfigMapOnly")
            if mode == CONFIG_MAP:
                seen.fix = _config_map_fix(region, name, role)
                clusters.append(seen)
                continue
            entry = eks.entry(region, name, role)
            ours = made_here(entry, owner, proof, record, region, name)
            if entry is None and manage:
                # Recorded entry by entry before it is made: cleanup visits only the recorded regions (so a region
                # it cannot read, an opt-in region not enabled with regions: [], cannot block a delete), and only a
                # recorded entry is this object's, whatever tags someone put on another.
                ledger.eks_entry(region, name)
                if eks.grant(region, name, role, owner):
                    events.append(
                        Event("Normal", "AccessEntryCreated", f"gave {role} access to EKS {region}/{name}")
                    )
                    seen.access = "Granted"
                else:  # made by someone else just now: theirs, read on the next deep pass
                    seen.access = "AccessEntry"
            elif ours and not manage:  # no longer wanted: ours go, as everything the object stops declaring
                eks.revoke(region, name, role)
                ledger.eks_entry_removed(region, name)
                events.append(
                    Event("Normal", "AccessEntryDeleted", f"removed {role} from EKS {region}/{name}")
                )
                seen.access, seen.fix = "CanBeCreated", _create_fix(region, name, role, policy)
            elif ours:
                assert entry is not None
                if policy not in entry.policies:  # created, then the process died before the association
                    eks.associate(region, name, role)
                seen.access = "Granted"
            elif entry is None:
                seen.access, seen.fix = "CanBeCreated", _create_fix(region, name, role, policy)
            else:
                seen.access = "AccessEntry"
            clusters.append(seen)
    reachable = sum(c.access in ("Granted", "AccessEntry") for c in clusters)
    first = sorted(clusters, key=lambda c: (c.fix is None, c.region, c.name))
    return EksResult(
        EksStatus(
            clusters=first[:LISTED],
            total=len(clusters),
            reachable=reachable,
            needs_action=len(clusters) - reachable,
            granted=sum(c.access == "Granted" for c in clusters),
            error=_unreadable(unreadable, len(regions)),
        ),
        events,
    )


def _unreadable(failures: dict[str, str], regions: int) -> str | None:
    """Why clusters could not be read: the cause alone when no region could be (missing permissions, say), else the
    regions that could not (an opt-in region not enabled, say) with theirs."""
    if not failures:
        return None
    if len(failures) == regions and len(set(failures.values())) == 1:
        return next(iter(failures.values()))
    return "regions not read: " + "; ".join(f"{region}: {why}" for region, why in failures.items())


def made_entries(eks: EksStatus | None) -> TypeGuard[EksStatus]:
    """Whether status shows access entries this object created: the count covers every cluster (the list only
    the first 50); the list covers status written before the count existed."""
    return eks is not None and (eks.granted > 0 or any(c.access == "Granted" for c in eks.clusters))


def made_here(
    entry: ObservedEntry | None,
    owner: Owner,
    proof: Proof,
    record: OnboardingRecordSpec | None,
    region: str,
    cluster: str,
) -> bool:
    """Whether ``entry`` is one this object made: its mark, created after the object's first write (the proof), and
    recorded before it was made. Tags can be put on an entry by anyone with eks:TagResource, and an entry a cluster
    owner makes by hand, following the fix status prints, postdates that first write; only the record tells them
    apart. Records from before entries were kept fall back on their regions; without a record (plans) the mark and
    the proof decide."""
    key = f"{region}/{cluster}"
    if entry is None or not owner.owns(entry.tags) or not proof.made(entry.created, key):
        return False
    if record is None:
        return True
    return key in record.eks_entries if record.eks_entries is not None else region in record.eks_regions


def remove_entries(
    spec: AWSConnectorSpec,
    owner: Owner,
    eks: EksClusters,
    partition: str,
    account: str,
    regions: list[str],
    proof: Proof,
    record: OnboardingRecordSpec | None,
) -> list[Event]:
    """The discovery role's entries this object created in ``regions``, found in the clusters (not through status):
    those :func:`made_here` says it made (an entry that carries the mark but that it did not record is left)."""
    role = discovery_role(spec, partition, account)
    events = []
    for region in regions:
        for name in eks.names(region):
            if eks.authentication_mode(region, name) in (None, CONFIG_MAP):
                continue
            entry = eks.entry(region, name, role)
            if made_here(entry, owner, proof, record, region, name):
                eks.revoke(region, name, role)
                events.append(
                    Event("Normal", "AccessEntryDeleted", f"removed {role} from EKS {region}/{name}")
                )
    return events
