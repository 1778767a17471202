"""Adapters for one object's clouds, signed in with its credentials, and checked to be the account it names.

Before anything is written in AWS, STS GetCallerIdentity must name ``spec.aws.accountId`` (the delegated
administrator account, for an organization that names one, whose organization's management account must then be
``spec.aws.accountId``: DescribeOrganization); Azure calls are built only from
``spec.azure.subscriptionId``, so nothing is ever written outside it.
"""

from collections.abc import Callable
from functools import partial
from typing import Any

from azure.mgmt.core import ARMPipelineClient

from ..aws.api import call
from ..aws.eks import EksClusters
from ..aws.managed_nodes import ManagedNodes
from ..aws.oidc import OidcProviders
from ..aws.stack import Stacks
from ..aws.stackset import StackSets
from ..azure.client import arm_pipeline
from ..azure.connector import Connectors, VerifiedSubscriptions
from ..azure.graph import Graph
from ..credentials import CredentialFactory
from ..errors import TerminalError
from ..settings import Settings
from .aws_side import AwsAccount
from .ledger import UNRECORDED_LEDGER, Ledger
from .model import Target


class Clouds:
    def __init__(
        self, settings: Settings, credentials: CredentialFactory, planned: list[str] | None = None
    ) -> None:
        """With ``planned``, the adapters describe their writes there instead of making them."""
        self.settings, self.credentials, self.planned = settings, credentials, planned
        # One ARM pipeline per credential, reused across passes, and the subscriptions that credential verified.
        self._pipelines: dict[int, tuple[ARMPipelineClient[Any, Any], VerifiedSubscriptions]] = {}
        self._graphs: dict[int, ARMPipelineClient[Any, Any]] = {}

    def forget_idle(self, idle_seconds: float) -> int:
        """Drop what no object used for ``idle_seconds``: clients, credentials, and ARM pipelines of dropped
        credentials."""
        dropped = self.credentials.forget_idle(idle_seconds)
        held = {id(c) for c in self.credentials.azure_credentials()}
        for key in [k for k in self._pipelines if k not in held]:
            del self._pipelines[key]
            dropped += 1
        for key in [k for k in self._graphs if k not in held]:
            del self._graphs[key]
        return dropped

    def aws(
        self,
        target: Target,
        writes: Ledger = UNRECORDED_LEDGER,
        member_allowed: Callable[[str], bool] = lambda account: True,
    ) -> AwsAccount:
        """``writes("aws")`` wraps every write the adapters make; a member account's role is assumed only where
        ``member_allowed`` (the grant's accounts) says so, at the moment of use."""
        clients = self.credentials.aws_clients(target.namespace, target.name, target.spec)
        arn = clients.identity_arn()
        account, partition = arn.split(":")[4], arn.split(":")[1]
        delegate = target.spec.aws.delegated_administrator
        if account != target.spec.aws.signer:
            field = (
                "spec.aws.organization.delegatedAdministratorAccountId" if delegate else "spec.aws.accountId"
            )
            raise TerminalError(
                "AccountMismatch",
                f"the AWS credentials belong to account {account}, not {field} {target.spec.aws.signer}",
            )
        org = target.spec.aws.organization
        organizations = clients.client("organizations", "us-east-1") if org is not None else None
        # the delegate may run the StackSets of its own organization only: accountId must manage it
        if delegate and organizations is not None:
            management = str(call(organizations, "describe_organization")["Organization"]["MasterAccountId"])
            if management != target.spec.aws.account_id:
                raise TerminalError(
                    "AccountMismatch",
                    f"delegated administrator {delegate} belongs to the organization of management account "
                    f"{management}, not spec.aws.accountId {target.spec.aws.account_id}; nothing is written",
                )
        region = target.spec.deployment.region
        hook = partial(writes, "aws")
        cloudformation, iam = clients.client("cloudformation", region), clients.client("iam", region)
        member_role = org.member_provider_role_name if org is not None else None

        def members(member: str) -> OidcProviders:
            """A member account's identity providers, through the role the spec names there."""
            if not member_allowed(member):
                raise TerminalError(
                    "NotAllowedByPolicy",
                    f"member account {member} is in the aws.accountIds of no ClusterOnboardingPolicy that allows "
                    f"this object, so role {member_role} is not assumed there",
                )
            role = f"arn:{partition}:iam::{member}:role/{member_role}"
            session = f"defender-operator-{target.namespace}-{target.name}"
            member_iam = clients.assume(role, session).client("iam", region)
            return OidcProviders(member_iam, partition, member, self.planned, hook)

        return AwsAccount(
            account=account,
            partition=partition,
            stacks=Stacks(cloudformation, self.planned, hook, iam=iam),
            providers=OidcProviders(iam, partition, account, self.planned, hook),
            iam=iam,
            eks=EksClusters(partial(clients.client, "eks"), partition, self.planned, hook),
            stacksets=StackSets(
                cloudformation,
                organizations,
                self.planned,
                hook,
                call_as="DELEGATED_ADMIN" if delegate else "SELF",
            )
            if organizations is not None
            else None,
            members=members if member_role else None,
            nodes=ManagedNodes(clients.client),
        )

    def graph(self, target: Target) -> Graph:
        """Microsoft Graph with the object's Azure credential (read-only; one pipeline per credential), only where
        that credential signs in to the object's own tenant (the directory Graph reads is the token's)."""
        tenant = self.credentials.azure_tenant(target.spec)
        if tenant is not None and tenant.lower() != target.spec.azure.tenant_id.lower():
            raise TerminalError(
                "GraphOtherTenant",
                f"the operator's Azure identity signs in to tenant {tenant}, not spec.azure.tenantId",
            )
        credential = self.credentials.azure_credential(target.namespace, target.spec)
        pipeline = self._graphs.get(id(credential))
        if pipeline is None:
            endpoint = self.settings.azure_graph_endpoint.rstrip("/")
            pipeline = self._graphs[id(credential)] = arm_pipeline(
                credential, endpoint, scope=f"{endpoint}/.default", ca_bundle=self.settings.azure_ca_bundle
            )
        return Graph(pipeline)

    def azure(self, target: Target, writes: Ledger = UNRECORDED_LEDGER) -> Connectors:
        credential = self.credentials.azure_credential(target.namespace, target.spec)
        held = self._pipelines.get(id(credential))
        if held is None:
            pipeline = arm_pipeline(
                credential, self.settings.azure_arm_endpoint, ca_bundle=self.settings.azure_ca_bundle
            )
            held = self._pipelines[id(credential)] = (pipeline, VerifiedSubscriptions())
        azure = target.spec.azure
        return Connectors(
            held[0], azure.subscription_id, azure.tenant_id, self.planned, partial(writes, "azure"), held[1]
        )
