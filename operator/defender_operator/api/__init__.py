"""The AWSConnector contract: spec and status models, the CRD generated from them, and the API's fixed names."""

from .names import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .spec import AWSConnectorSpec
from .status import AWSConnectorStatus, Condition

__all__ = [
    "API_VERSION",
    "GROUP",
    "KIND",
    "PLURAL",
    "VERSION",
    "AWSConnectorSpec",
    "AWSConnectorStatus",
    "Condition",
]
