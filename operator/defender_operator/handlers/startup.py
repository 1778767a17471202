"""Start-up: the runtime the handlers share, built once a replica leads (Kopf's ``on.startup``)."""

import asyncio
import logging
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException

from .. import metrics
from ..credentials import CredentialFactory
from ..event_recorder import EventRecorder
from ..kube import Kube, api_server_unavailable, load_config, one_line
from ..reconcile.clouds import Clouds
from ..reconcile.rollout import Canaries, CatalogRollout
from ..render.catalog import catalog_version
from ..served import keep_served
from ..settings import Settings
from ..workers import Workers
from .runtime import Runtime, configure_kopf
from .tenancy import sync_effective_policy

log = logging.getLogger("defender_operator")

# A start-up that met an API server it could not reach is tried again this soon (Kopf's default: a minute). A replica
# started, or given the Lease, during a control-plane upgrade acts within seconds of the API server's return.
STARTUP_RETRY_SECONDS = 2.0
# An API server that has just started refuses requests (403) until its authorization caches are filled
# (kubernetes/kubernetes#101422): a refusal is taken at its word only after this many in a row, about half a minute.
REFUSALS_TOLERATED = 15
# Anything else (the CRDs not yet established during an install, say) is tried again after this long.
OTHER_FAILURE_RETRY_SECONDS = 10.0


@kopf.on.startup(backoff=OTHER_FAILURE_RETRY_SECONDS)
async def startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    operator: Settings = memo.settings
    configure_kopf(settings, operator)
    kube = Kube(await asyncio.to_thread(load_config))
    reading = "the uid of namespace kube-system (the cluster's id in the owner mark)"
    try:
        instance = (
            operator.instance if operator.instance else f"cluster-{await asyncio.to_thread(kube.cluster_id)}"
        )
        reading = "the ClusterOnboardingPolicies, to write the EffectiveOnboardingPolicy"
        await asyncio.to_thread(sync_effective_policy, kube)
    except Exception as exc:
        refused = isinstance(exc, ApiException) and exc.status in (401, 403)
        # refusals in a row: an outage before them (tries of their own) does not use up the allowance
        memo.startup_refusals = getattr(memo, "startup_refusals", 0) + 1 if refused else 0
        if api_server_unavailable(exc) or (refused and memo.startup_refusals <= REFUSALS_TOLERATED):
            # Logged as one line and tried again after the delay; nothing was built yet that could leak.
            raise kopf.TemporaryError(
                f"start-up cannot read {reading} yet: {one_line(exc)}", delay=STARTUP_RETRY_SECONDS
            ) from None
        if refused:
            raise kopf.PermanentError(
                f"start-up cannot read {reading}: {one_line(exc)}. Give the operator's ServiceAccount the chart's "
                "ClusterRole (get namespaces; list ClusterOnboardingPolicies; get, create and patch "
                "EffectiveOnboardingPolicies), or set DEFENDER_OPERATOR_INSTANCE for the cluster's id."
            ) from None
        raise
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
    # in Kopf's context (its API calls need it), ended with the runtime's other tasks
    served = asyncio.create_task(keep_served(memo.insights, settings, kopf.get_default_registry()))
    memo.runtime.tasks.add(served)
    served.add_done_callback(memo.runtime.tasks.discard)
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
