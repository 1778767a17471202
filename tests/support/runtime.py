"""A Runtime built as the operator's start-up builds it, for running its Kopf handlers directly (as Kopf runs them)
against an API server of a test's choosing."""

from typing import Any

from kubernetes import client

from defender_operator.credentials import CredentialFactory
from defender_operator.event_recorder import EventRecorder
from defender_operator.handlers.runtime import Runtime
from defender_operator.kube import Kube
from defender_operator.reconcile.clouds import Clouds
from defender_operator.reconcile.rollout import Canaries, CatalogRollout
from defender_operator.settings import Settings
from defender_operator.workers import Workers


def handler_runtime(api: client.ApiClient) -> Runtime:
    settings = Settings()
    kube = Kube(api)
    return Runtime(
        settings=settings,
        kube=kube,
        clouds=Clouds(settings, CredentialFactory(settings, kube.read_secret)),
        workers=Workers(2),
        instance="unit",
        events=EventRecorder(kube),
        rollout=CatalogRollout(1, 0.0, Canaries("")),
    )


def memo_of(runtime: Runtime) -> Any:
    """What Kopf hands a handler as ``memo``: the operator keeps its Runtime there."""
    return type("Memo", (), {"runtime": runtime})()
