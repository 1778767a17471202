"""Prerequisites Microsoft lists for the plans a spec enables that live outside what the operator writes: the
matching Defender plan switched on in the Azure subscription (``Microsoft.Security/pricings``), and, where Arc
auto-provisioning is on, EC2 instances that Systems Manager manages (``aws/managed_nodes.py``); with CIEM, its Entra
application in the customer's tenant (``azure/graph.py``).

Without them the connector and the roles are in place and Defender still protects nothing of that plan, so an
object would look Ready and not be. The check is read-only and says what is missing and how to fix it; it never
turns a plan on (that is billed, a subscription owner's decision) and never holds Ready back.

Source: Microsoft Learn, "Prerequisites for Defender for Cloud plans on AWS" (defender-for-cloud/aws-plan-prerequisites,
page dated 2025-11-11, read 2026-12-04): Servers needs "Microsoft Defender for Servers enabled on your subscription";
Containers, "Microsoft Defender for Containers enabled on your subscription"; SQL on EC2 and RDS Custom needs the
Defender for SQL plan and Defender for Servers (its Arc pipeline); RDS open-source engines need "the Microsoft Defender
for open-source relational databases plan enabled on your subscription". docs/prerequisites.md keeps the table.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from ..api.spec import AWSConnectorSpec
from ..aws.managed_nodes import RegionNodes
from ..azure.graph import ServicePrincipal
from ..render.catalog import catalog
from .conditions import Verdict

NODES_SHOWN = 10  # unmanaged instances named in the message, whatever their number


@dataclass(frozen=True)
class Pricing:
    name: str  # the pricing's name in Microsoft.Security/pricings
    plan: str  # what the portal calls the plan
    needed_by: str  # the spec's plan that needs it


def needed(spec: AWSConnectorSpec) -> list[Pricing]:
    """The subscription's Defender plans the spec's AWS plans rely on, in a stable order."""
    plans = spec.plans
    out: list[Pricing] = []
    if plans.servers.enabled:
        out.append(Pricing("VirtualMachines", "Defender for Servers", "plans.servers"))
    if plans.containers.enabled:
        out.append(Pricing("Containers", "Defender for Containers", "plans.containers"))
    if plans.databases.enabled:
        if not plans.servers.enabled:
            out.append(
                Pricing("VirtualMachines", "Defender for Servers", "plans.databases (SQL Server on EC2)")
            )
        out.append(
            Pricing("SqlServerVirtualMachines", "Defender for SQL servers on machines", "plans.databases")
        )
        if plans.databases.rds.enabled:
            out.append(
                Pricing(
                    "OpenSourceRelationalDatabases",
                    "Defender for open-source relational databases",
                    "plans.databases.rds",
                )
            )
    return out


def verdict(spec: AWSConnectorSpec, tiers: dict[str, str]) -> Verdict:
    """The Prerequisites condition from the subscription's pricing tiers (plan name -> Free | Standard)."""
    subscription = spec.azure.subscription_id
    wanted = needed(spec)
    if not wanted:
        return Verdict(
            "True", "NothingRequired", "the enabled plans need no Defender plan on the subscription"
        )
    on = {name.lower() for name, tier in tiers.items() if tier.lower() == "standard"}
    missing = [p for p in wanted if p.name.lower() not in on]
    if not missing:
        names = ", ".join(p.name for p in wanted)
        return Verdict(
            "True",
            "Met",
            f"the Defender plans the spec relies on are on in subscription {subscription}: {names}",
        )
    parts = [f"{p.plan} ({p.name}, for {p.needed_by})" for p in missing]
    fixes = "; ".join(
        f"az security pricing create -n {p.name} --tier standard --subscription {subscription}"
        for p in missing
    )
    return Verdict(
        "False",
        "DefenderPlanOff",
        f"off in subscription {subscription}: {', '.join(parts)}. AWS resources of these plans are not protected "
        f"until a subscription owner turns them on (billed): {fixes}",
    )


def unreadable(reason: str) -> Verdict:
    """Azure refused to read the subscription's plans (``reason``: the operator's error reason, AzureAccessDenied
    when its role is assigned on resource groups only)."""
    return Verdict(
        "Unknown",
        "PricingsUnreadable",
        f"the subscription's Defender plans could not be read ({reason}). To see this check, give the Azure identity "
        "this object uses Microsoft.Security/pricings/read on the subscription (the built-in Security Reader role "
        "has it); onboarding does not depend on it",
    )


def arc_on(spec: AWSConnectorSpec) -> bool:
    """Whether Defender installs the Arc agent on the account's EC2 instances (Servers, or SQL on EC2)."""
    servers, databases = spec.plans.servers, spec.plans.databases
    return (servers.enabled and servers.arc_auto_provisioning.enabled) or (
        databases.enabled and databases.arc_auto_provisioning.enabled
    )


def nodes_verdict(found: list[RegionNodes], unreadable: Sequence[str] = ()) -> Verdict:
    """Whether Systems Manager manages every running EC2 instance of the regions (``aws/managed_nodes.py``);
    ``unreadable``: regions whose instances could not be read."""
    running = sum(r.running for r in found)
    unmanaged = [f"{instance} ({r.region})" for r in found for instance in r.unmanaged]
    unread = f" (regions not read: {', '.join(unreadable)})" if unreadable else ""
    if unmanaged:
        shown = ", ".join(unmanaged[:NODES_SHOWN]) + (", ..." if len(unmanaged) > NODES_SHOWN else "")
        return Verdict(
            "False",
            "InstancesNotManaged",
            f"{len(unmanaged)} of {running} running EC2 instances are not managed by Systems Manager{unread}, so "
            f"Arc auto-provisioning cannot install the Azure Arc agent on them: {shown}. Each needs the SSM Agent "
            "running and permission to register: the stack's host-management association attaches a profile with "
            "AmazonSSMManagedInstanceCore to instances that have none; attach that policy to the role of an "
            "instance's own profile, or turn on Default Host Management Configuration in its region "
            "(docs/prerequisites.md)",
        )
    if unreadable:
        return Verdict(
            "Unknown",
            "InstancesUnreadable",
            f"the EC2 instances of {', '.join(unreadable)} could not be read; read again on the next deep pass",
        )
    managed = f"Systems Manager manages all {running} running EC2 instances" if running else ""
    return Verdict("True", "InstancesManaged", managed or "no EC2 instance runs in the regions")


def nodes_unreadable(reason: str) -> Verdict:
    """The instances could not be read (``reason``: the operator's error reason); read again on the next deep pass."""
    fix = (
        "the operator's identity needs ec2:DescribeInstances and ssm:DescribeInstanceInformation "
        "(docs/operator-iam-policy.json)"
        if reason == "AWSAccessDenied"
        else "read again on the next deep pass"
    )
    return Verdict(
        "Unknown",
        "InstancesUnreadable",
        f"the EC2 instances Systems Manager manages could not be read ({reason}): {fix}",
    )


def ciem_on(spec: AWSConnectorSpec) -> bool:
    cspm = spec.plans.cspm
    return cspm.enabled and cspm.ciem.enabled and cspm.ciem.oidc_subject is not None


def ciem_verdict(spec: AWSConnectorSpec, found: ServicePrincipal | None) -> Verdict:
    """Whether the service principal ``oidcSubject`` names is CIEM's application: its name, and the identifier URI
    the CIEM identity provider takes as audience (the catalog's). Another application's name is not repeated: the
    message is for whoever reads the object, and the directory is not theirs to browse."""
    ciem, tenant, audience = spec.plans.cspm.ciem, spec.azure.tenant_id, catalog().ciem_audience
    fix = (
        f"create the Entra application {ciem.entra_app_name} in tenant {tenant} with identifier URI {audience} "
        "(an Application Administrator or Cloud Application Administrator can), and set "
        "spec.plans.cspm.ciem.oidcSubject to the object id of its service principal"
    )
    if found is None:
        return Verdict(
            "False",
            "CiemApplicationMissing",
            f"no service principal {ciem.oidc_subject} in Entra tenant {tenant}: the OidcCiem role trusts no one "
            f"who can sign in, so CIEM sees nothing. To fix it, {fix}",
        )
    problems = []
    if found.display_name != ciem.entra_app_name:
        problems.append(f"it is another application than {ciem.entra_app_name} (entraAppName)")
    if audience not in found.names:
        problems.append(
            f"its application has no identifier URI {audience}, the audience CIEM's provider accepts"
        )
    if problems:
        return Verdict(
            "False",
            "CiemApplicationMismatch",
            f"service principal {ciem.oidc_subject}: {'; '.join(problems)}. To fix it, {fix}",
        )
    return Verdict(
        "True",
        "CiemApplicationFound",
        f"CIEM's Entra application {ciem.entra_app_name} is in tenant {tenant}",
    )


def ciem_unreadable(reason: str) -> Verdict:
    fixes = {
        "GraphAccessDenied": "give the operator's Azure identity the Microsoft Graph application permission "
        "Application.Read.All (admin consent) to see this check",
        "GraphOtherTenant": "the identity signs in to another tenant than spec.azure.tenantId, whose directory "
        "Graph would read instead; the check is made only with an identity of the object's own tenant",
    }
    fix = fixes.get(reason, "read again on the next deep pass")
    return Verdict(
        "Unknown",
        "CiemApplicationUnreadable",
        f"CIEM's Entra application could not be read ({reason}): {fix}",
    )


def combined(*verdicts: Verdict) -> Verdict:
    """One Prerequisites condition from several checks: False when one is, else Unknown when one is, else True;
    the reason of the first such check, the messages of all of them."""
    for status in ("False", "Unknown", "True"):
        hit = [v for v in verdicts if v.status == status]
        if hit:
            return Verdict(status, hit[0].reason, "; ".join(v.message for v in hit))
    raise ValueError("no verdict")
