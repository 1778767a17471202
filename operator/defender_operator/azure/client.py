"""The ARM pipeline the operator sends raw JSON through (azure-mgmt-core: retries with Retry-After, ARM challenge
authentication, resource provider registration), configured like the generated SDK clients configure it.

The connector body is sent as raw JSON for api-version 2024-08-01-preview because azure-mgmt-security 7.0.0 only
knows 2023-10-01-preview for connectors and would drop fields it does not model (docs/reference.md, "API versions").
"""

from typing import Any

from azure.core.configuration import Configuration
from azure.core.credentials import TokenCredential
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline import policies
from azure.core.rest import HttpRequest, HttpResponse
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

from .. import __version__, metrics
from ..errors import RetryableError, TerminalError

ARM_SCOPE = "https://management.azure.com/.default"


def arm_pipeline(
    credential: TokenCredential,
    base_url: str,
    *,
    scope: str = ARM_SCOPE,
    ca_bundle: str | None = None,
    retry_total: int = 4,
    retry_backoff_factor: float = 0.8,
    retry_backoff_max: float = 30,
    timeout: float = 60,
) -> ARMPipelineClient[Any, Any]:
    """A pipeline client for ``base_url``, with tokens for ``scope`` (Microsoft Graph's, for the Graph adapter).
    Retries cover 408/429/5xx and dropped connections, honouring Retry-After; the operator's own backoff takes over
    once these are spent."""
    config: Configuration[Any, Any] = Configuration()
    config.user_agent_policy = policies.UserAgentPolicy(sdk_moniker=f"defender-operator/{__version__}")
    config.headers_policy = policies.HeadersPolicy()
    config.proxy_policy = policies.ProxyPolicy()
    config.logging_policy = policies.NetworkTraceLoggingPolicy()
    config.http_logging_policy = ARMHttpLoggingPolicy()
    config.retry_policy = policies.RetryPolicy(
        retry_total=retry_total,
        retry_backoff_factor=retry_backoff_factor,
        retry_backoff_max=retry_backoff_max,
        timeout=timeout,
    )
    config.custom_hook_policy = policies.CustomHookPolicy()
    config.redirect_policy = policies.RedirectPolicy()
    config.authentication_policy = ARMChallengeAuthenticationPolicy(credential, scope)
    kwargs: dict[str, Any] = {"connection_timeout": 10, "read_timeout": timeout}
    if ca_bundle:
        kwargs["connection_verify"] = ca_bundle
    return ARMPipelineClient(base_url=base_url, config=config, **kwargs)


def send(
    pipeline: ARMPipelineClient[Any, Any], request: HttpRequest, service: str, operation: str, what: str
) -> HttpResponse:
    """Send ``request``, counted; a failure to get any answer from ``what`` (a service name for messages) becomes
    the operator's retryable or terminal error, an answer (of any status) is returned."""
    try:
        response: HttpResponse = pipeline.send_request(request)
    except ClientAuthenticationError as exc:
        metrics.cloud_call("azure", service, operation, "AuthenticationFailed")
        raise TerminalError(
            "AzureCredentialsRejected", f"Entra ID refused the operator's credentials: {first_line(exc)}"
        ) from None
    except (ServiceRequestError, ServiceResponseError) as exc:
        metrics.cloud_call("azure", service, operation, "ConnectionError")
        raise RetryableError("AzureUnavailable", f"could not reach {what}: {first_line(exc)}") from None
    except HttpResponseError as exc:
        metrics.cloud_call("azure", service, operation, "Error")
        raise RetryableError("AzureUnavailable", f"{what} failed: {first_line(exc)}") from None
    outcome = "ok" if response.status_code < 400 else error_message(response)[0]
    metrics.cloud_call("azure", service, operation, outcome, throttled=response.status_code == 429)
    return response


def error_message(response: HttpResponse) -> tuple[str, str]:
    """(code, message) of an ARM or Graph error body (``{"error": {"code", "message"}}``)."""
    try:
        error = response.json().get("error", {})
        return str(error.get("code", response.status_code)), str(error.get("message", response.reason))
    except (ValueError, AttributeError):
        return str(response.status_code), str(response.reason)


def first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
