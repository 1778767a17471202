"""Ask the API server again for the operator's own resources when Kopf started without them.

Kopf learns which resources exist from the API server's discovery (``/apis``) once, as it starts
(``kopf/_core/reactor/observation.py: resource_observer``), and, with scanning disabled as the operator runs it
(``handlers/runtime.py: configure_kopf``: no CRD watch, fewer permissions), never again. A kube-apiserver that has
just started answers ``/apis`` before it lists the custom resources (their discovery comes from the CRD informer,
moments later: kubernetes/kubernetes#71218), so an operator that starts in that moment (a control-plane upgrade that
restarts the API server as the operator restarts too) logs "Unresolved resources cannot be served", serves no
AWSConnector and no policy, and stays so for good while it holds the Lease: nothing converges, nothing is cleaned up
(the chaos campaign's seed 59299). So while any of them is unserved, the group is scanned again on a backoff, as
Kopf's own CRD watch would on a CRD change, and Kopf is given the result when it lists every kind Kopf already
serves (a scan that meets the API server's gap again must not take a served kind away); once all are served this
ends. The same holds for CRDs installed after the operator started: this is the only way it comes to serve them.
"""

import asyncio
import logging
from collections.abc import Iterable

import aiohttp
import kopf
from kopf._cogs.clients.errors import APIError, APISessionClosed
from kopf._cogs.clients.scanning import scan_resources
from kopf._cogs.structs.references import Insights
from kopf._core.reactor.observation import revise_resources

from .api.names import EFFECTIVE_PLURAL, GROUP, PLURAL, POLICY_PLURAL, VERSION
from .kube import one_line

__all__ = ["Insights", "keep_served", "unserved"]  # Kopf's Insights: what kopf.operator(insights=...) fills

log = logging.getLogger("defender_operator")

OWN_PLURALS = frozenset({PLURAL, POLICY_PLURAL, EFFECTIVE_PLURAL})
FIRST_RESCAN_SECONDS = 1.0
LAST_RESCAN_SECONDS = 30.0  # CRDs that are not installed at all: a scan every 30 s until they are
# the API server unreachable, refusing, or Kopf's session closed as the operator stops: the next round asks again
UNAVAILABLE = (APIError, APISessionClosed, aiohttp.ClientError, asyncio.TimeoutError)


def unserved(insights: Insights) -> set[str]:
    """The operator's own resources (plurals) that Kopf does not watch."""
    return set(OWN_PLURALS - _served(insights.watched_resources))


def _served(resources: Iterable[kopf.Resource]) -> set[str]:
    return {r.plural for r in resources if r.group == GROUP and r.version == VERSION}


async def keep_served(
    insights: Insights, settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry
) -> None:
    """Once Kopf's first scan is done: scan the group again until every own resource is served."""
    await insights.ready_resources.wait()
    delay = FIRST_RESCAN_SECONDS
    missing = unserved(insights)
    if missing:
        log.warning(
            "the API server did not list the operator's resources as Kopf started; asking it again",
            extra={"resources": ",".join(sorted(missing))},
        )
    while missing:
        await asyncio.sleep(delay)
        delay = min(delay * 2, LAST_RESCAN_SECONDS)
        try:
            resources = await scan_resources(groups={GROUP}, settings=settings, logger=log)
        except UNAVAILABLE as exc:
            log.warning(
                "asking the API server for the operator's resources failed", extra={"error": one_line(exc)}
            )
            continue
        except Exception:  # not the API server's doing (Kopf's internals changed?): loud, and asked again
            log.exception("asking the API server for the operator's resources failed unexpectedly")
            continue
        async with insights.revised:
            if _served(insights.watched_resources) <= _served(resources):
                revise_resources(resources=resources, insights=insights, registry=registry, group=GROUP)
                await insights.backbone.fill(resources=resources)
                insights.revised.notify_all()
        missing = unserved(insights)
        if not missing:
            log.info("the operator's resources are served")
