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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import boto3
import botocore.session
from azure.core.credentials import TokenCredential
from azure.identity import ClientSecretCredential, DefaultAzureCredential, WorkloadIdentityCredential

from .api.spec import AWSConnectorSpec
from .aws.api import CLIENT_CONFIG, call
from .aws.client_classes import share_client_classes
from .errors import TerminalError
from .logs import REDACTOR, forget_secrets, secret
from .settings import Settings

SecretReader = Callable[[str, str], dict[str, str]]
"""(namespace, name) -> decoded secret data; raises KeyError when the secret does not exist."""

SECRET_KEYS = ("secretAccessKey", "sessionToken", "clientSecret")  # the keys whose values are credentials
PUBLIC_AUTHORITIES = {"login.microsoftonline.com", "login.microsoftonline.us", "login.chinacloudapi.cn"}
_ASSUMED_ROLE_TTL = 45 * 60  # STS default session is 1 h; renew well before
_IDENTITY_TTL = 60 * 60  # the identity behind long-lived keys is asked again hourly


def _secret(
    read: SecretReader,
    namespace: str,
    name: str,
    keys: tuple[str, ...],
    what: str,
    optional: tuple[str, ...] = (),
) -> dict[str, str]:
    """The credentials a Secret holds under ``keys`` (and ``optional``), each one checked to be text without
    whitespace or control characters inside (one trailing newline, as ``echo`` leaves it, is taken off): such a value
    would otherwise reach an HTTP header, and the error saying why it was refused would quote it."""
    try:
        data = read(namespace, name)
    except KeyError:
        raise TerminalError(
            "CredentialsSecretMissing", f"{what}: Secret {namespace}/{name} does not exist"
        ) from None
    missing = [k for k in keys if not data.get(k, "").strip()]
    if missing:
        raise TerminalError(
            "CredentialsSecretInvalid", f"{what}: Secret {namespace}/{name} has no {', '.join(missing)}"
        )
    found = {}
    for key in (*keys, *optional):
        value = data.get(key, "").strip()
        if not value:
            continue
        if not value.isprintable() or any(c.isspace() for c in value) or _not_text(value):
            raise TerminalError(
                "CredentialsSecretInvalid",
                f"{what}: key {key} of Secret {namespace}/{name} is not one line of text (it holds bytes that are "
                "not UTF-8, whitespace or control characters); store the credential alone",
            )
        found[key] = value
    # The credential values of the Secret, once they are known to be credentials (not its other keys, nor text a
    # credential cannot be, whatever they hold: a tenant's Secret must not choose what is blanked out of everyone's
    # log lines), as stored and as used, replacing what it held before.
    used = [key for key in found if key in SECRET_KEYS]
    REDACTOR.hold(("secret", namespace, name), [*(data[k] for k in used), *(found[k] for k in used)])
    return found


def _not_text(value: str) -> bool:
    """Whether the value came from bytes that are not UTF-8 (``Kube.read_secret`` keeps them as surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


@dataclass(frozen=True)
class _Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None
    expires: float = float("inf")
    arn: str | None = None  # who these keys are, when STS already said so (AssumeRole's AssumedRoleUser)


class AwsClients:
    """Clients for one set of AWS credentials, created once and reused across passes."""

    def __init__(self, factory: "CredentialFactory", keys: _Keys | None) -> None:
        self._factory, self._keys = factory, keys

    def client(self, service: str, region: str) -> Any:
        return self._factory._client(self._keys, service, region)

    def identity_arn(self) -> str:
        """The ARN STS says these credentials are: from AssumeRole's answer, or one GetCallerIdentity per
        credentials and hour (not one per pass)."""
        return self._factory._identity(self._keys)

    def assume(self, role_arn: str, session: str) -> "AwsClients":
        """Clients for ``role_arn``, assumed with these credentials (a member account's role, from the management
        account's)."""
        return AwsClients(self._factory, self._factory._assume(self._keys, role_arn, None, session))


class CredentialFactory:
    """Builds (and caches) the clients and credentials the adapters use.

    Every AWS client comes from one botocore session, so the service models are loaded once for the process rather
    than once per object (about 15 MiB an object otherwise: docs/performance.md), and clients of one service share
    their class and service model (aws/client_classes.py); clients are cached per credentials, service and region, at
    most ``aws_client_cache`` of them (about 0.13 MiB each, the largest part of an object's cost), so memory stays
    bounded with a thousand objects.
    """

    def __init__(self, settings: Settings, read_secret: SecretReader) -> None:
        self.settings, self.read_secret = settings, read_secret
        for variable in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AZURE_CLIENT_SECRET"):
            secret(os.environ.get(variable))  # the operator's own keys, when it has any
        share_client_classes()  # a client class and service model per service, not per object
        self._session = boto3.Session(botocore_session=botocore.session.get_session())
        self._assumed: dict[tuple[str, ...], _Keys] = {}
        self._identities: dict[_Keys | None, tuple[str, float]] = {}  # keys -> (ARN, valid until)
        self._clients: OrderedDict[tuple[Any, ...], Any] = OrderedDict()  # least recently used first
        self._azure: dict[tuple[str, ...], TokenCredential] = {}
        self._used: dict[Any, float] = {}  # cache key -> when it was last used (monotonic)
        self._secrets_used: dict[
            tuple[str, str], float
        ] = {}  # Secret -> when it was last read (for the redactor)
        self._lock = threading.Lock()

    def warm(self) -> None:
        """Load the service models and endpoint rules of the services every onboarding uses (into the shared
        session's cache), at start-up, so the first object's pass does not spend about 100 ms reading them (EC2's,
        read by the prerequisite check of the Servers plan, on by default, alone takes 70 ms), and the first passes,
        which start together, do not each read them at once."""
        for service in ("sts", "iam", "cloudformation", "eks", "ec2"):
            self._session.client(
                service,
                region_name="us-east-1",
                endpoint_url=self.settings.aws_endpoint_url,
                config=CLIENT_CONFIG,
                aws_access_key_id="warm",
                aws_secret_access_key="warm",
            )

    def forget_idle(self, idle_seconds: float, now: float | None = None) -> int:
        """Drop clients, assumed credentials and Azure credentials unused for ``idle_seconds`` (objects deleted, or
        credentials rotated), so memory follows the objects being reconciled, not every object ever seen. Returns
        how many entries went."""
        cutoff = (time.monotonic() if now is None else now) - idle_seconds
        with self._lock:
            stale = {key for key, used in self._used.items() if used < cutoff}
            before = len(self._clients) + len(self._assumed) + len(self._azure)
            before_assumed = set(self._assumed)
            self._clients = OrderedDict((k, v) for k, v in self._clients.items() if k not in stale)
            self._assumed = {k: v for k, v in self._assumed.items() if k not in stale}
            self._azure = {k: v for k, v in self._azure.items() if k not in stale or k == ("operator",)}
            live_keys = {k[0] for k in self._clients}
            self._identities = {k: v for k, v in self._identities.items() if k in live_keys}
            self._used = {k: v for k, v in self._used.items() if k not in stale}
            for key in stale:  # an assumed role's session: its keys are not looked for in the logs any more
                if key in before_assumed:
                    forget_secrets(("assumed", key))
            for ref, used in list(self._secrets_used.items()):
                if used < cutoff:  # a Secret no object has read for a while: forget its values
                    del self._secrets_used[ref]
                    forget_secrets(("secret", *ref))
            return before - len(self._clients) - len(self._assumed) - len(self._azure)

    def azure_credentials(self) -> list[TokenCredential]:
        """The Azure credentials held now (the ARM pipelines built on others can go)."""
        with self._lock:
            return list(self._azure.values())

    # --- AWS ----------------------------------------------------------------------------------------------------------

    def _client(self, keys: _Keys | None, service: str, region: str) -> Any:
        key = (keys, service, region)
        with self._lock:
            self._used[key] = time.monotonic()
            cached = self._clients.get(key)
            if cached is not None:
                self._clients.move_to_end(key)
            else:
                credentials = {}
                if keys is not None:
                    credentials = {
                        "aws_access_key_id": keys.access_key_id,
                        "aws_secret_access_key": keys.secret_access_key,
                        "aws_session_token": keys.session_token,
                    }
                cached = self._session.client(  # type: ignore[call-overload]
                    service,
                    region_name=region,
                    endpoint_url=self.settings.aws_endpoint_url,
                    config=CLIENT_CONFIG,
                    **credentials,
                )
                self._clients[key] = cached
                while (
                    len(self._clients) > self.settings.aws_client_cache
                ):  # memory bounded by the cache, not objects
                    evicted, _ = self._clients.popitem(last=False)
                    self._used.pop(evicted, None)
            return cached

    def _identity(self, keys: _Keys | None) -> str:
        if keys is not None and keys.arn:
            return keys.arn
        with self._lock:
            known = self._identities.get(keys)
        if known is not None and known[1] > time.monotonic():
            return known[0]
        arn = str(call(self._client(keys, "sts", self.settings.aws_region), "get_caller_identity")["Arn"])
        with self._lock:
            self._identities[keys] = (arn, time.monotonic() + _IDENTITY_TTL)
        return arn

    def aws_clients(self, namespace: str, name: str, spec: AWSConnectorSpec) -> AwsClients:
        creds = spec.aws.credentials
        base: _Keys | None = None
        if creds and creds.secret_ref:
            data = _secret(
                self.read_secret,
                namespace,
                creds.secret_ref.name,
                ("accessKeyId", "secretAccessKey"),
                "spec.aws.credentials.secretRef",
                optional=("sessionToken",),
            )
            self._secrets_used[(namespace, creds.secret_ref.name)] = time.monotonic()
            base = _Keys(data["accessKeyId"], data["secretAccessKey"], data.get("sessionToken") or None)
        if not (creds and creds.role_arn):
            return AwsClients(self, base)
        return AwsClients(
            self,
            self._assume(base, creds.role_arn, creds.external_id, f"defender-operator-{namespace}-{name}"),
        )

    def _assume(self, base: _Keys | None, role_arn: str, external_id: str | None, session: str) -> _Keys:
        """The role's credentials, assumed with ``base`` and kept until shortly before they expire."""
        key = (str(hash(base)), role_arn, external_id or "")
        with self._lock:
            self._used[key] = time.monotonic()
            assumed = self._assumed.get(key)
        if assumed is None or assumed.expires <= time.monotonic():
            kwargs: dict[str, Any] = {"RoleArn": role_arn, "RoleSessionName": session[:64]}
            if external_id:
                kwargs["ExternalId"] = external_id
            try:
                answer = call(self._client(base, "sts", self.settings.aws_region), "assume_role", **kwargs)
            except TerminalError as exc:
                if base is not None or exc.reason != "AWSAccessDenied":
                    raise
                # the operator's own identity: its IAM policy names the roles it may assume (none by default)
                raise TerminalError(
                    exc.reason,
                    f"{exc.message}. The operator's own identity may assume only the roles its IAM policy names and "
                    f"that trust it: name this one with `defender-operator aws-setup --assume-role "
                    f"{role_arn.rsplit('/', 1)[-1]}` (docs/aws-permissions.md), then request a reconcile",
                ) from None
            forget_secrets(("assumed", key))  # the session it replaces
            assumed = _Keys(
                answer["Credentials"]["AccessKeyId"],
                str(secret(answer["Credentials"]["SecretAccessKey"], ("assumed", key))),
                str(secret(answer["Credentials"]["SessionToken"], ("assumed", key))),
                time.monotonic() + _ASSUMED_ROLE_TTL,
                str(answer["AssumedRoleUser"]["Arn"]),
            )
            with self._lock:
                stale = self._assumed.get(key)
                self._assumed[key] = assumed
                if stale is not None:  # the expired credentials' clients are not needed any more
                    self._clients = OrderedDict((k, v) for k, v in self._clients.items() if k[0] != stale)
        return assumed

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
        self._secrets_used[(namespace, ref.name)] = time.monotonic()
        key = (spec.azure.tenant_id, data["clientId"], str(hash(data["clientSecret"])))
        with self._lock:
            self._used[key] = time.monotonic()
            if key not in self._azure:
                self._azure[key] = ClientSecretCredential(
                    spec.azure.tenant_id, data["clientId"], data["clientSecret"], **self._authority_options()
                )
            return self._azure[key]

    def azure_tenant(self, spec: AWSConnectorSpec) -> str | None:
        """The tenant the object's Azure credential gets tokens in: the spec's for a Secret of its own, the
        operator's (AZURE_TENANT_ID) for its own identity; None when not known."""
        if spec.azure.credentials_secret_ref is not None:
            return spec.azure.tenant_id
        return os.environ.get("AZURE_TENANT_ID") or None

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
