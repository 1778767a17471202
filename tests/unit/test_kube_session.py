"""Kopf's session to the API server: Kopf's own credentials, and a connection limit that leaves the requests their
share whatever number of watches the namespaces make (kube_session.py)."""

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import kopf
import pytest
import yaml

from defender_operator.kube_session import connection_limit, login
from defender_operator.settings import Settings


def test_every_watch_has_its_connection_and_the_requests_keep_their_share() -> None:
    # AWSConnectors cluster-wide, ClusterOnboardingPolicies, the EffectiveOnboardingPolicy, namespaces
    assert connection_limit(Settings()) == 4 + 12
    many = Settings(namespaces=[f"team-{i}" for i in range(40)], kube_connections=4)
    assert connection_limit(many) == 40 + 3 + 4


def _kubeconfig(path: Path, token: str) -> None:
    cluster = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": cluster}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )


async def _login(memo: SimpleNamespace) -> tuple[int, str, str] | None:
    """(connection limit, Authorization header, server) of the session the handler gives, or None."""
    context = await login(memo=memo, logger=logging.getLogger("test"), settings=kopf.OperatorSettings())
    if context is None:
        return None
    assert isinstance(context, kopf.AiohttpSession)
    try:
        session = context.aiohttp_session
        return (
            session.connector.limit if session.connector else 0,
            session.headers["Authorization"],
            context.server,
        )
    finally:
        await context.aiohttp_session.close()


def test_the_session_carries_kopfs_credentials_under_the_limit_and_refused_ones_are_not_offered_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    # the client library reads KUBECONFIG when it is imported; this is where it keeps what it read
    monkeypatch.setattr("kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    memo = SimpleNamespace(settings=Settings(namespaces=["a", "b"]))

    _kubeconfig(kubeconfig, "first-token")
    assert asyncio.run(_login(memo)) == (2 + 3 + 12, "Bearer first-token", "https://127.0.0.1:6443")
    # Kopf calls the handler again after a 401: the same token again would be refused again, for ever
    assert asyncio.run(_login(memo)) is None
    _kubeconfig(kubeconfig, "rotated-token")
    assert asyncio.run(_login(memo)) == (17, "Bearer rotated-token", "https://127.0.0.1:6443")
