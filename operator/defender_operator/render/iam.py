"""The IAM roles one spec needs, as target-neutral documents (trust, inline and managed policies).

CloudFormation and Terraform render the same documents; only the syntax for account-level values differs, so those
stay as placeholders here (see :mod:`.placeholders`).
"""

from dataclasses import dataclass
from typing import Any

from ..api.spec import AWSConnectorSpec
from .catalog import MANAGED_POLICY_PATH, catalog, required_roles, role_name
from .placeholders import literals, substitute

# Placeholders only the deploying account can resolve; renderers map each to their own syntax.
DEFERRED = ("partition", "account", "dnsSuffix", "oidcProvider", "ciemOidcProvider")
POLICY_VERSION = "2012-10-17"
MANAGED_BY_TAG = {"Key": "managed-by", "Value": "defender-operator"}


@dataclass(frozen=True)
class RoleDocument:
    key: str
    name: str
    description: str
    trust: dict[str, Any]
    inline_policies: dict[str, dict[str, Any]]
    managed_policy_arns: list[str]

    @property
    def logical_id(self) -> str:
        """CloudFormation logical id / Terraform resource name stem: cspmMonitor -> CspmMonitorRole."""
        return self.key[0].upper() + self.key[1:] + "Role"


def _document(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": statements}


# Roles a member account of an organization does without: the management account's CIEM OIDC role reaches every
# member's CIEM discovery role (docs/design-decisions.md, "CIEM across an organization").
MANAGEMENT_ONLY = ("ciemOidc",)


def role_documents(spec: AWSConnectorSpec, member: bool = False) -> list[RoleDocument]:
    """The roles of the onboarded (or management) account; with ``member``, of a member account of the
    organization, whose CIEM discovery role trusts the management account's CIEM OIDC role."""
    known = literals(spec)
    keep = {name: "{" + name + "}" for name in DEFERRED}

    def fill(value: Any, also_known: dict[str, str] | None = None) -> Any:
        return substitute(value, {**known, **(also_known or {})}, keep, lambda s: s)

    managed = spec.aws.role_policies == "Managed"
    roles = []
    for key in required_roles(spec):
        if member and key in MANAGEMENT_ONLY:
            continue
        template = catalog().roles[key]
        policies = template.inline_policies(spec.access)
        # A member's CIEM role trusts the management account's OIDC role: {account} is the management account.
        trust_known = {"account": spec.aws.account_id} if member and key == "ciemDiscovery" else None
        roles.append(
            RoleDocument(
                key=key,
                name=role_name(spec, key),
                description=f"Microsoft Defender for Cloud - {template.description}",
                trust=_document(fill(template.trust, trust_known)),
                inline_policies={}
                if managed
                else {fill(p.name): _document(fill(p.statements)) for p in policies},
                managed_policy_arns=[
                    "arn:{partition}:iam::aws:policy/" + name
                    for name in template.managed_policy_names(spec.access)
                ]
                + [
                    "arn:{partition}:iam::{account}:policy" + MANAGED_POLICY_PATH + p.managed_name
                    for p in (policies if managed else [])
                ],
            )
        )
    return roles
