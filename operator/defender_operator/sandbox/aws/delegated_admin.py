"""StackSets called by a delegated administrator (``CallAs``), which moto ignores.

AWS, as the emulator now behaves:

- An account of the organization is registered as CloudFormation's delegated administrator by the management account
  (``organizations register-delegated-administrator --service-principal
  member.org.stacksets.cloudformation.amazonaws.com``: CloudFormation User Guide, "Register a delegated
  administrator", stacksets-orgs-delegated-admin.html); moto refuses that service principal.
- Its StackSet calls pass ``CallAs: DELEGATED_ADMIN``, and "StackSets with service-managed permissions are created in
  the management account, including StackSets that are created by delegated administrators" (API_CreateStackSet.html,
  ``CallAs``): the emulator serves such a call from the management account's CloudFormation. An account that is not
  registered, or whose caller may not ``organizations:ListDelegatedAdministrators`` (CloudFormation reads it with the
  caller's permissions), gets ``ValidationError: Account used is not a delegated administrator``
  (hashicorp/terraform-provider-aws#37069 quotes AWS's answer).
- A delegated administrator (of any service) may read the organization: "This operation can be called only from
  the organization's management account or by a member account that is a delegated administrator"
  (AWS Organizations API Reference, DescribeAccount, ListAccountsForParent, ListOrganizationalUnitsForParent,
  ListRoots); moto
  answers a member's ListRoots from the management account but its OUs' listings from the member's own, empty,
  organization.
- A call without it (``SELF``) acts on the caller's own account: a service-managed StackSet created there by any
  account but the management account fails with "You must be the management account or delegated admin account of
  an organization before operating a SERVICE_MANAGED stack set" (the error AWS returns, quoted in
  aws-cloudformation/cloudformation-coverage-roadmap#799), and a delegated administrator's StackSets are not found.
"""

from moto.cloudformation.exceptions import ValidationError
from moto.cloudformation.models import CloudFormationBackend, cloudformation_backends
from moto.cloudformation.responses import CloudFormationResponse
from moto.organizations.models import FakeDelegatedAdministrator, OrganizationsBackend, organizations_backends
from moto.organizations.responses import OrganizationsResponse

from . import authorization

SERVICE_PRINCIPAL = "member.org.stacksets.cloudformation.amazonaws.com"
NOT_DELEGATED = "Account used is not a delegated administrator"
NOT_MANAGEMENT = (
    "You must be the management account or delegated admin account of an organization before operating a "
    "SERVICE_MANAGED stack set"
)

_original_backend = CloudFormationResponse.cloudformation_backend
_original_organizations = OrganizationsResponse.organizations_backend
# Organizations reads a delegated administrator may make (and the operator does).
DELEGATED_READS = frozenset(
    {
        "DescribeAccount",
        "DescribeOrganization",
        "ListRoots",
        "ListAccountsForParent",
        "ListOrganizationalUnitsForParent",
        "ListParents",
    }
)


def _is_management(account: str) -> bool:
    org = getattr(organizations_backends[account]["aws"], "org", None)
    return org is not None and org.master_account_id == account


def _management_for(account: str) -> str:
    """The management account whose StackSets ``account`` may run as delegated administrator (or the refusal)."""
    found = organizations_backends.master_accounts.get(account)
    if found is None:
        raise ValidationError(message=NOT_DELEGATED)
    management, partition = found
    admins = organizations_backends[management][partition].admins
    if not any(a.account.id == account and SERVICE_PRINCIPAL in a.services for a in admins):
        raise ValidationError(message=NOT_DELEGATED)
    principal = authorization.current()
    if principal is None or principal.account not in authorization.Settings.accounts:
        return management
    if not authorization.allows(principal, "organizations:ListDelegatedAdministrators", "*"):
        raise ValidationError(message=NOT_DELEGATED)
    return management


def _backend(self: CloudFormationResponse) -> CloudFormationBackend:
    action = self._get_action()
    if "StackSet" not in action and "StackInstance" not in action:
        backend: CloudFormationBackend = _original_backend.fget(self)  # type: ignore[attr-defined]
        return backend
    account = self.current_account
    if self._get_param("CallAs") == "DELEGATED_ADMIN":
        account = _management_for(account)
    elif (
        action == "CreateStackSet"
        and self._get_param("PermissionModel") == "SERVICE_MANAGED"
        and not _is_management(account)
    ):
        raise ValidationError(message=NOT_MANAGEMENT)
    return cloudformation_backends[account][self.region]


def _organizations(self: OrganizationsResponse) -> OrganizationsBackend:
    found = organizations_backends.master_accounts.get(self.current_account)
    if found is not None and self._get_action() in DELEGATED_READS:
        management = organizations_backends[found[0]][found[1]]
        if any(a.account.id == self.current_account and a.services for a in management.admins):
            return management
    backend: OrganizationsBackend = _original_organizations.fget(self)  # type: ignore[attr-defined]
    return backend


def apply() -> None:
    if SERVICE_PRINCIPAL not in FakeDelegatedAdministrator.SUPPORTED_SERVICES:
        FakeDelegatedAdministrator.SUPPORTED_SERVICES.append(SERVICE_PRINCIPAL)
    CloudFormationResponse.cloudformation_backend = property(_backend)  # type: ignore[method-assign,assignment]
    OrganizationsResponse.organizations_backend = property(_organizations)  # type: ignore[method-assign,assignment]
