"""Kopf's session to the API server, with at most ``kube_connections`` connections open at once.

Kopf's own session has no connection limit (``aiohttp.TCPConnector(limit=0)``), so an operator that starts over a
backlog opens one TLS connection per object at once: Kopf's per-object workers each PATCH the finalizer in the same
second. Each connection holds asyncio's 256 KiB TLS read buffer and a handshake's CPU: with 1,000 objects, 263 MiB of
the operator's 502 MiB peak were those buffers, and the handshakes delayed the first pass by seconds
(docs/performance.md, "A backlog"). With a limit, requests beyond it wait for a free connection (Kopf's request
timeout covers the wait, and Kopf retries a request that timed out), so memory and handshakes follow the limit, not
the backlog. A watch stream holds its connection for its whole life, so the limit is one connection per watch plus
``Settings.kube_connections`` for requests: were watches to take the last connections, every request would wait
for ever.

Credentials come from Kopf's own ``login_via_client`` (in-cluster service account, else kubeconfig), so nothing about
authentication changes: when the API server answers 401, Kopf invalidates the session (and closes it) and calls this
handler again, which reads the current token (the kubelet rotates the service account's). Kopf refuses credentials
equal to ones it invalidated; a new session never equals an old one, so this handler does that part itself: when the
credentials read again are those that were just refused, it gives none, and Kopf stops with its LoginError as it
would with its own session, instead of logging in again and again. A failure to read them is permanent for the same
reason (Kopf's own login fails the start-up; a retried one would leave a pod unready for ever).
"""

import asyncio
from typing import Any

import aiohttp
import kopf

from .settings import Settings


@kopf.on.login(errors=kopf.ErrorsMode.PERMANENT)
async def login(memo: Any, **kwargs: Any) -> kopf.AiohttpSession | None:
    info = await asyncio.to_thread(kopf.login_via_client, **kwargs)
    if info is None or info == getattr(memo, "kube_credentials", None):  # None: no client library
        return None
    memo.kube_credentials = info
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=connection_limit(memo.settings), ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        aiohttp_session=session,
        server=info.server,
        default_namespace=info.default_namespace,
        expiration=info.expiration,
        priority=info.priority,
    )


def connection_limit(operator: Settings) -> int:
    """One connection per watch Kopf keeps: AWSConnectors cluster-wide or in each watched namespace, and the three
    cluster-scoped kinds (ClusterOnboardingPolicies, the EffectiveOnboardingPolicy, namespaces); then the requests'
    share."""
    watches = (len(operator.namespaces) or 1) + 3
    return watches + operator.kube_connections
