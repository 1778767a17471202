"""Adapters for one object's clouds, signed in with its credentials, and checked to be the account it names.

Before anything is written in AWS, STS GetCallerIdentity must name ``spec.aws.accountId``; Azure calls are built
only from ``spec.azure.subscriptionId``, so nothing is ever written outside it.
"""

from ..aws.api import call, client
from ..aws.oidc import OidcProviders
from ..aws.stack import Stacks
from ..aws.stackset import StackSets
from ..azure.client import arm_pipeline
from ..azure.connector import Connectors
from ..credentials import CredentialFactory
from ..errors import TerminalError
from ..settings import Settings
from .aws_side import AwsAccount
from .model import Target


class Clouds:
    def __init__(
        self, settings: Settings, credentials: CredentialFactory, planned: list[str] | None = None
    ) -> None:
        """With ``planned``, the adapters describe their writes there instead of making them."""
        self.settings, self.credentials, self.planned = settings, credentials, planned

    def aws(self, target: Target) -> AwsAccount:
        session = self.credentials.aws_session(target.namespace, target.name, target.spec)
        endpoint = self.settings.aws_endpoint_url
        identity = call(client(session, "sts", self.settings.aws_region, endpoint), "get_caller_identity")
        account = str(identity["Account"])
        if account != target.spec.aws.account_id:
            raise TerminalError(
                "AccountMismatch",
                f"the AWS credentials belong to account {account}, not spec.aws.accountId {target.spec.aws.account_id}",
            )
        partition = str(identity["Arn"]).split(":")[1]
        region = target.spec.deployment.region
        return AwsAccount(
            account=account,
            partition=partition,
            stacks=Stacks(client(session, "cloudformation", region, endpoint), planned=self.planned),
            providers=OidcProviders(
                client(session, "iam", region, endpoint), partition, account, planned=self.planned
            ),
            iam=client(session, "iam", region, endpoint),
            stacksets=StackSets(
                client(session, "cloudformation", region, endpoint),
                client(session, "organizations", "us-east-1", endpoint),  # a global service
                planned=self.planned,
            )
            if target.spec.aws.organization is not None
            else None,
        )

    def azure(self, target: Target) -> Connectors:
        credential = self.credentials.azure_credential(target.namespace, target.spec)
        pipeline = arm_pipeline(
            credential, self.settings.azure_arm_endpoint, ca_bundle=self.settings.azure_ca_bundle
        )
        return Connectors(pipeline, target.spec.azure.subscription_id, planned=self.planned)
