"""The running EC2 instances of a region that Systems Manager does not manage: Arc auto-provisioning cannot reach them.

Defender installs the Azure Arc agent on EC2 instances with Systems Manager Run Command (the ArcAutoProvisioning
role's ``ssm:SendCommand``), which reaches managed nodes only: instances whose SSM Agent registered, with the
permissions of their instance profile (``AmazonSSMManagedInstanceCore``: Systems Manager User Guide,
setup-instance-permissions.html) or of Default Host Management Configuration. Read-only: DescribeInstances (running
ones) and DescribeInstanceInformation, both paged, per region.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .api import AwsClientError, pages

# What EC2 answers in a region the account has not enabled (opt-in regions: boto/boto3#2022 shows AuthFailure)
NOT_ENABLED = frozenset({"AuthFailure", "OptInRequired"})


@dataclass(frozen=True)
class RegionNodes:
    region: str
    running: int
    unmanaged: list[str]  # instance ids, sorted


class ManagedNodes:
    def __init__(self, client_in: Callable[[str, str], Any]) -> None:
        """``client_in(service, region)``: the client of a service in a region."""
        self.client_in = client_in

    def region(self, region: str) -> RegionNodes | None:
        """None for a region the account has not enabled (an opt-in region: EC2 answers AuthFailure there)."""
        ec2 = self.client_in("ec2", region)
        running_only = [{"Name": "instance-state-name", "Values": ["running"]}]
        try:
            reservations = pages(
                ec2, "describe_instances", "Reservations", Filters=running_only, MaxResults=1000
            )
        except AwsClientError as exc:
            if exc.code in NOT_ENABLED:
                return None
            raise
        running = {str(i["InstanceId"]) for r in reservations for i in r.get("Instances") or []}
        if not running:  # nothing to reach: Systems Manager is not asked
            return RegionNodes(region, 0, [])
        # Online nodes only: Run Command does not reach a node whose agent lost its connection
        online = [{"Key": "PingStatus", "Values": ["Online"]}]
        ssm = self.client_in("ssm", region)
        nodes = pages(
            ssm, "describe_instance_information", "InstanceInformationList", Filters=online, MaxResults=50
        )
        managed = {str(n["InstanceId"]) for n in nodes}
        return RegionNodes(region, len(running), sorted(running - managed))
