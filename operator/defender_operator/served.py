"""Ask the API server again for the operator's own resources when Kopf started without them.

Kopf learns which resources exist from the API server's discovery (``/apis``) once, as it starts, and afterwards only
when a CustomResourceDefinition changes (its CRD watch ignores the initial listing: ``kopf/_core/reactor/
observation.py: resource_observer``). A kube-apiserver that has just started answers ``/apis`` before it lists the
custom resources (their discovery comes from the CRD informer, moments later: kubernetes/kubernetes#71218), so an
operator that starts in that moment (a control-plane upgrade that restarts the API server as the operator restarts
too) logs "Unresolved resources cannot be served", serves no AWSConnector and no policy, and, the CRDs never
changing, stays so for good while it holds the Lease: nothing converges, nothing is cleaned up (the chaos campaign's
seed 59299). So while any of them is unserved, Kopf's own re-scan of the group runs again, as a CRD change would
run it, on a backoff; once all are served this ends.
"""

import asyncio
import logging
from typing import Any

import kopf
from kopf._cogs.structs.references import Insights
from kopf._core.reactor.observation import process_discovered_resource_event

from .api.names import EFFECTIVE_PLURAL, GROUP, PLURAL, POLICY_PLURAL, VERSION
from .kube import one_line

__all__ = ["Insights", "keep_served", "unserved"]  # Kopf's Insights: what kopf.operator(insights=...) fills

log = logging.getLogger("defender_operator")

OWN_PLURALS = frozenset({PLURAL, POLICY_PLURAL, EFFECTIVE_PLURAL})
FIRST_RESCAN_SECONDS = 1.0
# CRDs not installed at all: Kopf's CRD watch sees them made (an ADDED event); the re-scans only back it up
LAST_RESCAN_SECONDS = 30.0


def unserved(insights: Insights) -> set[str]:
    """The operator's own resources (plurals) that Kopf does not watch."""
    served = {r.plural for r in insights.watched_resources if r.group == GROUP and r.version == VERSION}
    return set(OWN_PLURALS - served)


async def keep_served(
    insights: Insights, settings: kopf.OperatorSettings, registry: kopf.OperatorRegistry
) -> None:
    """Once Kopf's first scan is done: re-scan the group until every own resource is served."""
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
        # a CRD change, as Kopf's CRD watch hands it on: all it reads of it is the group
        event: Any = {"type": "MODIFIED", "object": {"spec": {"group": GROUP}}}
        try:
            await process_discovered_resource_event(
                raw_event=event, settings=settings, registry=registry, insights=insights
            )
        except Exception as exc:  # an API server still starting: the next round asks again
            log.warning(
                "asking the API server for the operator's resources failed", extra={"error": one_line(exc)}
            )
            continue
        missing = unserved(insights)
        if not missing:
            log.info("the operator's resources are served")
