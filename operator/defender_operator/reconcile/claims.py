"""Who may onboard an AWS account into a subscription when several AWSConnectors ask for the same one.

Azure allows one connector per AWS account and subscription, so of several objects naming the same pair only one
acts; the others are Stalled with ``ConnectorConflict``. The rank, lowest first: an object that has written to a cloud
before one that has not (so a newcomer never displaces the object whose stack and connector exist, even when both
were created in the same second, creationTimestamp's resolution), then the older, then the uid as the tie-break.
Pure: the Kopf layer keeps the index these functions read.
"""

from collections.abc import Mapping
from typing import Any


def onboarding_key(spec: Mapping[str, Any]) -> str:
    """What Azure allows only once: one connector per AWS account and subscription (a subscription id in any case:
    Azure compares them without it)."""
    return f"{spec.get('aws', {}).get('accountId', '')}/{str(spec.get('azure', {}).get('subscriptionId', '')).lower()}"


def claim_rank(meta: Mapping[str, Any], status: Mapping[str, Any] | None) -> str:
    """The rank of an object's claim on its onboarding (see the module's docstring)."""
    wrote = "0" if (status or {}).get("firstCloudWrite") else "1"
    return f"{wrote}/{meta.get('creationTimestamp')}/{meta.get('uid')}"


def conflict_with(index: Mapping[str, Any], spec: Mapping[str, Any], namespace: str, name: str) -> str | None:
    """The object with the strongest claim on the same account and subscription, if it is not this one."""
    entries = sorted(index.get(onboarding_key(spec), []))
    if not entries or entries[0][1] == f"{namespace}/{name}":
        return None
    return str(entries[0][1])


def losers(index: Mapping[str, Any], key: str) -> list[str]:
    """Every object of an onboarding but the one with the strongest claim: those to look again at when it goes."""
    return [str(entry[1]) for entry in sorted(index.get(key, []))[1:]]
