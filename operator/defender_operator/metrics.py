"""Prometheus metrics, named and meant like controller-runtime's, so existing dashboards and alerts apply.

Meanings follow controller-runtime (pkg/internal/controller/metrics and pkg/internal/controller/controller.go,
reconcileHandler): ``reconcile_total`` by result (success, error, requeue, requeue_after), ``reconcile_errors_total``
for every pass that ended in an error, terminal ones included, ``terminal_reconcile_errors_total`` for those alone,
``reconcile_panics_total`` for passes that raised, ``active_workers`` only while a pass holds a worker slot, and
``reconcile_time_seconds`` from taking the slot to the end. The ``workqueue_*`` series (client-go's workqueue
metrics) describe the wait for a slot: depth, adds, retries, time queued, time worked, and the passes still running
(``unfinished_work_seconds``, ``longest_running_processor_seconds``). ``leader_election_master_status`` and
``rest_client_requests_total`` are client-go's. Every label value is created at start with 0, so ``increase()`` sees
the first error. docs/operations.md lists each series with alerts.

One series per object: ``defender_operator_awsconnector_ready_status`` (as cert-manager's
``certmanager_certificate_ready_status``), three per AWSConnector (one per status of Ready, 1 for the current one),
so alerts can name the object and be routed by namespace. Its cardinality is three times the number of objects
(3,000 series for 1,000 objects); the series go with the object.
"""

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

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
READY_STATUS = Gauge(
    "defender_operator_awsconnector_ready_status",
    "The Ready condition of each AWSConnector: 1 for its current status, 0 for the other two.",
    ["namespace", "name", "account", "condition"],
)
CATALOGS = Gauge(
    "defender_operator_awsconnector_catalogs",
    "AWSConnectors by the IAM catalog their AWS side was last written with (none: not yet Ready with any), and "
    "whether that is the catalog this operator runs.",
    ["catalog", "current"],
)
ROLLOUT_HALTED = Gauge(
    "defender_operator_catalog_rollout_halted",
    "1 while the rollout of the catalog this operator runs is halted by an object whose update to it failed.",
)
LEADER = Gauge(
    "leader_election_master_status", "1 while this process leads (acts), 0 while it stands by.", ["name"]
)
RETRIES = Counter("workqueue_retries_total", "Passes retried after an error, with backoff.", ["name"])
REST_REQUESTS = Counter(
    "rest_client_requests_total",
    "Requests of the operator's own client to the Kubernetes API server, by status code, method and host.",
    ["code", "method", "host"],
)
_running: dict[int, float] = {}  # pass -> when it took its slot (monotonic)
_running_lock = threading.Lock()
_tokens = itertools.count()


def _unfinished() -> float:
    now = time.monotonic()
    with _running_lock:
        return sum(now - started for started in _running.values())


def _longest() -> float:
    now = time.monotonic()
    with _running_lock:
        return max((now - started for started in _running.values()), default=0.0)


UNFINISHED = Gauge(
    "workqueue_unfinished_work_seconds",
    "Seconds the passes in progress have been running, together (a stuck pass makes it grow).",
    ["name"],
)
LONGEST = Gauge(
    "workqueue_longest_running_processor_seconds", "Seconds the longest pass in progress has run.", ["name"]
)
UNFINISHED.labels(CONTROLLER).set_function(_unfinished)
LONGEST.labels(CONTROLLER).set_function(_longest)
READY_STATES = ("True", "False", "Unknown")


def set_ready(namespace: str, name: str, account: str, status: str) -> None:
    for state in READY_STATES:
        READY_STATUS.labels(namespace, name, account, state).set(1 if state == status else 0)


def forget_object(namespace: str, name: str, account: str) -> None:
    for state in READY_STATES:
        with suppress(KeyError):
            READY_STATUS.remove(namespace, name, account, state)


def count_request(code: str, method: str, host: str) -> None:
    REST_REQUESTS.labels(code, method, host).inc()


def precreate() -> None:
    """Create every label value with 0, so the first increment is visible to increase() and rate()."""
    for result in RESULTS:
        RECONCILE_TOTAL.labels(CONTROLLER, result)
    for metric in (RECONCILE_ERRORS, TERMINAL_ERRORS, PANICS, ACTIVE_WORKERS):
        metric.labels(CONTROLLER)
    for queue in (QUEUE_DEPTH, QUEUE_ADDS):
        queue.labels(CONTROLLER)
    for state in READY_STATES:
        OBJECTS.labels(state)
    RETRIES.labels(CONTROLLER)


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
    token = next(_tokens)
    with _running_lock:
        _running[token] = started
    ACTIVE_WORKERS.labels(CONTROLLER).inc()
    try:
        yield
    finally:
        with _running_lock:
            del _running[token]
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
