"""Systems Manager host management for Azure Arc auto-provisioning (Servers and Databases).

Arc is installed on EC2 through SSM Run Command, so every instance needs SSM Agent and an instance profile with
AmazonSSMManagedInstanceCore. Microsoft's template ships an Automation document that gives instances such a profile,
run by an association every 30 days. This is the same behaviour, written for a supported runtime (python3.6, which
Microsoft's document uses, is no longer accepted by SSM Automation; python3.11 is:
docs.aws.amazon.com/systems-manager/latest/userguide/automation-action-executeScript.html).
"""

from typing import Any

INSTANCE_ROLE = "AmazonSSMRoleForInstancesMDCSetup"
SSM_POLICIES = ("AmazonSSMManagedInstanceCore", "AmazonSSMPatchAssociation")

_SCRIPT = """\
import time

import boto3

ROLE = "%(role)s"
POLICIES = %(policies)r
EC2_TRUST = '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}'


def handler(events, context):
    ec2, iam = boto3.client("ec2"), boto3.client("iam")
    partition = boto3.session.Session().get_partition_for_region(ec2.meta.region_name)
    instance_id = events["InstanceId"]
    associations = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance_id]}, {"Name": "state", "Values": ["associated"]}]
    )["IamInstanceProfileAssociations"]
    if associations and events["IsPolicyAttachAllowed"] == "true":
        profile = associations[0]["IamInstanceProfile"]["Arn"].split("/")[-1]
        for role in iam.get_instance_profile(InstanceProfileName=profile)["InstanceProfile"]["Roles"]:
            for policy in POLICIES:
                iam.attach_role_policy(RoleName=role["RoleName"], PolicyArn=f"arn:{partition}:iam::aws:policy/{policy}")
        return {"result": f"attached SSM policies to the roles of {profile}"}
    try:
        iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=EC2_TRUST, Description="EC2 role for SSM (Defender for Cloud)")
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    for policy in POLICIES:
        iam.attach_role_policy(RoleName=ROLE, PolicyArn=f"arn:{partition}:iam::aws:policy/{policy}")
    try:
        iam.create_instance_profile(InstanceProfileName=ROLE)
        iam.add_role_to_instance_profile(InstanceProfileName=ROLE, RoleName=ROLE)
        time.sleep(10)  # a new instance profile takes a few seconds to be usable by EC2
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    for association in associations:
        ec2.disassociate_iam_instance_profile(AssociationId=association["AssociationId"])
    arn = iam.get_instance_profile(InstanceProfileName=ROLE)["InstanceProfile"]["Arn"]
    ec2.associate_iam_instance_profile(IamInstanceProfile={"Arn": arn}, InstanceId=instance_id)
    return {"result": f"associated {ROLE} with {instance_id}"}
"""


def automation_document() -> dict[str, Any]:
    """Content of the Automation document run on each EC2 instance."""
    return {
        "schemaVersion": "0.3",
        "description": "Defender for Cloud: give an EC2 instance an instance profile that lets SSM manage it, so "
        "that Azure Arc can be installed (managed by defender-operator).",
        "assumeRole": "{{ AutomationAssumeRole }}",
        "parameters": {
            "AutomationAssumeRole": {"type": "String", "description": "Role the automation runs as."},
            "InstanceId": {"type": "String", "description": "EC2 instance to prepare."},
            "IsPolicyAttachAllowed": {
                "type": "String",
                "default": "true",
                "allowedValues": ["true", "false"],
                "description": "Attach the SSM policies to an instance's existing role instead of replacing its "
                "instance profile.",
            },
        },
        "mainSteps": [
            {
                "name": "prepareInstance",
                "action": "aws:executeScript",
                "inputs": {
                    "Runtime": "python3.11",
                    "Handler": "handler",
                    "InputPayload": {
                        "InstanceId": "{{ InstanceId }}",
                        "IsPolicyAttachAllowed": "{{ IsPolicyAttachAllowed }}",
                    },
                    "Script": _SCRIPT % {"role": INSTANCE_ROLE, "policies": SSM_POLICIES},
                },
                "isEnd": True,
            }
        ],
    }


ASSOCIATION_NAME = "DefenderForCloud-ArcHostManagement"
ASSOCIATION_SCHEDULE = "rate(30 days)"
