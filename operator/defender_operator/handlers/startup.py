"""Start-up: the runtime the handlers share, built once a replica leads (Kopf's ``on.startup``)."""

import asyncio
import logging
from typing import Any

import kopf

from .. import metrics
from ..credentials import CredentialFactory
from ..event_recorder import EventRecorder
from ..kube import Kube, api_server_unavailable, load_config, one_line
from ..reconcile.clouds import Clouds
from ..reconcile.rollout import Canaries, CatalogRollout
from ..render.catalog import catalog_version
from ..settings import Settings
from ..workers import Workers
from .runtime import Runtime, configure_kopf
from .tenancy import sync_effective_policy

log = logging.getLogger("defender_operator")

# A start-up that met an API server it could not reach is tried again this soon (Kopf's default: a minute). A replica
# started, or given the Lease, during a control-plane upgrade acts within seconds of the API server's return.
STARTUP_RETRY_SECONDS = 2.0


@kopf.on.startup(backoff=STARTUP_RETRY_SECONDS)
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    operator: Settings = memo.settings
    configure_kopf(settings, operator)
    kube = Kube(await asyncio.to_thread(load_config))
    try:
        instance = (
            operator.instance if operator.instance else await asyncio.to_thread(_cluster_instance, kube)
        )
        await asyncio.to_thread(sync_effective_policy, kube)
    except Exception as exc:
        if not api_server_unavailable(exc):
            raise
        # A temporary error is logged as one line and retried after its delay; nothing was built yet to leak.
        raise kopf.TemporaryError(
            f"the API server is not available: {one_line(exc)}", delay=STARTUP_RETRY_SECONDS
        ) from None
    factory = CredentialFactory(operator, kube.read_secret)
    await asyncio.to_thread(factory.warm)
    memo.runtime = Runtime(
        settings=operator,
        kube=kube,
        clouds=Clouds(operator, factory),
        workers=Workers(operator.workers),
        instance=instance,
        events=EventRecorder(kube),
        rollout=CatalogRollout(
            operator.catalog_rollout_batch,
            operator.catalog_rollout_pause_seconds,
            Canaries(operator.catalog_rollout_canaries),
            operator.catalog_rollout_tolerated_failures,
        ),
    )
    metrics.MAX_WORKERS.labels(metrics.CONTROLLER).set(operator.workers)
    metrics.precreate()
    log.info(
        "defender-operator started",
        extra={
            "namespaces": ",".join(operator.namespaces) or "*",
            "instance": instance,
            "catalog": catalog_version(),
        },
    )


def _cluster_instance(kube: Kube) -> str:
    """The cluster's id for the owner mark; a refusal (no right to read kube-system) stops the operator with what to
    do, an API server that is away is the caller's to wait for."""
    try:
        return f"cluster-{kube.cluster_id()}"
    except Exception as exc:
        if api_server_unavailable(exc):
            raise
        raise kopf.PermanentError(
            "cannot tell this cluster's id (the uid of namespace kube-system) for the owner mark: "
            f"{exc}. Set DEFENDER_OPERATOR_INSTANCE, or allow the operator to get namespace kube-system."
        ) from None
