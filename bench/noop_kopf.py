"""Baseline: a Kopf operator that does nothing but hold one idle daemon per AWSConnector.

What any Kopf operator watching the same objects costs in memory, whatever it reconciles; bench.converge runs it
over the objects the real operator converged and compares their memory.

    kopf run bench/noop_kopf.py --all-namespaces --standalone
"""

import asyncio
from typing import Any

import kopf


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.posting.enabled = False


@kopf.daemon("defender-operator.io", "v1alpha1", "awsconnectors", cancellation_timeout=1)
async def idle(stopped: kopf.DaemonStopped, name: str, **_: Any) -> None:
    print(f"daemon {name}", flush=True)
    while not stopped:
        await asyncio.sleep(60)
