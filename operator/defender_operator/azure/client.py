"""The ARM pipeline the operator sends raw JSON through (azure-mgmt-core: retries with Retry-After, ARM challenge
authentication, resource provider registration), configured like the generated SDK clients configure it.

The connector body is sent as raw JSON for api-version 2024-08-01-preview because azure-mgmt-security 7.0.0 only
knows 2023-10-01-preview for connectors and would drop fields it does not model (docs/reference.md, "API versions").
"""

from typing import Any

from azure.core.configuration import Configuration
from azure.core.credentials import TokenCredential
from azure.core.pipeline import policies
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy

from .. import __version__

ARM_SCOPE = "https://management.azure.com/.default"


def arm_pipeline(
    credential: TokenCredential,
    base_url: str,
    *,
    ca_bundle: str | None = None,
    retry_total: int = 4,
    retry_backoff_factor: float = 0.8,
    retry_backoff_max: float = 30,
    timeout: float = 60,
) -> ARMPipelineClient[Any, Any]:
    """A pipeline client for ``base_url``. Retries cover 408/429/5xx and dropped connections, honouring
    Retry-After; the operator's own backoff takes over once these are spent."""
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
    config.authentication_policy = ARMChallengeAuthenticationPolicy(credential, ARM_SCOPE)
    kwargs: dict[str, Any] = {"connection_timeout": 10, "read_timeout": timeout}
    if ca_bundle:
        kwargs["connection_verify"] = ca_bundle
    return ARMPipelineClient(base_url=base_url, config=config, **kwargs)
