"""defender-operator: onboard AWS accounts into Microsoft Defender for Cloud from Kubernetes."""

__version__ = "0.1.0"
