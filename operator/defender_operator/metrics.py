"""Prometheus metrics, named like controller-runtime's so existing dashboards and alerts apply.

docs/operations.md lists each series with suggested alerts.
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


@contextmanager
def timed_reconcile() -> Iterator[None]:
    started = time.monotonic()
    ACTIVE_WORKERS.labels(CONTROLLER).inc()
    try:
        yield
    finally:
        ACTIVE_WORKERS.labels(CONTROLLER).dec()
        RECONCILE_TIME.labels(CONTROLLER).observe(time.monotonic() - started)


def cloud_call(cloud: str, service: str, operation: str, outcome: str, throttled: bool = False) -> None:
    CLOUD_CALLS.labels(cloud, service, operation, outcome).inc()
    if throttled:
        THROTTLED.labels(cloud, service, operation).inc()
