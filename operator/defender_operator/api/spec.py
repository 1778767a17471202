"""The AWSConnector spec: everything the portal's "Add environment > Amazon Web Services" wizard asks, as fields.

Field descriptions are what ``kubectl explain`` prints, so they are written for the person filling in a manifest.
Defaults follow the portal (docs/reference.md lists each one and why).
"""

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .regions import AwsRegion
from .schema import CamelModel, cel, immutable, rules

_S = TypeVar("_S", bound=str)

UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ACCOUNT_ID_PATTERN = r"^[0-9]{12}$"
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# ARM resource group names: 1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending in a
# period (learn.microsoft.com/azure/azure-resource-manager/management/resource-name-rules#microsoftresources).
RESOURCE_GROUP_PATTERN = r"^[-A-Za-z0-9_.()]{0,89}[-A-Za-z0-9_()]$"
AZURE_LOCATION_PATTERN = r"^[a-z][a-z0-9]{1,39}$"
CONNECTOR_NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,251}[A-Za-z0-9_])?$"
# IAM role names: up to 64 characters of [\w+=,.@-] (docs.aws.amazon.com/IAM/latest/APIReference/API_CreateRole.html).
ROLE_NAME_PATTERN = r"^[A-Za-z0-9+=,.@_-]{1,64}$"
ROLE_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}$"
# sts:ExternalId: 2-1224 characters of [\w+=,.@:/-] (API_AssumeRole.html).
EXTERNAL_ID_PATTERN = (
    r"^[A-Za-z0-9+=,.@:/_-]+$"  # lengths as constraints: RE2 allows repeat counts up to 1000
)
# CloudFormation stack and StackSet names (API_CreateStack.html, API_CreateStackSet.html).
# CloudFormation stack and StackSet names (API_CreateStack.html, API_CreateStackSet.html): a letter, then letters,
# digits and hyphens, at most 128.
STACK_NAME_PATTERN = r"^[A-Za-z][-A-Za-z0-9]{0,127}$"
# New stacks and StackSets are named under the prefix the operator's IAM policy allows (docs/operator-iam-policy.json:
# stack/DefenderForCloud-*, stackset/DefenderForCloud-*), so a name the CRD takes never fails in an account set up
# with least privilege (issue 28). Objects stored before the rule keep their names (the rule is ratcheted: CEL with
# optionalOldSelf at the API server, the ``NEW`` validation context in the operator), or they could be neither
# reconciled nor deleted after an upgrade.
STACK_NAME_PREFIX = "DefenderForCloud-"
_Name = TypeVar("_Name", str, str | None)


def _prefixed(field_label: str) -> dict[str, Any]:
    return cel(
        f"oldSelf.hasValue() || self.startsWith('{STACK_NAME_PREFIX}')",
        f"{field_label} must start with {STACK_NAME_PREFIX}, the prefix the operator's IAM policy allows stacks and "
        "StackSets under",
        optional_old_self=True,
    )


def _check_prefix(value: _Name, info: ValidationInfo) -> _Name:
    if value is not None and (info.context or {}).get("new") and not value.startswith(STACK_NAME_PREFIX):
        raise ValueError(
            f"must start with {STACK_NAME_PREFIX}, the prefix the operator's IAM policy allows stacks and StackSets "
            "under"
        )
    return value


OU_OR_ROOT_PATTERN = r"^(ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}|r-[0-9a-z]{4,32})$"
ARM_ID_PATTERN = r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/[^/]+/.+$"

Uuid = Annotated[str, StringConstraints(pattern=UUID_PATTERN)]
AccountId = Annotated[str, StringConstraints(pattern=ACCOUNT_ID_PATTERN)]
TERRAFORM_DELEGATE_MESSAGE = (
    "Terraform cannot be used with aws.organization.delegatedAdministratorAccountId: the Terraform the operator "
    "renders creates the StackSet from the management account"
)
DELEGATE_MESSAGE = "organization.delegatedAdministratorAccountId must be a member account, not the management account (accountId)"
ROLE_ACCOUNT_MESSAGE = "credentials.roleArn must be a role in accountId (in organization.delegatedAdministratorAccountId when that is set)"
RoleName = Annotated[str, StringConstraints(pattern=ROLE_NAME_PATTERN)]
# Tags: at most 50 per resource, keys of 1-128 and values of at most 256 characters, the limits both clouds share
# (AWS: "Tagging best practices", tag restrictions; Azure: "Use tags to organize your Azure resources", limits: a
# storage-compatible key length of 128, values of 256, 50 name-value pairs). The keys' limits become a CEL rule in the
# CRD (api/crd.py), so the API server refuses what the operator would.
TagMap = Annotated[
    dict[
        Annotated[str, StringConstraints(min_length=1, max_length=128)],
        Annotated[str, StringConstraints(max_length=256)],
    ],
    Field(max_length=50),
]


class SecretReference(CamelModel):
    """A Secret in the AWSConnector's own namespace (cross-namespace references are not allowed, by design)."""

    name: Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)] = Field(
        description="Name of a Secret in the same namespace as this AWSConnector."
    )


# --------------------------------------------------------------------------------------------------------------------
# Azure
# --------------------------------------------------------------------------------------------------------------------


class AzureSpec(CamelModel):
    """Where the security connector lives in Azure and how the operator signs in there."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "has(self.connectorName) == has(oldSelf.connectorName)",
                "connectorName is immutable; it cannot be added or removed after creation",
                field_path=".connectorName",
            )
        )
    )

    subscription_id: Uuid = Field(
        description="Azure subscription (GUID) that holds the connector and is billed for the Defender plans. "
        "Immutable.",
        json_schema_extra=rules(immutable("subscriptionId")),
    )
    tenant_id: Uuid = Field(
        description="Microsoft Entra tenant (GUID) of the subscription. Defender signs in to AWS with the session "
        "name MicrosoftDefenderForClouds_<tenantId>, and every IAM role's trust policy checks it."
    )
    resource_group: Annotated[str, StringConstraints(pattern=RESOURCE_GROUP_PATTERN)] = Field(
        description="Existing resource group for the connector resource (1-90 letters, digits, '_', '-', '.', '(', "
        "')'; not ending in '.'). Immutable.",
        json_schema_extra=rules(immutable("resourceGroup")),
    )
    location: Annotated[str, StringConstraints(pattern=AZURE_LOCATION_PATTERN)] = Field(
        description="Azure region that stores the connector resource, e.g. westeurope (not an AWS region)."
    )
    connector_name: Annotated[str, StringConstraints(pattern=CONNECTOR_NAME_PATTERN)] | None = Field(
        default=None,
        description="Name of the Microsoft.Security/securityConnectors resource. Defaults to metadata.name. "
        "Immutable.",
        json_schema_extra=rules(immutable("connectorName")),
    )
    credentials_secret_ref: SecretReference | None = Field(
        default=None,
        description="Secret with keys clientId and clientSecret of an Entra application allowed to manage "
        "security connectors in the subscription. Without it the operator uses its own identity (workload "
        "identity in a cluster).",
    )
    tags: TagMap = Field(default_factory=dict, description="Azure tags to put on the connector resource.")


# --------------------------------------------------------------------------------------------------------------------
# AWS
# --------------------------------------------------------------------------------------------------------------------


class AwsCredentials(CamelModel):
    """How the operator reaches the AWS account; all optional (default: the operator's own identity)."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.externalId) || has(self.roleArn)",
                "externalId needs roleArn",
                field_path=".externalId",
            )
        )
    )

    role_arn: Annotated[str, StringConstraints(pattern=ROLE_ARN_PATTERN)] | None = Field(
        default=None,
        description="IAM role in the target account for the operator to assume (sts:AssumeRole) before any call.",
    )
    external_id: (
        Annotated[str, StringConstraints(pattern=EXTERNAL_ID_PATTERN, min_length=2, max_length=1224)] | None
    ) = Field(default=None, description="sts:ExternalId to pass when assuming roleArn.")
    secret_ref: SecretReference | None = Field(
        default=None,
        description="Secret with keys accessKeyId, secretAccessKey and optionally sessionToken; used as the base "
        "credentials (and to assume roleArn when that is set too).",
    )

    @field_validator("external_id")
    @classmethod
    def _external_id_needs_role(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value and not info.data.get("role_arn"):
            raise ValueError("externalId needs roleArn")
        return value


class Organization(CamelModel):
    """Present when accountId is an AWS Organizations management account: members are onboarded by a StackSet."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "has(self.memberProviderRoleName) == has(oldSelf.memberProviderRoleName) && "
                "(!has(self.memberProviderRoleName) || self.memberProviderRoleName == oldSelf.memberProviderRoleName)",
                "memberProviderRoleName is immutable: set at creation or never (the member template then creates no "
                "provider, and CloudFormation would delete the providers it made; the providers are released "
                "through that role on delete)",
                field_path=".memberProviderRoleName",
            ),
            cel(
                "has(self.delegatedAdministratorAccountId) == has(oldSelf.delegatedAdministratorAccountId) && "
                "(!has(self.delegatedAdministratorAccountId) || "
                "self.delegatedAdministratorAccountId == oldSelf.delegatedAdministratorAccountId)",
                "delegatedAdministratorAccountId is immutable: set at creation or never (it decides which account's "
                "credentials made the StackSet and whether the management account's own stack is the operator's)",
                field_path=".delegatedAdministratorAccountId",
            ),
        )
    )

    stack_set_name: Annotated[str, StringConstraints(pattern=STACK_NAME_PATTERN)] = Field(
        default="DefenderForCloud-Members",
        description="Name of the service-managed StackSet that creates the Defender roles in member accounts. "
        "Immutable.",
        json_schema_extra=rules(immutable("stackSetName"), _prefixed("stackSetName")),
    )
    organizational_unit_ids: list[Annotated[str, StringConstraints(pattern=OU_OR_ROOT_PATTERN)]] = Field(
        default_factory=list,
        description="Organizational units (ou-...) or the root (r-...) the StackSet deploys to; empty means the "
        "organization root, i.e. every member account.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    excluded_account_ids: list[AccountId] = Field(
        default_factory=list,
        description="Member accounts (12 digits) that Defender must not onboard.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    failure_tolerance_percentage: int = Field(
        default=100,
        ge=0,
        le=100,
        description="Share of member accounts that may fail before CloudFormation stops a StackSet operation (the "
        "accounts not reached yet are then not attempted). 100: every account is attempted, and the failing ones "
        "show on status.organization.failingAccounts and the MembersReady condition.",
    )
    max_concurrent_percentage: int = Field(
        default=25,
        ge=1,
        le=100,
        description="Share of member accounts a StackSet operation deploys to at the same time.",
    )
    member_oidc_provider_exists: bool = Field(
        default=False,
        description="Set when every member account already has the Microsoft identity provider "
        "(sts.windows.net/33e01921-4d64-4f8c-a055-5bdaffd5e33d/), e.g. from Microsoft Sentinel; the member "
        "template then references it instead of creating it.",
    )
    member_provider_role_name: RoleName | None = Field(
        default=None,
        description="A role the operator assumes in each member account, from the management account's credentials, "
        "to put Defender's audiences on the Microsoft identity provider there: added to an existing one (e.g. "
        "Microsoft Sentinel's) and removed again when the account leaves or the object is deleted, or a provider "
        "created where there is none, as in the management account. For example OrganizationAccountAccessRole (AWS "
        "Organizations makes it in the accounts it creates) or AWSControlTowerExecution. The member template then "
        "never creates the provider. Unset: the member template creates it, and fails in an account that has one. "
        "Immutable: set it when the object is created.",
    )
    delegated_administrator_account_id: AccountId | None = Field(
        default=None,
        description="An account of the organization registered as CloudFormation's delegated administrator "
        "(`aws organizations register-delegated-administrator --service-principal "
        "member.org.stacksets.cloudformation.amazonaws.com`), whose credentials the operator uses instead of the "
        "management account's: the member StackSet is run from it (CallAs DELEGATED_ADMIN; the StackSet lives in "
        "the management account) and nothing is written in the management account itself, whose own roles and "
        "identity provider its administrators deploy from `defender-operator render` (docs/production.md). "
        "credentials.roleArn is then a role in this account. Immutable: set it when the object is created.",
    )

    @field_validator("organizational_unit_ids", "excluded_account_ids")
    @classmethod
    def _no_duplicates(cls, values: list[str]) -> list[str]:
        return _unique(values)

    @field_validator("stack_set_name")
    @classmethod
    def _stack_set_name_prefixed(cls, value: str, info: ValidationInfo) -> str:
        return _check_prefix(value, info)


def _defaults_in_descriptions(schema: dict[str, Any]) -> None:
    """No ``default`` in the CRD for role names: the API server would write today's default into every object that
    sets any role name, and a later release's default would then rename live roles. The operator fills unset names
    itself (recorded names first, see ``reconcile/role_names.py``); the description says the default."""
    for prop in schema.get("properties", {}).values():
        if "default" in prop:
            prop["description"] = f"{prop.get('description', '')} Default: {prop.pop('default')}.".strip()


class RoleNames(CamelModel):
    """Names for the IAM roles the operator creates, for accounts where a default name is already taken. A name
    left unset keeps the name the object's role already has (status.aws.roleNames), else today's default."""

    model_config = ConfigDict(json_schema_extra=_defaults_in_descriptions)

    cspm_monitor: RoleName = Field(default="CspmMonitorAws", description="Foundational CSPM read role.")
    agentless_scanner: RoleName = Field(
        default="DefenderForCloud-AgentlessScanner", description="Agentless VM and node scanning role."
    )
    defender_for_servers: RoleName = Field(
        default="DefenderForCloud-DefenderForServers",
        description="Defender for Servers (JIT network access) role.",
    )
    arc_auto_provisioning: RoleName = Field(
        default="DefenderForCloud-ArcAutoProvisioning",
        description="Azure Arc auto-provisioning role (SSM commands).",
    )
    # The containers roles take the portal's current names (learn.microsoft.com/azure/defender-for-cloud/
    # containers-permissions, read 2026-11-30); objects onboarded with the older DefenderForCloud-Containers-K8s*
    # names keep them.
    containers_k8s: RoleName = Field(
        alias="containersK8s",
        default="MDCContainersK8sRole",
        description="Defender for Containers EKS and audit-log role.",
    )
    data_collection: RoleName = Field(
        default="MDCContainersK8sDataCollectionRole",
        description="Defender for Containers data-collection role.",
    )
    cloud_watch_to_kinesis: RoleName = Field(
        default="MDCContainersK8sCloudWatchToKinesisRole",
        description="Role CloudWatch Logs uses to write EKS audit logs to Kinesis Data Firehose.",
    )
    kinesis_to_s3: RoleName = Field(
        default="MDCContainersK8sKinesisToS3Role",
        description="Role Kinesis Data Firehose uses to write EKS audit logs to S3.",
    )
    k8s_agentless_discovery: RoleName = Field(
        alias="k8sAgentlessDiscovery",
        default="MDCContainersAgentlessDiscoveryK8sRole",
        description="Agentless Kubernetes discovery role.",
    )
    image_assessment: RoleName = Field(
        default="MDCContainersImageAssessmentRole", description="Container registry image assessment role."
    )
    sensitive_data_discovery: RoleName = Field(
        default="SensitiveDataDiscovery", description="Sensitive data discovery (S3) role."
    )
    databases_dspm: RoleName = Field(
        default="DefenderForCloud-DataSecurityPostureDB",
        description="Data security posture for databases role.",
    )
    databases_threat_protection: RoleName = Field(
        default="DefenderForCloud-DataThreatProtectionDB",
        description="Threat protection for open-source RDS databases role (Defender for Databases, RDS).",
    )
    ciem_oidc: RoleName = Field(
        default="DefenderForCloud-OidcCiem", description="CIEM role federated with your tenant."
    )
    ciem_discovery: RoleName = Field(default="DefenderForCloud-Ciem", description="CIEM discovery role.")
    ssm_automation: RoleName = Field(
        default="DefenderForCloud-SSMAutomation",
        description="Systems Manager automation role that prepares EC2 instances for Azure Arc.",
    )

    def explicit(self) -> dict[str, str]:
        """The names the object's spec sets (by JSON key), as opposed to defaults filled in."""
        names: dict[str, str] = self.model_dump(by_alias=True, include=self.model_fields_set)
        return names


# Roles whose names the catalog's policies contain (iam:PassRole, trust between roles). With rolePolicies Managed the
# account's setup stack wrote those policies with the default names, so these roles must keep them (a unit test keeps
# this list equal to the catalog's).
ROLES_NAMED_IN_POLICIES = ("ssmAutomation", "cloudWatchToKinesis", "kinesisToS3", "ciemDiscovery")
_DEFAULT_ROLE_NAMES = {(field.alias or name): field.default for name, field in RoleNames.model_fields.items()}


def _managed_keeps_default_names() -> dict[str, Any]:
    kept = " && ".join(
        f"(!has(self.roleNames.{key}) || self.roleNames.{key} == '{_DEFAULT_ROLE_NAMES[key]}')"
        for key in ROLES_NAMED_IN_POLICIES
    )
    return cel(
        f"!has(self.rolePolicies) || self.rolePolicies != 'Managed' || !has(self.roleNames) || ({kept})",
        "rolePolicies Managed needs the default names of the roles its policies name: "
        + ", ".join(f"roleNames.{key}" for key in ROLES_NAMED_IN_POLICIES),
        field_path=".roleNames",
    )


def _error_at(loc: tuple[str, ...], message: str, value: Any) -> ValidationError:
    """An error of a rule across fields, located at the field it names (as the CRD's CEL rule's fieldPath is)."""
    detail = InitErrorDetails(type=PydanticCustomError("value_error", message), loc=loc, input=value)
    return ValidationError.from_exception_data("AwsSpec", [detail])


class AwsSpec(CamelModel):
    """The AWS account to onboard."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.credentials) || !has(self.credentials.roleArn) || "
                "self.credentials.roleArn.split(':')[4] == (has(self.organization) && "
                "has(self.organization.delegatedAdministratorAccountId) ? "
                "self.organization.delegatedAdministratorAccountId : self.accountId)",
                ROLE_ACCOUNT_MESSAGE,
                field_path=".credentials.roleArn",
            ),
            cel(
                "!has(self.organization) || !has(self.organization.delegatedAdministratorAccountId) || "
                "self.organization.delegatedAdministratorAccountId != self.accountId",
                DELEGATE_MESSAGE,
                field_path=".organization.delegatedAdministratorAccountId",
            ),
            cel(
                "has(self.organization) == has(oldSelf.organization)",
                "organization cannot be added or removed after creation; create a new AWSConnector instead",
                field_path=".organization",
            ),
            _managed_keeps_default_names(),
        )
    )

    account_id: AccountId = Field(
        description="The 12-digit AWS account id (quoted in YAML). For an organization, the management account. "
        "Immutable.",
        json_schema_extra=rules(immutable("accountId")),
    )
    regions: list[AwsRegion] = Field(
        default_factory=list,
        description="AWS regions Defender scans; regions left out receive no API calls. Empty means all regions.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    credentials: AwsCredentials | None = Field(
        default=None,
        description="How the operator reaches the account. Default: the operator's own identity.",
    )
    organization: Organization | None = Field(
        default=None,
        description="Present when accountId is an AWS Organizations management account; members are then onboarded "
        "through a service-managed StackSet and Defender creates their connectors (up to 24 hours later).",
    )
    role_names: RoleNames = Field(
        default_factory=RoleNames,
        description="Override IAM role names, e.g. where a default name is already taken.",
    )
    role_policies: Literal["Inline", "Managed"] = Field(
        default="Inline",
        description="Inline: each role carries its own policies, as Microsoft's template does. Managed: roles attach "
        "the customer managed policies under /defender-for-cloud/ that the account's setup stack holds "
        "(docs/production.md), so the operator's identity needs no iam:PutRolePolicy and cannot grant more than "
        "Defender's roles have.",
    )

    eks_access_entries: Literal["Report", "Manage"] = Field(
        default="Report",
        description="With agentless Kubernetes discovery on: Report shows on status.eks, per EKS cluster in the "
        "regions, whether Defender's discovery role can reach it and the fix where it cannot; Manage also creates "
        "the role's access entry (AmazonEKSClusterAdminPolicy, cluster scope, as Microsoft's own script grants) in "
        "clusters that take access entries, and removes only the entries it created (docs/aws-permissions.md).",
    )

    @field_validator("regions")
    @classmethod
    def _no_duplicates(cls, values: list[AwsRegion]) -> list[AwsRegion]:
        return _unique(values)

    @model_validator(mode="after")
    def _managed_policies_name_default_roles(self) -> "AwsSpec":
        if self.role_policies == "Managed":
            names = self.role_names.model_dump(by_alias=True)
            renamed = [k for k in ROLES_NAMED_IN_POLICIES if names[k] != _DEFAULT_ROLE_NAMES[k]]
            if renamed:
                raise ValueError(
                    "rolePolicies Managed needs the default names of the roles its policies name: "
                    + ", ".join(f"roleNames.{key}" for key in renamed)
                )
        return self

    @model_validator(mode="after")
    def _signed_in_where_it_acts(self) -> "AwsSpec":
        if (
            self.credentials
            and self.credentials.role_arn
            and self.credentials.role_arn.split(":")[4] != self.signer
        ):
            raise _error_at(("credentials", "roleArn"), ROLE_ACCOUNT_MESSAGE, self.credentials.role_arn)
        if self.delegated_administrator == self.account_id:
            raise _error_at(
                ("organization", "delegatedAdministratorAccountId"), DELEGATE_MESSAGE, self.account_id
            )
        return self

    @property
    def delegated_administrator(self) -> str | None:
        """The delegated administrator account the operator signs in to, for an organization that names one."""
        return self.organization.delegated_administrator_account_id if self.organization else None

    @property
    def signer(self) -> str:
        """The account whose credentials the operator uses: the delegated administrator's, else accountId."""
        return self.delegated_administrator or self.account_id


# --------------------------------------------------------------------------------------------------------------------
# Plans
# --------------------------------------------------------------------------------------------------------------------


class Feature(CamelModel):
    """A switch of a plan, on by default as in the portal."""

    enabled: bool = Field(default=True, description="Whether this capability is on.")


class ScanningFeature(CamelModel):
    """Agentless scanning of disks through snapshots."""

    enabled: bool = Field(default=True, description="Whether agentless scanning is on.")
    exclusion_tags: TagMap = Field(
        default_factory=dict,
        description="EC2 tags (key: value) that exclude a machine from agentless scanning.",
    )


class ArcAutoProvisioning(CamelModel):
    """Azure Arc auto-provisioning on EC2 through Systems Manager."""

    enabled: bool = Field(
        default=True, description="Install the Azure Arc agent on EC2 instances automatically."
    )
    proxy: Annotated[str, StringConstraints(pattern=r"^https?://[^\s]+$")] | None = Field(
        default=None, description="HTTP(S) proxy URL the Arc agent uses, e.g. http://proxy.internal:3128."
    )
    private_link_scope: Annotated[str, StringConstraints(pattern=ARM_ID_PATTERN)] | None = Field(
        default=None, description="Resource id of an Azure Arc private link scope for the agent's traffic."
    )


class Ciem(CamelModel):
    """Cloud infrastructure entitlement management (permissions analysis) in Defender CSPM."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!has(self.enabled) || !self.enabled || has(self.oidcSubject)",
                "oidcSubject is required when CIEM is enabled",
                field_path=".oidcSubject",
            )
        )
    )

    enabled: bool = Field(
        default=False,
        description="Turn on CIEM. Off by default because it federates AWS with your own Entra tenant and needs "
        "an Entra application (Application Administrator rights).",
    )
    entra_app_name: Annotated[str, StringConstraints(min_length=1, max_length=120)] = Field(
        default="mciem-aws-oidc-connector", description="Name of the Entra application CIEM signs in with."
    )
    oidc_subject: Uuid | None = Field(
        default=None,
        description="Object id of that application's service principal: the token subject the OidcCiem role trusts.",
        validate_default=True,
    )

    @field_validator("oidc_subject")
    @classmethod
    def _subject(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("enabled") and not value:
            raise ValueError("oidcSubject is required when CIEM is enabled")
        return value


class DefenderCspmPlan(CamelModel):
    """Defender CSPM (paid). Foundational CSPM is always on and needs no field."""

    enabled: bool = Field(
        default=False, description="Turn on Defender CSPM (billed per EC2 instance, S3 bucket, RDS)."
    )
    agentless_vm_scanning: ScanningFeature = Field(
        default_factory=ScanningFeature,
        description="Agentless scanning of EC2 disks for vulnerabilities and secrets.",
    )
    sensitive_data_discovery: Feature = Field(
        default_factory=Feature, description="Sensitive data discovery in S3 buckets."
    )
    databases_dspm: Feature = Field(
        default_factory=Feature, description="Data security posture for RDS databases."
    )
    ciem: Ciem = Field(default_factory=Ciem, description="Permissions management (CIEM).")
    container_image_assessment: Feature = Field(
        default_factory=Feature, description="Vulnerability assessment of images in ECR (registry access)."
    )
    kubernetes_discovery: Feature = Field(
        default_factory=Feature, description="Agentless discovery of EKS clusters (Kubernetes API access)."
    )


class VulnerabilityAssessment(CamelModel):
    """Vulnerability assessment for EC2 machines."""

    enabled: bool = Field(
        default=True, description="Provision a vulnerability assessment solution automatically."
    )
    provider: Literal["TVM", "Qualys"] = Field(
        default="TVM", description="TVM (Microsoft Defender Vulnerability Management) or Qualys."
    )


class ServerScanning(CamelModel):
    """Agentless machine scanning in Defender for Servers (a Plan 2 capability)."""

    enabled: bool | None = Field(
        default=None,
        description="Agentless machine scanning. Unset means on with subPlan P2 and off with P1; true needs P2.",
    )
    exclusion_tags: TagMap = Field(
        default_factory=dict,
        description="EC2 tags (key: value) that exclude a machine from agentless scanning.",
    )


class ServersPlan(CamelModel):
    """Defender for Servers on EC2."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!(has(self.subPlan) && self.subPlan == 'P1' && has(self.agentlessScanning) && "
                "has(self.agentlessScanning.enabled) && "
                "self.agentlessScanning.enabled)",
                "agentless scanning needs subPlan P2",
                field_path=".agentlessScanning.enabled",
            )
        )
    )

    enabled: bool = Field(default=True, description="Turn on Defender for Servers.")
    sub_plan: Literal["P1", "P2"] = Field(
        default="P2", description="Plan 1 or Plan 2 (the portal's default)."
    )
    arc_auto_provisioning: ArcAutoProvisioning = Field(
        default_factory=ArcAutoProvisioning,
        description="Azure Arc auto-provisioning (needs SSM Agent on EC2).",
    )
    defender_for_endpoint: Feature = Field(
        default_factory=Feature, description="Provision Microsoft Defender for Endpoint automatically."
    )
    vulnerability_assessment: VulnerabilityAssessment = Field(
        default_factory=VulnerabilityAssessment, description="Vulnerability assessment for machines."
    )
    agentless_scanning: ServerScanning = Field(
        default_factory=ServerScanning, description="Agentless machine scanning (Plan 2)."
    )

    @field_validator("agentless_scanning")
    @classmethod
    def _p2(cls, value: "ServerScanning", info: ValidationInfo) -> "ServerScanning":
        if info.data.get("sub_plan") == "P1" and value.enabled:
            raise ValueError("agentless scanning needs subPlan P2")
        return value

    @property
    def agentless_scanning_on(self) -> bool:
        explicit = self.agentless_scanning.enabled
        return self.sub_plan == "P2" if explicit is None else explicit


class AuditLogs(CamelModel):
    """Collection of EKS control-plane audit logs (agentless threat protection)."""

    enabled: bool = Field(
        default=True, description="Collect EKS audit logs through CloudWatch, Firehose and S3."
    )
    retention_days: int = Field(
        default=30, ge=1, le=3653, description="Days the audit logs are kept in CloudWatch Logs (1-3653)."
    )


class ContainersPlan(CamelModel):
    """Defender for Containers on EKS."""

    enabled: bool = Field(default=True, description="Turn on Defender for Containers.")
    audit_logs: AuditLogs = Field(default_factory=AuditLogs, description="EKS audit-log collection.")
    defender_sensor: Feature = Field(
        default_factory=Feature, description="Auto-provision Defender's sensor on Arc-enabled EKS clusters."
    )
    policy_agent: Feature = Field(
        default_factory=Feature, description="Auto-provision Azure Policy for Kubernetes."
    )
    image_assessment: Feature = Field(
        default_factory=Feature, description="Vulnerability assessment of images in ECR (registry access)."
    )
    kubernetes_discovery: Feature = Field(
        default_factory=Feature, description="Agentless discovery of EKS clusters (Kubernetes API access)."
    )
    node_scanning: ScanningFeature = Field(
        default_factory=ScanningFeature, description="Agentless scanning of EKS nodes."
    )
    data_collection_external_id: (
        Annotated[str, StringConstraints(pattern=EXTERNAL_ID_PATTERN, min_length=2, max_length=1224)] | None
    ) = Field(
        default=None,
        description="sts:ExternalId on the data-collection role. Default: a stable id derived from the tenant and "
        "account, unique per onboarding.",
    )


class DatabasesPlan(CamelModel):
    """Defender for Databases: SQL servers on EC2 (through Arc) and open-source RDS."""

    enabled: bool = Field(default=True, description="Turn on Defender for Databases.")
    arc_auto_provisioning: ArcAutoProvisioning = Field(
        default_factory=ArcAutoProvisioning, description="Azure Arc auto-provisioning for SQL servers on EC2."
    )
    rds: Feature = Field(
        default_factory=Feature, description="Threat protection for open-source RDS databases."
    )
    dspm: Feature = Field(default_factory=Feature, description="Data security posture for databases.")


class Plans(CamelModel):
    """Defender plans. Foundational CSPM (free) is always on; the others follow the portal's defaults."""

    cspm: DefenderCspmPlan = Field(
        default_factory=DefenderCspmPlan, description="Defender CSPM (paid, off by default)."
    )
    servers: ServersPlan = Field(
        default_factory=ServersPlan, description="Defender for Servers (on by default)."
    )
    containers: ContainersPlan = Field(
        default_factory=ContainersPlan, description="Defender for Containers (on by default)."
    )
    databases: DatabasesPlan = Field(
        default_factory=DatabasesPlan, description="Defender for Databases (on by default)."
    )


class Deployment(CamelModel):
    """How the AWS side is deployed."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "has(self.stackName) == has(oldSelf.stackName)",
                "stackName is immutable; it cannot be added or removed after creation",
                field_path=".stackName",
            )
        )
    )

    method: Literal["CloudFormation", "Terraform"] = Field(
        default="CloudFormation",
        description="CloudFormation: the operator deploys and maintains a stack (and StackSet). Terraform: you apply "
        "the Terraform that `defender-operator render` prints; the operator waits for the roles, then connects. "
        "Immutable.",
        json_schema_extra=rules(immutable("method")),
    )
    stack_name: Annotated[str, StringConstraints(pattern=STACK_NAME_PATTERN)] | None = Field(
        default=None,
        description="CloudFormation stack name, under DefenderForCloud- (the prefix the operator's IAM policy "
        "allows). Default: DefenderForCloud-<accountId>. Immutable.",
        json_schema_extra=rules(immutable("stackName"), _prefixed("stackName")),
    )
    region: AwsRegion = Field(
        default="us-east-1",
        description="Region of the stack (IAM is global) and of the Systems Manager automation for Arc. Immutable.",
        json_schema_extra=rules(immutable("region")),
    )

    @field_validator("stack_name")
    @classmethod
    def _stack_name_prefixed(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _check_prefix(value, info)


class AWSConnectorSpec(CamelModel):
    """Desired state of one AWS account (or AWS Organization) onboarded to Microsoft Defender for Cloud."""

    model_config = ConfigDict(
        json_schema_extra=rules(
            cel(
                "!(has(self.aws.organization) && has(self.aws.organization.memberProviderRoleName) && "
                "has(self.deployment) && has(self.deployment.method) && self.deployment.method == 'Terraform')",
                "Terraform cannot be used with aws.organization.memberProviderRoleName: with Terraform the "
                "operator writes nothing to AWS",
                field_path=".deployment.method",
            ),
            cel(
                "!(has(self.aws.organization) && has(self.aws.organization.delegatedAdministratorAccountId) && "
                "has(self.deployment) && has(self.deployment.method) && self.deployment.method == 'Terraform')",
                TERRAFORM_DELEGATE_MESSAGE,
                field_path=".deployment.method",
            ),
        )
    )

    azure: AzureSpec = Field(description="Azure side: subscription, resource group, connector name, sign-in.")
    aws: AwsSpec = Field(description="AWS side: account, regions, credentials, organization.")
    scan_interval_hours: Literal[4, 6, 12, 24] = Field(
        default=4,
        description="How often Defender scans the account, in hours: 4, 6, 12 or 24 (portal default 4).",
    )
    plans: Plans = Field(default_factory=Plans, description="Defender plans and their settings.")
    access: Literal["Default", "LeastPrivilege"] = Field(
        default="Default",
        description="Default grants what current and planned capabilities need (e.g. ReadOnlyAccess); "
        "LeastPrivilege grants only what today's capabilities use.",
    )
    deployment: Deployment = Field(default_factory=Deployment, description="How the AWS side is deployed.")
    deletion_policy: Literal["Delete", "Orphan"] = Field(
        default="Delete",
        description="Delete removes the connector, the stack and what the operator created on deletion; Orphan "
        "leaves both clouds as they are.",
    )

    @field_validator("deployment")
    @classmethod
    def _member_providers_need_cloudformation(cls, value: Deployment, info: ValidationInfo) -> Deployment:
        aws = info.data.get("aws")
        org = aws.organization if aws is not None else None
        if org is not None and org.member_provider_role_name and value.method == "Terraform":
            raise ValueError(
                "Terraform cannot be used with aws.organization.memberProviderRoleName: with Terraform the "
                "operator writes nothing to AWS"
            )
        if org is not None and org.delegated_administrator_account_id and value.method == "Terraform":
            raise ValueError(TERRAFORM_DELEGATE_MESSAGE)
        return value

    @property
    def stack_name(self) -> str:
        return self.deployment.stack_name or f"DefenderForCloud-{self.aws.account_id}"


def _unique(values: list[_S]) -> list[_S]:
    """Lists are sets in the CRD (x-kubernetes-list-type: set); say so here too."""
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate value: {value}")
        seen.add(value)
    return values
