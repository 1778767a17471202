"""OnboardingRecord: what the operator itself knows of one AWSConnector's writes, kept where no tenant can write.

The owner mark (tags in AWS and Azure) says whose a cloud resource is, but anyone who may tag can forge it; an
AWSConnector's spec and status are in the tenant's namespace. So the operator keeps, per AWSConnector, a cluster-scoped
record that only its own ServiceAccount may write (the chart grants nobody else; a cluster admin may read it):

- ``written``: when the first write to each cloud was about to be made (write-ahead: recorded before it). A cloud
  resource that carries this object's mark and was created after that moment is this object's; one created before
  it was not (a tag-only actor's forgery, or an earlier object of the same name that left it with Orphan).
- ``connector``: the spec the operator last acted on with the grant's allowance. Cleanup uses it, never a spec changed
  after ``deletionTimestamp``: whatever a tenant patches into a deleted object is not acted on.
- ``adopted``: resources taken over with ``defender-operator.io/adopt`` (they predate ``written``).
- ``sharedAudiences``: audiences added to identity providers this object did not create (Microsoft Sentinel's), so
  only those are ever removed again.
- ``stackSetId``: the member StackSet this object created (CloudFormation gives a StackSet no creation time).
- ``eksRegions``: regions where this object may have made EKS access entries, so a region dropped from the spec is
  still cleaned up.

Named by the AWSConnector's uid: a re-created object of the same name is another object with another record. A record
outlives its object only when cleanup did not run (the finalizer removed by hand): it then lists what may be left.
"""

from typing import Any

from pydantic import Field

from .schema import CamelModel
from .status import FirstCloudWrite


def record_labels(namespace: str, name: str) -> dict[str, str]:
    """The labels a record is found by: label values hold at most 63 characters, ending in a letter or digit, so a
    long name is cut (the record's spec has it whole)."""
    return {
        "defender-operator.io/namespace": namespace,
        "defender-operator.io/name": name[:63].rstrip("-."),
    }


class ObjectRef(CamelModel):
    """The AWSConnector a record belongs to."""

    namespace: str = Field(description="Its namespace.")
    name: str = Field(description="Its name.")
    uid: str = Field(description="Its uid (also the record's name).")


class SharedAudiences(CamelModel):
    """Audiences this object added to an identity provider it did not create."""

    arn: str = Field(description="The provider's ARN.")
    audiences: list[str] = Field(default_factory=list, description="The audiences added.")


class OnboardingRecordSpec(CamelModel):
    """Written by the operator only (docs/tenancy.md, "The operator's own record")."""

    object: ObjectRef = Field(description="The AWSConnector.")
    instance: str = Field(description="The operator installation (the owner mark's first part).")
    generation: int = Field(default=0, description="metadata.generation of the spec below.")
    allowed_by: str | None = Field(default=None, description="What allowed that spec (status.allowedBy).")
    connector: dict[str, Any] = Field(
        default_factory=dict,
        description="The AWSConnector spec last acted on; cleanup uses it.",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    written: FirstCloudWrite = Field(
        default_factory=FirstCloudWrite, description="Before the first write to each cloud (RFC 3339)."
    )
    adopted: list[str] = Field(
        default_factory=list, description="Ids of resources taken over with defender-operator.io/adopt."
    )
    shared_audiences: list[SharedAudiences] = Field(
        default_factory=list, description="Audiences added to providers this object did not create."
    )
    stack_set_id: str | None = Field(default=None, description="The member StackSet this object created.")
    eks_regions: list[str] = Field(
        default_factory=list, description="Regions where this object may have made EKS access entries."
    )
    eks_entries: list[str] | None = Field(
        default=None,
        description="The EKS access entries (region/cluster) this object made, each recorded before it was created: "
        "only these are its own, whatever tags an entry carries. Absent in records from before entries were kept "
        "(their entries are judged by eksRegions, the mark and the creation time).",
    )
    member_accounts: list[str] | None = Field(
        default=None,
        description="Member accounts of the organization whose identity provider this object may change through "
        "spec.aws.organization.memberProviderRoleName, each recorded before its first change there: cleanup "
        "releases providers in these only, so a member the grant never let it into never blocks a delete. Absent "
        "in records of objects that changed member providers before these were kept (cleanup then visits every "
        "member account the StackSet targets).",
    )
    abandoned: str | None = Field(
        default=None,
        description="When the AWSConnector went without its cleanup (its finalizer removed by hand): what this record "
        "lists may be left in the clouds. Delete the record once that is dealt with.",
    )

    def shared(self, arn: str) -> list[str]:
        return next((s.audiences for s in self.shared_audiences if s.arn == arn), [])
