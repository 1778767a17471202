"""AWS commercial regions that Defender for Cloud can scan.

Defender's AWS connector is not offered for AWS GovCloud or China (see docs/reference.md, "Regions"), so only the
commercial partition is listed. The list is an enum in the CRD, so a typo such as ``eu-west-12`` is rejected by the
API server before the operator ever sees it; add a region here (and regenerate the CRD) when AWS opens one.
"""

from typing import Literal, get_args

AwsRegion = Literal[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-west-1",
    "us-west-2",
]

AWS_REGIONS: tuple[str, ...] = get_args(AwsRegion)
