"""Two proofs of ownership before anything is changed or taken away: the cloud mark and the operator's own record.

Anyone who may tag (``iam:TagOpenIDConnectProvider``, Azure's Tag Contributor) can write the owner mark onto a
resource that is not this object's: Microsoft Sentinel's identity provider, another team's connector. So a mark is
never enough. The operator's record (``api/record.py``), which only the operator can write, says when this object
first wrote to each cloud; a resource this object made was created after that moment, every cloud says when a
resource was created (CloudFormation's CreationTime, IAM's CreateDate, ARM's systemData.createdAt, EKS's createdAt),
and no tag can change that. A resource that carries the mark but is older than the record (less the clock skew
allowed), and that the record does not list as adopted, is disputed: the operator changes and deletes nothing of it
and says so.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from ..aws.oidc import ObservedProvider
from ..errors import TerminalError
from ..ownership import Owner

DISPUTED = "OwnershipDisputed"


def moment(value: Any) -> datetime | None:
    """A cloud's or the record's time as an aware datetime (botocore gives datetimes, ARM and the record strings)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).replace("Z", "+00:00")
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Proof:
    """What the record says of one cloud: when this object first wrote there, and what it adopted."""

    written: datetime | None
    adopted: frozenset[str] = field(default_factory=frozenset)
    skew: timedelta = timedelta(seconds=120)
    unrecorded: bool = False  # no record is kept (plans, unit tests): the mark alone decides

    def made(self, created: Any, resource_id: str = "") -> bool:
        """Whether a resource that carries this object's mark is this object's by the record too."""
        if self.unrecorded or resource_id in self.adopted:
            return True
        when = moment(created)
        if self.written is None or when is None:
            return False
        return when >= self.written - self.skew

    def check(self, created: Any, resource_id: str, what: str) -> None:
        """Raise ``OwnershipDisputed`` when the mark says ours and the record does not."""
        if self.made(created, resource_id):
            return
        recorded = self.written.isoformat() if self.written else "never"
        raise TerminalError(
            DISPUTED,
            f"{what} carries this object's owner mark, but it was created {_when(created)}, before this object first "
            f"wrote there ({recorded}), and the operator's record does not show it as adopted: the mark may have been "
            "written by someone else. Nothing of it was changed or deleted. If it is this object's, annotate the "
            "object defender-operator.io/adopt=true (with a grant that allows adoption); otherwise remove the "
            "owner tags from it, or set spec.deletionPolicy to Orphan.",
        )


UNRECORDED = Proof(written=None, unrecorded=True)


def _when(created: Any) -> str:
    when = moment(created)
    return when.isoformat() if when else "at an unknown time"


def made_provider(observed: ObservedProvider, owner: Owner, proof: Proof) -> bool:
    """This object made the identity provider: its creation mark names this object (not merely some object of the
    operator) and the provider is newer than the object's first write to AWS, or the record has it (handed over by
    its maker when it left)."""
    if observed.arn in proof.adopted:
        return True
    return observed.created_by(owner) and proof.made(observed.created, observed.arn)
