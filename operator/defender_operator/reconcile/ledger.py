"""The ledger a pass or a cleanup acts with: what it records before it acts, and the record's side of every proof of
ownership. The operator's is ``journal.WriteJournal`` (and ``journal.CleanupLedger``); plans and unit tests use
:class:`Unrecorded`, which records nothing and trusts the mark.
"""

from contextlib import AbstractContextManager
from typing import Literal, Protocol

from ..api.record import OnboardingRecordSpec
from ..writes import unrecorded
from .proofs import UNRECORDED, Proof

CloudName = Literal["aws", "azure"]


class Ledger(Protocol):
    """What a pass or a cleanup records before it acts, and the record's side of every proof of ownership
    (``journal.WriteJournal`` in the operator; :class:`Unrecorded` in plans and unit tests)."""

    def __call__(self, cloud: CloudName) -> AbstractContextManager[object]:
        """Wraps each write to ``cloud`` (see :mod:`defender_operator.writes`)."""

    def proof(self, cloud: CloudName) -> Proof:
        """The record's proof for resources in ``cloud`` (``proofs.py``)."""

    def recorded(self) -> OnboardingRecordSpec | None:
        """The object's record, when one is kept."""

    def adopted(self, resource_id: str) -> None:
        """Before taking over ``resource_id``."""

    def shared(self, arn: str, audiences: list[str]) -> None:
        """Before adding ``audiences`` to a provider this object did not create."""

    def unshared(self, arn: str) -> None:
        """After the audiences added to ``arn`` went again."""

    def stack_set(self, stack_set_id: str) -> None:
        """After creating the member StackSet."""

    def members(self, accounts: list[str]) -> None:
        """Before looking after the identity providers of member ``accounts`` through the member role."""

    def members_released(self, accounts: list[str]) -> None:
        """After what this object added in member ``accounts`` went: they are not visited again."""

    def eks_entry(self, region: str, cluster: str) -> None:
        """Before making an access entry in ``cluster`` of ``region``."""

    def eks_entry_removed(self, region: str, cluster: str) -> None:
        """After the access entry this object made in ``cluster`` of ``region`` went."""

    def eks_regions_cleared(self, regions: list[str]) -> None:
        """After the access entries this object made in ``regions`` went."""

    def hand_over(self, resource_id: str, refs: list[str]) -> None:
        """This object made ``resource_id`` and leaves it to the objects ``refs`` (owner refs) that still use it."""


class Unrecorded:
    """A ledger that records nothing and trusts the mark (``defender-operator plan``, which writes nothing)."""

    def __call__(self, cloud: CloudName) -> AbstractContextManager[object]:
        return unrecorded()

    def proof(self, cloud: CloudName) -> Proof:
        return UNRECORDED

    def recorded(self) -> OnboardingRecordSpec | None:
        return None

    def adopted(self, resource_id: str) -> None:
        return None

    def shared(self, arn: str, audiences: list[str]) -> None:
        return None

    def unshared(self, arn: str) -> None:
        return None

    def stack_set(self, stack_set_id: str) -> None:
        return None

    def members(self, accounts: list[str]) -> None:
        return None

    def members_released(self, accounts: list[str]) -> None:
        return None

    def eks_entry(self, region: str, cluster: str) -> None:
        return None

    def eks_entry_removed(self, region: str, cluster: str) -> None:
        return None

    def eks_regions_cleared(self, regions: list[str]) -> None:
        return None

    def hand_over(self, resource_id: str, refs: list[str]) -> None:
        return None


UNRECORDED_LEDGER = Unrecorded()
