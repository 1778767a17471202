"""``defender-operator run``: logging, the metrics and probe endpoints, then Kopf with this project's handlers.

/healthz answers 200 while the event loop runs (a heartbeat task proves it is not stuck); /readyz answers 200 once
start-up finished and Kopf is watching, or, with leader election, as soon as a standby waits for the Lease (which
``leader_election_master_status`` tells apart). Metrics are served by prometheus-client on their own port.
"""

import argparse
import asyncio
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import kopf
from prometheus_client import start_http_server

from . import handlers, kube_session, logs, metrics
from .kube import load_config
from .leader import LeaderElector
from .render.catalog import use_catalog
from .served import Insights
from .settings import Settings, settings_from

log = logging.getLogger("defender_operator")
HEARTBEAT_SECONDS = 5.0
# a stopping leader posts the Events its last passes recorded, for at most this long
EVENTS_FLUSH_SECONDS = 5.0
KOPF_SIGNAL_DELAY = 0.1  # a signal while Kopf starts is sent again after this, for Kopf's own handlers
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
STALE_AFTER = 30.0
ASYNCGEN_CLOSE = "an error occurred during closing of asynchronous generator"


class Probes:
    def __init__(self) -> None:
        self.ready = threading.Event()
        self.heartbeat = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self.heartbeat < STALE_AFTER


def _probe_server(probes: Probes, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = probes.alive()
            elif self.path == "/readyz":
                ok = probes.ready.is_set() and probes.alive()
            else:
                self.send_error(404)
                return
            body = b"ok" if ok else b"not ok"
            self.send_response(200 if ok else 503)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True, name="probes").start()
    return server


async def _heartbeat(probes: Probes) -> None:
    while True:
        probes.heartbeat = time.monotonic()
        await asyncio.sleep(HEARTBEAT_SECONDS)


def run(args: argparse.Namespace) -> int:
    settings: Settings = settings_from(args)
    logs.configure(settings.log_format, settings.log_level)
    collect_less_often(settings.gc_young_threshold)
    use_catalog(settings.catalog_file)
    probes = Probes()
    if settings.metrics_port:
        start_http_server(settings.metrics_port)
    if settings.probe_port:
        _probe_server(probes, settings.probe_port)
    memo = SimpleNamespace(settings=settings)
    ready_flag = threading.Event()

    async def main() -> None:
        install_exit_handler()
        stop = _Stop()
        heartbeat = asyncio.create_task(_heartbeat(probes))
        elector = _elector(settings) if settings.leader_election else None
        keeper: Callable[[], None] | None = None  # stops the Lease's renewals
        watcher = None
        leading = metrics.LEADER.labels(settings.lease_name)
        try:
            if elector is not None:
                # A standby is ready: it serves its purpose by waiting. Readiness that waited for the Lease would
                # keep a Deployment's new pods unready while the old leader holds it, so a rolling update
                # (maxUnavailable 0) and a drain under a PodDisruptionBudget would never finish; controller-runtime
                # is ready either way too.
                leading.set(0)
                probes.ready.set()
                await elector.acquire()
                keeper = elector.keep_or_exit()
            leading.set(1)
            watcher = asyncio.create_task(_mark_ready(ready_flag, probes))
            memo.insights = (
                Insights()
            )  # what Kopf serves; start-up makes sure it is all the operator's resources
            stop.kopf = True
            await kopf.operator(
                clusterwide=not settings.namespaces,
                namespaces=settings.namespaces,
                standalone=True,
                memo=memo,
                ready_flag=ready_flag,
                registry=kopf.get_default_registry(),
                insights=memo.insights,
            )
        finally:
            heartbeat.cancel()
            if watcher is not None:
                watcher.cancel()
            # Kopf leaves a daemon that has not stopped within its cancellation timeout orphaned, and its pass goes
            # on in a worker thread: the Lease stays held and renewed until the last one has ended, or a standby
            # would act beside it. The pod's grace period bounds the wait (then SIGKILL, and the Lease expires).
            runtime = getattr(memo, "runtime", None)
            if runtime is not None:
                # the relists and the policies' graces end with the leadership (their next tick would find the
                # workers closed and log that the policies could not be listed)
                for task in [*runtime.relisting, *runtime.tasks]:
                    task.cancel()
                await asyncio.to_thread(runtime.workers.close)
                await asyncio.to_thread(runtime.events.flush, EVENTS_FLUSH_SECONDS)
            if keeper is not None:
                await asyncio.to_thread(keeper)
            if elector is not None:  # a signal during acquire() may have met a take already under way
                await asyncio.to_thread(elector.release)

    # the handlers register themselves on import
    assert handlers.objects.reconcile_loop is not None and kube_session.login is not None
    log.info(
        "starting",
        extra={"namespaces": ",".join(settings.namespaces) or "*", "metricsPort": settings.metrics_port},
    )
    try:
        asyncio.run(main())
    except asyncio.CancelledError:  # a signal before Kopf had its own handlers: a standby, or a start-up
        log.info("stopped")
    return 0


def install_exit_handler() -> None:
    """The running loop reports through :func:`quiet_watch_close`."""
    asyncio.get_running_loop().set_exception_handler(quiet_watch_close)


def quiet_watch_close(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's exception handler, but for one case: a watch stream of Kopf's that asyncio closes as the process
    exits. A stop that comes while Kopf is starting its watches (a rolling update stopping a new leader that has just
    taken the Lease) can leave one open, and asyncio's closing of it at exit then fails inside Kopf
    (``kopf/_cogs/clients/watching.py``: "generator didn't stop after athrow()"). The process is exiting and nothing
    is lost, so it is one WARNING line with its traceback at DEBUG, not an ERROR with a traceback that reads like a
    crash on a rollout (the suite's chaos seed 285180 met it). Everything else goes to asyncio's default handler."""
    agen = context.get("asyncgen")
    code = getattr(agen, "ag_code", None)
    kopfs = code is not None and f"{os.sep}kopf{os.sep}" in code.co_filename
    if not (kopfs and str(context.get("message", "")).startswith(ASYNCGEN_CLOSE)):
        loop.default_exception_handler(context)
        return
    error = context.get("exception")
    log.warning(
        "a watch stream was still open at exit and failed to close",
        extra={
            "stream": getattr(agen, "__qualname__", repr(agen)),
            "cause": f"{type(error).__name__}: {error}",
        },
    )
    log.debug("closing the watch stream failed", exc_info=error)


class _Stop:
    """SIGTERM and SIGINT, from the first moment: as a container's first process (PID 1), which the kernel sends no
    signal it has no handler for, a standby waiting for the Lease (or a replica starting) ignored SIGTERM, and every
    rollout and drain waited out the pod's grace period for it. Until Kopf is started a signal cancels the run; once
    it is being started, the signal is sent again a moment later, to the handlers Kopf installs as it starts (they
    stop it gracefully), so that Kopf's own start-up is never cancelled half way."""

    def __init__(self) -> None:
        self.kopf = False
        task = asyncio.current_task()
        assert task is not None
        self.task = task
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self, sig)

    def __call__(self, sig: signal.Signals) -> None:
        if self.kopf:
            asyncio.get_running_loop().call_later(KOPF_SIGNAL_DELAY, os.kill, os.getpid(), sig)
        else:
            self.task.cancel()


def collect_less_often(young_threshold: int) -> None:
    """Python collects its youngest generation every 700 allocations by default; each AWS client built for an object
    allocates thousands of objects, so while many objects converge the collector ran thousands of times and walked
    the older generations, holding every cached client, again and again (a third of the operator's CPU over 300 new
    objects; a higher threshold holds evicted clients' garbage longer: docs/performance.md). The older generations
    keep Python's thresholds. 0 changes nothing."""
    if young_threshold:
        _, middle, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, middle, oldest)


def _elector(settings: Settings) -> LeaderElector:
    namespace = settings.lease_namespace or os.environ.get("POD_NAMESPACE")
    if namespace is None and SERVICE_ACCOUNT_NAMESPACE.exists():
        namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
    return LeaderElector(
        load_config(),
        settings.lease_name,
        namespace or "default",
        settings.lease_duration_seconds,
        settings.renew_deadline_seconds,
        settings.retry_period_seconds,
    )


async def _mark_ready(flag: threading.Event, probes: Probes) -> None:
    """Ready once Kopf's start-up is done; what start-up loaded (modules, the AWS service models) lives as long as
    the process, so it is frozen out of every later garbage collection, which otherwise walks it each time."""
    while not flag.is_set():
        await asyncio.sleep(0.2)
    gc.freeze()
    probes.ready.set()
