"""The AWSConnector status: what the operator observed, in a shape kstatus, Argo CD and Flux understand.

Conditions follow metav1.Condition. The top-level ``Ready``, ``Reconciling`` and ``Stalled`` conditions are the
kstatus contract; ``AWSReady``, ``AzureReady`` and ``Healthy`` say which side is not there yet.
"""

from typing import Annotated, Literal

from pydantic import ConfigDict, Field, StringConstraints

from .schema import CamelModel

ConditionType = Literal[
    "Ready", "Reconciling", "Stalled", "Paused", "AWSReady", "AzureReady", "Healthy", "MembersReady"
]
# metav1.Condition's reason: CamelCase, 1-1024 characters (k8s.io/apimachinery/pkg/apis/meta/v1/types.go).
REASON_PATTERN = r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"


class StatusModel(CamelModel):
    """Status is written only by the operator; it is mutable between passes."""

    model_config = ConfigDict(frozen=False)


class Condition(StatusModel):
    """One observation, in the shape of metav1.Condition."""

    type: Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9]*$", max_length=316)] = Field(
        description="Condition type: Ready, Reconciling, Stalled, Paused, AWSReady, AzureReady or Healthy."
    )
    status: Literal["True", "False", "Unknown"] = Field(description="True, False or Unknown.")
    observed_generation: int | None = Field(
        default=None, ge=0, description="metadata.generation the condition was computed for."
    )
    last_transition_time: str = Field(
        description="When the status last changed (RFC 3339).", json_schema_extra={"format": "date-time"}
    )
    reason: Annotated[str, StringConstraints(pattern=REASON_PATTERN, min_length=1, max_length=1024)] = Field(
        description="One CamelCase word for the cause; docs/troubleshooting.md explains each."
    )
    message: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="What happened and what to do, for a person."
    )


class OidcProviderStatus(StatusModel):
    """The identity provider the roles trust."""

    arn: str = Field(description="ARN of the IAM OIDC identity provider.")
    owned: bool = Field(
        description="True when defender-operator created the provider (the last AWSConnector relying on it deletes it "
        "when nothing else uses it); false when it was already there, e.g. from Microsoft Sentinel (only "
        "addedAudiences are removed on cleanup)."
    )
    added_audiences: list[str] = Field(
        default_factory=list, description="Audiences defender-operator added to a provider it did not create."
    )


class AwsStatus(StatusModel):
    """What the operator observed in AWS."""

    stack_name: str | None = Field(default=None, description="CloudFormation stack name.")
    stack_id: str | None = Field(default=None, description="CloudFormation stack id.")
    stack_status: str | None = Field(default=None, description="Last observed stack status.")
    template_hash: str | None = Field(
        default=None, description="Hash of the template the stack was last given."
    )
    roles: dict[str, str] = Field(
        default_factory=dict, description="Role ARNs by role (the stack's outputs)."
    )
    role_names: dict[str, str] = Field(
        default_factory=dict,
        description="The name of each role the object uses, by spec.aws.roleNames key. A name the spec leaves unset "
        "stays this one, so a release with new default names never renames live roles; setting the name in the "
        "spec renames.",
    )
    oidc_provider: OidcProviderStatus | None = Field(default=None, description="Microsoft identity provider.")
    ciem_oidc_provider: OidcProviderStatus | None = Field(
        default=None, description="Identity provider of your own tenant, for CIEM."
    )
    failed_template_hash: str | None = Field(
        default=None,
        description="Template hash whose deployment failed; it is not retried until the spec changes or a reconcile "
        "is requested.",
    )
    last_drift_check: str | None = Field(
        default=None,
        description="When role drift was last checked (RFC 3339); set when the stack is created, since a stack "
        "just made from the template has nothing to drift from.",
    )
    drift_detection_id: str | None = Field(
        default=None, description="CloudFormation drift detection in progress."
    )
    repair_change_set_id: str | None = Field(
        default=None, description="Drift-aware change set that is putting drifted roles back."
    )
    roles_remade_for: str | None = Field(
        default=None,
        description="Template hash of the last update that made again roles deleted outside the operator, after an "
        "update's rollback had failed on them: if that update fails on deleted roles again, the object is Stalled "
        "rather than trying once more.",
    )


class EksCluster(StatusModel):
    """Whether Defender's agentless discovery can reach one EKS cluster."""

    region: str = Field(description="AWS region.")
    name: str = Field(description="Cluster name.")
    authentication_mode: str = Field(description="The cluster's authentication mode (accessConfig).")
    access: Literal["Granted", "AccessEntry", "CanBeCreated", "ConfigMapOnly"] = Field(
        description="Granted: the operator created the discovery role's access entry; AccessEntry: one exists, made "
        "by someone else; CanBeCreated: the cluster takes access entries but has none for the role; ConfigMapOnly: "
        "the cluster reads only the aws-auth ConfigMap, which the operator cannot see."
    )
    fix: str | None = Field(default=None, description="What to run so Defender can reach the cluster.")


class EksStatus(StatusModel):
    """EKS clusters in the connector's regions and whether Defender's agentless discovery reaches them (read on deep
    passes; the list is bounded, the counts are not)."""

    clusters: list[EksCluster] = Field(
        default_factory=list, description="The first 50 clusters, those needing action first."
    )
    total: int = Field(default=0, description="Clusters found.")
    reachable: int = Field(default=0, description="Clusters with an access entry for the discovery role.")
    needs_action: int = Field(default=0, description="Clusters Defender cannot reach yet (see fix).")
    granted: int = Field(
        default=0,
        description="Clusters with an access entry this object created (spec.aws.eksAccessEntries).",
    )
    error: str | None = Field(
        default=None, description="Why the clusters could not be read (onboarding itself is not affected)."
    )


class HealthIssue(StatusModel):
    """One issue from the connector's Defender health report."""

    key: str = Field(description="Issue key from the health report.")
    name: str | None = Field(default=None, description="Short name of the issue.")
    description: str | None = Field(default=None, description="What is wrong.")
    remediation: str | None = Field(default=None, description="How to fix it, from Defender.")


class HealthStatus(StatusModel):
    """Defender's own view of the connector, from its health reports."""

    status: Literal["Healthy", "NotHealthy", "NotApplicable", "Unknown"] = Field(
        default="Unknown", description="Worst status over the connector's health reports."
    )
    issues: list[HealthIssue] = Field(default_factory=list, description="Issues Defender reports.")
    last_scanned: str | None = Field(default=None, description="When Defender last evaluated the connector.")


class AzureStatus(StatusModel):
    """What the operator observed in Azure."""

    connector_name: str | None = Field(default=None, description="Name of the security connector.")
    connector_id: str | None = Field(default=None, description="ARM id of the security connector.")
    etag: str | None = Field(default=None, description="ETag of the connector as last written or read.")
    applied_hash: str | None = Field(
        default=None,
        description="Hash of the connector body this operator last wrote (tells drift from updates).",
    )
    trial_end_date: str | None = Field(
        default=None,
        description="End of the 30-day Defender trial for paid plans (hierarchyIdentifierTrialEndDate).",
    )
    health: HealthStatus | None = Field(default=None, description="Defender health of the connector.")


class MemberAccount(StatusModel):
    """A member account of the organization and the connector Defender created for it."""

    account_id: str = Field(description="12-digit member account id.")
    connector_id: str | None = Field(
        default=None, description="Connector Defender created for it, when it exists."
    )


class FailingMember(StatusModel):
    """A member account whose StackSet instance failed."""

    account_id: str = Field(description="12-digit member account id.")
    reason: str = Field(default="", description="CloudFormation's reason for the failure.")


class InstanceCounts(StatusModel):
    """Stack instances of the member StackSet by state."""

    current: int = Field(default=0, description="Up to date and succeeded.")
    outdated: int = Field(
        default=0, description="Not yet, or no longer, at the StackSet's template (in progress)."
    )
    failed: int = Field(default=0, description="The last operation failed in the account.")
    inoperable: int = Field(default=0, description="CloudFormation can no longer manage the instance.")


class MemberProviders(StatusModel):
    """Defender's audiences on the identity providers of member accounts (spec.aws.organization
    memberProviderRoleName), as of the last deep pass."""

    ready: int = Field(default=0, description="Member accounts whose provider has Defender's audiences.")
    shared: int = Field(
        default=0,
        description="Of those, providers that existed before (e.g. Microsoft Sentinel's) and are shared.",
    )
    failing: list[FailingMember] = Field(
        default_factory=list,
        description="The first 20 member accounts where the provider could not be set up, with why (bounded).",
    )
    failed: int = Field(default=0, description="Member accounts where the provider could not be set up.")


class OrganizationStatus(StatusModel):
    """Organization onboarding: the StackSet and the member connectors Defender creates itself."""

    stack_set_id: str | None = Field(default=None, description="StackSet id.")
    stack_set_status: str | None = Field(default=None, description="Status of the StackSet's last operation.")
    operation_id: str | None = Field(
        default=None, description="StackSet operation the operator is waiting for."
    )
    template_hash: str | None = Field(default=None, description="Hash of the member template last deployed.")
    member_accounts: int = Field(default=0, description="Member accounts with a StackSet instance.")
    progress: str | None = Field(
        default=None,
        description="Member accounts whose instance is deployed and current, of those with one (e.g. 120/300), for "
        "kubectl get's MEMBERS column while a StackSet rolls out.",
    )
    member_connectors: int = Field(default=0, description="Member connectors Defender has created so far.")
    member_connector_scope: str | None = Field(
        default=None,
        description="Where member connectors were counted: the subscription, or only the management connector's "
        "resource group when the operator's Azure role is assigned on resource groups (docs/production.md).",
    )
    instances: InstanceCounts | None = Field(default=None, description="Member stack instances by state.")
    failing_accounts: list[FailingMember] = Field(
        default_factory=list,
        description="The first 20 member accounts whose instance failed, with CloudFormation's reason (bounded, "
        "whatever the size of the organization; instances.failed has the count).",
    )
    members: list[MemberAccount] = Field(
        default_factory=list,
        description="The first 100 member accounts with a connector (bounded, whatever the size of the "
        "organization; memberConnectors has the count).",
    )
    member_providers: MemberProviders | None = Field(
        default=None, description="Identity providers of member accounts, when the operator manages them."
    )


class FirstCloudWrite(StatusModel):
    """Write-ahead record of the first write to each cloud (RFC 3339 times)."""

    aws: str | None = Field(default=None, description="Before the first write to AWS.")
    azure: str | None = Field(default=None, description="Before the first write to Azure.")


class CatalogStatus(StatusModel):
    """Which IAM catalog (Microsoft's roles and permissions, as this operator ships them) the object's AWS side was
    written with, and where it stands in the rollout of a newer one (docs/catalog-rollout.md)."""

    version: str | None = Field(
        default=None,
        description="The catalog the stack (and StackSet) last matched, once the AWS side was Ready.",
    )
    upgrading: str | None = Field(
        default=None,
        description="The catalog an update in progress writes, admitted by the rollout; it stays while that update "
        "has failed (the rollout is halted at this object until it succeeds).",
    )
    waiting: str | None = Field(
        default=None,
        description="Why the object waits for its turn in the rollout of a newer catalog (its AWS side keeps the "
        "older one meanwhile and is not repaired).",
    )


class AWSConnectorStatus(StatusModel):
    """Observed state."""

    observed_generation: int | None = Field(
        default=None, description="The metadata.generation the operator last finished a pass for."
    )
    first_cloud_write: FirstCloudWrite | None = Field(
        default=None,
        description="When the operator first changed something in AWS and in Azure for this object, each recorded "
        "before that write. A cloud without an entry was never written to, so deleting the object needs no cleanup "
        "there (and no credentials for it).",
    )
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Ready, Reconciling, Stalled (kstatus), AWSReady, AzureReady and Healthy.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    plans: str | None = Field(default=None, description="Enabled plans, for kubectl get.")
    allowed_by: str | None = Field(
        default=None,
        description="What allows this object to use the identities it uses: the ClusterOnboardingPolicy that grants "
        "the operator's own identity, or Default (only credentials from Secrets in its own namespace).",
    )
    last_handled_reconcile_at: str | None = Field(
        default=None,
        description="Value of the defender-operator.io/reconcile-requested-at annotation last handled.",
    )
    catalog: CatalogStatus | None = Field(
        default=None, description="The IAM catalog the AWS side was written with, and its rollout."
    )
    aws: AwsStatus | None = Field(default=None, description="AWS side.")
    azure: AzureStatus | None = Field(default=None, description="Azure side.")
    organization: OrganizationStatus | None = Field(default=None, description="Organization onboarding.")
    eks: EksStatus | None = Field(
        default=None,
        description="EKS clusters and Defender's access to them (when agentless Kubernetes discovery is on).",
    )
