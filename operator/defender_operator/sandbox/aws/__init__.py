"""The AWS emulator: moto in server mode, with fixes where moto differs from AWS in ways the operator depends on.

Importing moto's CloudFormation support imports its EC2 models, which build their region list with three fresh
boto3 sessions, each loading botocore's endpoint data again (0.5 s of the emulator's start-up). One shared botocore
session answers the same question from data loaded once.
"""

import functools

import boto3.session
import botocore.session

_shared = botocore.session.get_session()


@functools.cache
def _regions(service: str, partition_name: str, allow_non_regional: bool) -> tuple[str, ...]:
    return tuple(_shared.get_available_regions(service, partition_name, allow_non_regional))


def _available_regions(
    self: boto3.session.Session,
    service_name: str,
    partition_name: str = "aws",
    allow_non_regional: bool = False,
) -> list[str]:
    return list(_regions(service_name, partition_name, allow_non_regional))


boto3.session.Session.get_available_regions = _available_regions  # type: ignore[method-assign]
