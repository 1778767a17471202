"""Credentials for one AWSConnector: most specific wins (the object's own secret, then the operator's identity).

AWS: keys from ``spec.aws.credentials.secretRef`` or the default chain (IRSA / pod identity in a cluster, the
environment in the sandbox), then ``roleArn`` assumed with its external id. Azure: ``spec.azure.credentialsSecretRef``
(a client secret of an Entra app in ``spec.azure.tenantId``), else the operator's own workload identity or client
secret from the environment. Secrets are read only from the object's own namespace, and their values never reach a
log line, an event or the status.
"""

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential, DefaultAzureCredential, WorkloadIdentityCredential

from .api.spec import AWSConnectorSpec
from .aws.api import call, client
from .errors import TerminalError
from .settings import Settings

SecretReader = Callable[[str, str], dict[str, str]]
"""(namespace, name) -> decoded secret data; raises KeyError when the secret does not exist."""

PUBLIC_AUTHORITIES = {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
_ASSUMED_ROLE_TTL = 45 * 60  # STS default session is 1 h; renew well before


def _secret(
    read: SecretReader, namespace: str, name: str, keys: tuple[str, ...], what: str
) -> dict[str, str]:
    try:
        data = read(namespace, name)
    except KeyError:
        raise TerminalError(
            "CredentialsSecretMissing", f"{what}: Secret {namespace}/{name} does not exist"
        ) from None
    missing = [k for k in keys if not data.get(k)]
    if missing:
        raise TerminalError(
            "CredentialsSecretInvalid", f"{what}: Secret {namespace}/{name} has no {', '.join(missing)}"
        )
    return data


@dataclass(frozen=True)
class _CachedSession:
    session: boto3.Session
    expires: float


class CredentialFactory:
    """Builds (and caches, per object) the sessions and credentials the adapters use."""

    def __init__(self, settings: Settings, read_secret: SecretReader) -> None:
        self.settings, self.read_secret = settings, read_secret
        self._assumed: dict[tuple[str, ...], _CachedSession] = {}
        self._azure: dict[tuple[str, ...], TokenCredential] = {}
        self._lock = threading.Lock()

    # --- AWS ----------------------------------------------------------------------------------------------------------

    def aws_session(self, namespace: str, name: str, spec: AWSConnectorSpec) -> boto3.Session:
        creds = spec.aws.credentials
        base = boto3.Session()
        base_key = "default"
        if creds and creds.secret_ref:
            data = _secret(
                self.read_secret,
                namespace,
                creds.secret_ref.name,
                ("accessKeyId", "secretAccessKey"),
                "spec.aws.credentials.secretRef",
            )
            base = boto3.Session(
                aws_access_key_id=data["accessKeyId"],
                aws_secret_access_key=data["secretAccessKey"],
                aws_session_token=data.get("sessionToken") or None,
            )
            base_key = f"secret:{namespace}/{creds.secret_ref.name}:{hash(data['accessKeyId'])}"
        if not (creds and creds.role_arn):
            return base
        key = (base_key, creds.role_arn, creds.external_id or "")
        with self._lock:
            cached = self._assumed.get(key)
            if cached and cached.expires > time.monotonic():
                return cached.session
        sts = client(base, "sts", self.settings.aws_region, self.settings.aws_endpoint_url)
        kwargs: dict[str, Any] = {
            "RoleArn": creds.role_arn,
            "RoleSessionName": f"defender-operator-{namespace}-{name}"[:64],
        }
        if creds.external_id:
            kwargs["ExternalId"] = creds.external_id
        assumed = call(sts, "assume_role", **kwargs)["Credentials"]
        session = boto3.Session(
            aws_access_key_id=assumed["AccessKeyId"],
            aws_secret_access_key=assumed["SecretAccessKey"],
            aws_session_token=assumed["SessionToken"],
        )
        with self._lock:
            self._assumed[key] = _CachedSession(session, time.monotonic() + _ASSUMED_ROLE_TTL)
        return session

    # --- Azure --------------------------------------------------------------------------------------------------------

    def _authority_options(self) -> dict[str, Any]:
        authority = self.settings.azure_authority_host or os.environ.get("AZURE_AUTHORITY_HOST")
        options: dict[str, Any] = {}
        if authority:
            options["authority"] = authority
            host = authority.split("://", 1)[-1].split("/", 1)[0]
            # Instance discovery asks the public cloud about the authority; a sovereign or private one must skip it.
            options["disable_instance_discovery"] = host not in PUBLIC_AUTHORITIES
        if self.settings.azure_ca_bundle:
            options["connection_verify"] = self.settings.azure_ca_bundle
        return options

    def azure_credential(self, namespace: str, spec: AWSConnectorSpec) -> TokenCredential:
        ref = spec.azure.credentials_secret_ref
        if ref is None:
            return self._operator_credential()
        data = _secret(
            self.read_secret,
            namespace,
            ref.name,
            ("clientId", "clientSecret"),
            "spec.azure.credentialsSecretRef",
        )
        key = (spec.azure.tenant_id, data["clientId"], str(hash(data["clientSecret"])))
        with self._lock:
            if key not in self._azure:
                self._azure[key] = ClientSecretCredential(
                    spec.azure.tenant_id, data["clientId"], data["clientSecret"], **self._authority_options()
                )
            return self._azure[key]

    def _operator_credential(self) -> TokenCredential:
        with self._lock:
            cached = self._azure.get(("operator",))
            if cached is not None:
                return cached
            options = self._authority_options()
            env = os.environ
            credential: TokenCredential
            if env.get("AZURE_CLIENT_SECRET") and env.get("AZURE_CLIENT_ID") and env.get("AZURE_TENANT_ID"):
                credential = ClientSecretCredential(
                    env["AZURE_TENANT_ID"], env["AZURE_CLIENT_ID"], env["AZURE_CLIENT_SECRET"], **options
                )
            elif env.get("AZURE_FEDERATED_TOKEN_FILE"):
                credential = WorkloadIdentityCredential(**options)
            else:
                credential = DefaultAzureCredential(exclude_interactive_browser_credential=True, **options)
            self._azure[("operator",)] = credential
            return credential
