"""The IAM OIDC identity providers the Defender roles trust, managed beside the stack.

An account holds one provider per issuer URL, and Microsoft Sentinel uses the same Microsoft issuer. So: create the
provider when there is none (tagged as ours); when there is one that is not ours, add only the audiences Defender
needs and remember which; on cleanup delete only our own provider, or remove only the audiences we added.
(docs.aws.amazon.com/IAM/latest/UserGuide/id_roles_providers_create_oidc.html; Defender's guidance for
Sentinel-connected accounts: learn.microsoft.com/azure/defender-for-cloud/sentinel-connected-aws)
"""

from dataclasses import dataclass
from typing import Any

from .api import AwsClientError, call

OWNER_TAG = "defender-operator.io/owner"


@dataclass(frozen=True)
class ObservedProvider:
    arn: str
    audiences: list[str]
    owner: str | None  # value of our owner tag; None when someone else created it


@dataclass(frozen=True)
class ProviderSpec:
    """What a provider must look like: issuer host (no scheme), audiences, thumbprints."""

    host: str
    audiences: list[str]
    thumbprints: list[str]

    def arn(self, partition: str, account: str) -> str:
        return f"arn:{partition}:iam::{account}:oidc-provider/{self.host}"


class OidcProviders:
    def __init__(self, iam: Any, partition: str, account: str, planned: list[str] | None = None) -> None:
        """With ``planned``, writes are not made but described there (``defender-operator plan``)."""
        self.iam, self.partition, self.account, self.planned = iam, partition, account, planned

    def observe(self, spec: ProviderSpec) -> ObservedProvider | None:
        arn = spec.arn(self.partition, self.account)
        try:
            found = call(self.iam, "get_open_id_connect_provider", OpenIDConnectProviderArn=arn)
        except AwsClientError as exc:
            if exc.code == "NoSuchEntity":
                return None
            raise
        tags = {t["Key"]: t["Value"] for t in found.get("Tags", [])}
        return ObservedProvider(
            arn=arn, audiences=list(found.get("ClientIDList", [])), owner=tags.get(OWNER_TAG)
        )

    def create(self, spec: ProviderSpec, owner: str) -> ObservedProvider:
        arn = spec.arn(self.partition, self.account)
        if self.planned is not None:
            self.planned.append(f"create identity provider https://{spec.host}")
            return ObservedProvider(arn=arn, audiences=spec.audiences, owner=owner)
        call(
            self.iam,
            "create_open_id_connect_provider",
            Url=f"https://{spec.host}",
            ClientIDList=spec.audiences,
            ThumbprintList=spec.thumbprints,
            Tags=[{"Key": OWNER_TAG, "Value": owner}, {"Key": "managed-by", "Value": "defender-operator"}],
        )
        return ObservedProvider(arn=arn, audiences=spec.audiences, owner=owner)

    def add_audiences(self, provider: ObservedProvider, audiences: list[str]) -> None:
        for audience in audiences:
            if self.planned is not None:
                self.planned.append(f"add audience {audience} to {provider.arn}")
                continue
            call(
                self.iam,
                "add_client_id_to_open_id_connect_provider",
                OpenIDConnectProviderArn=provider.arn,
                ClientID=audience,
            )

    def remove_audiences(self, arn: str, audiences: list[str]) -> None:
        for audience in audiences:
            try:
                call(
                    self.iam,
                    "remove_client_id_from_open_id_connect_provider",
                    OpenIDConnectProviderArn=arn,
                    ClientID=audience,
                )
            except AwsClientError as exc:
                if exc.code != "NoSuchEntity":
                    raise

    def delete(self, arn: str) -> None:
        try:
            call(self.iam, "delete_open_id_connect_provider", OpenIDConnectProviderArn=arn)
        except AwsClientError as exc:
            if exc.code != "NoSuchEntity":
                raise
