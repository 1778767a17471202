"""The owner mark: which AWSConnector, in which operator installation, a cloud resource belongs to.

Ownership is recorded in the clouds themselves, as tags on everything the operator creates (stack, StackSet,
security connector, identity provider), so it survives a lost status, a crash between two calls, and a delete before
the first status write; cleanup finds what to remove by deterministic name plus this mark. A resource whose mark names
someone else, or that has none (hand-made, portal-made, another cluster's), is never updated or deleted unless the
object asks to adopt it (docs/design-decisions.md, "Ownership").

The mark names the object by ``<instance>/<namespace>/<name>`` and its uid. Both must match: an object deleted with
``deletionPolicy: Orphan`` and created again under the same name is another object, and what the first one left is
not the second one's to change or delete unless it asks to adopt it (it may onboard another account by then). The
mark is only one proof: anyone who may tag can write it, so nothing is taken away on the mark alone
(``reconcile/proofs.py``). Tag keys use only characters that both AWS and Azure accept (Azure refuses ``/``).
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
        return tags.get(OWNER_TAG) == self.ref and tags.get(OWNER_UID_TAG) == self.uid

    def namesake(self, tags: Mapping[str, str]) -> bool:
        """The mark names this object's namespace and name but another uid: an earlier object of the same name
        (deleted with Orphan) left it."""
        return tags.get(OWNER_TAG) == self.ref and tags.get(OWNER_UID_TAG) != self.uid


def owner_of(tags: Mapping[str, str]) -> str | None:
    """Who a resource's tags say owns it, for messages; None when it carries no owner mark."""
    return tags.get(OWNER_TAG)


def describe_owner(tags: Mapping[str, str], owner: Owner | None = None) -> str:
    """Whose it is, for Stalled messages: another AWSConnector, an earlier object of this one's name, or no one."""
    ref = owner_of(tags)
    if owner is not None and owner.namesake(tags):
        return (
            f"it was left by an earlier AWSConnector {ref} (uid {tags.get(OWNER_UID_TAG, '?')}), deleted with "
            "deletionPolicy Orphan"
        )
    return f"it belongs to AWSConnector {ref}" if ref else "it was not made by defender-operator"
