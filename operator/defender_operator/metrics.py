"""Prometheus metrics, named and meant like controller-runtime's, so existing dashboards and alerts apply.

Meanings follow controller-runtime (pkg/internal/controller/metrics and pkg/internal/controller/controller.go,
reconcileHandler): ``reconcile_total`` by result (success, error, requeue, requeue_after), ``reconcile_errors_total``
for every pass that ended in an error, terminal ones included, ``terminal_reconcile_errors_total`` for those alone,
``reconcile_panics_total`` for passes that raised, ``active_workers`` only while a pass holds a worker slot, and
``reconcile_time_seconds`` from taking the slot to the end. The ``workqueue_*`` series (client-go's workqueue
metrics) describe the wait for a slot: depth, adds, time queued, time worked. Every label value is created at start
with 0, so ``increase()`` sees the first error. docs/operations.md lists each series with alerts.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import Counter, Gauge, Histogram

CONTROLLER = "awsconnector"

RECONCILE_TOTAL = Counter(
    "controller_runtime_reconcile_total",
    "Reconcile passes by result (success, error, requeue, requeue_after).",
    ["controller", "result"],
)
RECONCILE_ERRORS = Counter(
    "controller_runtime_reconcile_errors_total", "Reconcile passes that ended in an error.", ["controller"]
)
TERMINAL_ERRORS = Counter(
    "controller_runtime_terminal_reconcile_errors_total",
    "Reconcile passes that ended Stalled (an error the user must fix).",
    ["controller"],
)
RECONCILE_TIME = Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Duration of reconcile passes.",
    ["controller"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PANICS = Counter(
    "controller_runtime_reconcile_panics_total",
    "Reconcile passes that raised an unexpected exception.",
    ["controller"],
)
RESULTS = ("success", "error", "requeue", "requeue_after")
QUEUE_DEPTH = Gauge("workqueue_depth", "Objects waiting for a worker slot.", ["name"])
QUEUE_ADDS = Counter("workqueue_adds_total", "Passes queued for a worker slot.", ["name"])
QUEUE_LATENCY = Histogram(
    "workqueue_queue_duration_seconds",
    "How long a pass waited for its object's lock and a worker slot.",
    ["name"],
    buckets=(0.001, 0.01, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
WORK_DURATION = Histogram(
    "workqueue_work_duration_seconds",
    "How long a pass held its worker slot.",
    ["name"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
ACTIVE_WORKERS = Gauge("controller_runtime_active_workers", "Reconcile passes running now.", ["controller"])
MAX_WORKERS = Gauge("controller_runtime_max_concurrent_reconciles", "Most passes at once.", ["controller"])
CLOUD_CALLS = Counter(
    "defender_operator_cloud_requests_total",
    "Calls to AWS and Azure by service, operation and outcome (ok, or the error code).",
    ["cloud", "service", "operation", "outcome"],
)
THROTTLED = Counter(
    "defender_operator_cloud_throttled_total",
    "Calls AWS or Azure refused for throttling (after the SDK's own retries).",
    ["cloud", "service", "operation"],
)
DRIFT_REPAIRS = Counter(
    "defender_operator_drift_repairs_total",
    "Out-of-band changes found and repaired, by what drifted (stack, role, connector).",
    ["kind"],
)
OBJECTS = Gauge(
    "defender_operator_awsconnectors",
    "AWSConnector objects by the status of their Ready condition.",
    ["ready"],
)


def precreate() -> None:
    """Create every label value with 0, so the first increment is visible to increase() and rate()."""
    for result in RESULTS:
        RECONCILE_TOTAL.labels(CONTROLLER, result)
    for metric in (RECONCILE_ERRORS, TERMINAL_ERRORS, PANICS, ACTIVE_WORKERS):
        metric.labels(CONTROLLER)
    for queue in (QUEUE_DEPTH, QUEUE_ADDS):
        queue.labels(CONTROLLER)
    for state in ("True", "False", "Unknown"):
        OBJECTS.labels(state)


@contextmanager
def queued() -> Iterator[None]:
    """Around the wait for a worker slot."""
    started = time.monotonic()
    QUEUE_ADDS.labels(CONTROLLER).inc()
    QUEUE_DEPTH.labels(CONTROLLER).inc()
    try:
        yield
    finally:
        QUEUE_DEPTH.labels(CONTROLLER).dec()
        QUEUE_LATENCY.labels(CONTROLLER).observe(time.monotonic() - started)


@contextmanager
def working() -> Iterator[None]:
    """Around a pass that holds a worker slot."""
    started = time.monotonic()
    ACTIVE_WORKERS.labels(CONTROLLER).inc()
    try:
        yield
    finally:
        ACTIVE_WORKERS.labels(CONTROLLER).dec()
        elapsed = time.monotonic() - started
        RECONCILE_TIME.labels(CONTROLLER).observe(elapsed)
        WORK_DURATION.labels(CONTROLLER).observe(elapsed)


def count_result(result: str) -> None:
    """One pass ended: success, requeue_after, error (retryable) or terminal (Stalled)."""
    RECONCILE_TOTAL.labels(CONTROLLER, "error" if result in ("error", "terminal") else result).inc()
    if result in ("error", "terminal"):
        RECONCILE_ERRORS.labels(CONTROLLER).inc()
    if result == "terminal":
        TERMINAL_ERRORS.labels(CONTROLLER).inc()


def count_panic() -> None:
    PANICS.labels(CONTROLLER).inc()
    count_result("error")


def cloud_call(cloud: str, service: str, operation: str, outcome: str, throttled: bool = False) -> None:
    CLOUD_CALLS.labels(cloud, service, operation, outcome).inc()
    if throttled:
        THROTTLED.labels(cloud, service, operation).inc()
