"""The owner mark: which AWSConnector, in which operator installation, a cloud resource belongs to.

Ownership is recorded in the clouds themselves, as tags on everything the operator creates (stack, StackSet,
security connector, identity provider), so it survives a lost status, a crash between two calls, and a delete before
the first status write; cleanup finds what to remove by deterministic name plus this mark. A resource whose mark names
someone else, or that has none (hand-made, portal-made, another cluster's), is never updated or deleted unless the
object asks to adopt it (docs/design-decisions.md, "Ownership").

The mark names the object by ``<instance>/<namespace>/<name>``: the same declaration in the same installation is the
same owner even when the object was deleted with ``deletionPolicy: Orphan`` and created again; the uid is recorded
beside it for audit. Tag keys use only characters that both AWS and Azure accept in tag keys (Azure refuses ``/``).
"""

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

OWNER_TAG = "defender-operator-owner"
OWNER_UID_TAG = "defender-operator-owner-uid"
MANAGED_BY_TAG = "managed-by"
MANAGED_BY = "defender-operator"
_TAG_VALUE_MAX = 256  # AWS and Azure both cap tag values at 256 characters


@dataclass(frozen=True)
class Owner:
    """One AWSConnector as an owner of cloud resources."""

    instance: str
    namespace: str
    name: str
    uid: str

    @property
    def ref(self) -> str:
        """``<instance>/<namespace>/<name>``, shortened with a hash when it would not fit in a tag value."""
        ref = f"{self.instance}/{self.namespace}/{self.name}"
        if len(ref) <= _TAG_VALUE_MAX:
            return ref
        digest = hashlib.sha256(ref.encode()).hexdigest()[:12]
        return f"{ref[: _TAG_VALUE_MAX - 13]}~{digest}"

    def tags(self) -> dict[str, str]:
        return {OWNER_TAG: self.ref, OWNER_UID_TAG: self.uid, MANAGED_BY_TAG: MANAGED_BY}

    def owns(self, tags: Mapping[str, str]) -> bool:
        return tags.get(OWNER_TAG) == self.ref


def owner_of(tags: Mapping[str, str]) -> str | None:
    """Who a resource's tags say owns it, for messages; None when it carries no owner mark."""
    return tags.get(OWNER_TAG)


def describe_owner(tags: Mapping[str, str]) -> str:
    """'AWSConnector <ref>' or 'not made by defender-operator', for Stalled messages."""
    owner = owner_of(tags)
    return f"it belongs to AWSConnector {owner}" if owner else "it was not made by defender-operator"
