"""Systems Manager's inventory of managed nodes, which moto lacks (``DescribeInstanceInformation``).

AWS: an EC2 instance becomes a managed node when the SSM Agent on it registers, which it can do only with the
permissions of its instance profile (``AmazonSSMManagedInstanceCore``: Systems Manager User Guide,
setup-instance-permissions.html) or of Default Host Management Configuration. The emulator runs no agent: a running
instance counts as registered when its instance profile's role allows ``ssm:UpdateInstanceInformation``, the call
the agent registers with (AmazonSSMManagedInstanceCore grants it). Default Host Management Configuration is not
emulated. The answer is paged as API_DescribeInstanceInformation.html says (``MaxResults`` 5-50, 10 when not given, and
``NextToken``) and honours its ``Filters`` on PingStatus, InstanceIds and ResourceType.
"""

from typing import Any

from moto.core.responses import ActionResult
from moto.ec2.models import ec2_backends
from moto.ssm.responses import SimpleSystemManagerResponse

from . import authorization


def _registered(ec2: Any, instance: Any, account: str) -> bool:
    association = ec2.iam_instance_profile_associations.get(instance.id)
    if association is None or instance.state != "running":
        return False
    return any(
        authorization.allows(
            authorization.Principal(account, role.arn, "role", role.name),
            "ssm:UpdateInstanceInformation",
            "*",
        )
        for role in association.iam_instance_profile.roles
    )


def describe_instance_information(self: SimpleSystemManagerResponse) -> ActionResult:
    account, region = self.current_account, self.region
    ec2 = ec2_backends[account][region]
    nodes = [
        {"InstanceId": instance.id, "PingStatus": "Online", "ResourceType": "EC2Instance"}
        for reservation in ec2.reservations.values()
        for instance in reservation.instances
        if _registered(ec2, instance, account)
    ]
    for wanted in self._get_param("Filters") or []:  # InstanceInformationStringFilter: Key and Values
        field = {"PingStatus": "PingStatus", "InstanceIds": "InstanceId", "ResourceType": "ResourceType"}.get(
            wanted.get("Key", "")
        )
        if field is not None:
            nodes = [n for n in nodes if n[field] in (wanted.get("Values") or [])]
    size = max(5, min(50, int(self._get_param("MaxResults") or 10)))
    start = int(self._get_param("NextToken") or 0)
    page: dict[str, Any] = {"InstanceInformationList": nodes[start : start + size]}
    if start + size < len(nodes):
        page["NextToken"] = str(start + size)
    return ActionResult(page)


def apply() -> None:
    SimpleSystemManagerResponse.describe_instance_information = describe_instance_information  # type: ignore[attr-defined]
