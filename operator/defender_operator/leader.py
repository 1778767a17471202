"""Leader election on a coordination.k8s.io Lease, the way client-go's leaderelection package does it, so that with
several replicas exactly one acts and a standby takes over when it dies.

A candidate takes the Lease when it is free or expired, with the resourceVersion it read (a concurrent taker loses
with 409), then renews it every ``retry_period``. Expired is judged as client-go judges it, on the candidate's own
clock: the Lease has not changed for ``leaseDurationSeconds`` since this process last saw it change. Comparing the
holder's renewTime with the local time would let a standby whose clock runs ahead of the leader's (or a leader whose
clock runs behind) take a Lease that is being renewed: two leaders. The leader that
cannot renew within ``renew_deadline`` (shorter than the lease duration) stops the whole process at once: worker
threads cannot be cancelled, and a standby may take the Lease once it expires, so the old leader must be gone by
then (controller-runtime exits on "leader election lost" for the same reason). Every kind of failure counts, and no
renewal may outlast the deadline: an unreachable API server makes the Kubernetes client raise urllib3's errors (not
``OSError``), and a silent one makes a request without a timeout wait for ever; either used to end the renewals
while the process went on reconciling, so a standby would have taken over beside it. On a clean shutdown the leader
releases the Lease, so a rolling update hands over without waiting for it to expire.

Kopf's own peering is not used: it pauses lower-priority operators when it sees a higher-priority peer, which does
not guarantee that two never act at once (a partitioned operator keeps working), while a Lease with a renew deadline
does.
"""

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .kube import one_line

log = logging.getLogger("defender_operator.leader")


def _now() -> datetime:
    return datetime.now(UTC)


class LeadershipLost(Exception):
    """The Lease was not renewed within the renew deadline."""


def identity() -> str:
    """Unique per process: the pod's name (POD_NAME, from the downward API; else the hostname) and a random suffix,
    as client-go's examples use."""
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


class LeaderElector:
    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespace: str,
        lease_duration: float,
        renew_deadline: float,
        retry_period: float,
        holder: str | None = None,
        clock: "Callable[[], datetime]" = lambda: _now(),
    ) -> None:
        """``clock``: the wall time written as acquireTime and renewTime (for information only: nobody's decision
        depends on it)."""
        assert renew_deadline < lease_duration, "the leader must give up before a standby may take over"
        self.clock = clock
        self._seen: tuple[object, ...] | None = None  # the Lease record as last read
        self._seen_at = 0.0  # when it last changed, on this process's monotonic clock
        self.leases = client.CoordinationV1Api(api)
        self.name, self.namespace, self.holder = name, namespace, holder or identity()
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )

    def _try(self, timeout: float | None = None) -> bool:
        """Take or renew the Lease once; True when this process holds it now. ``timeout`` bounds each request (the
        Kubernetes client waits for ever by default)."""
        now = self.clock()
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace, _request_timeout=timeout)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, now, 0),
            )
            try:
                self.leases.create_namespaced_lease(self.namespace, body, _request_timeout=timeout)
            except ApiException as exc:
                if exc.status == 409:
                    return False  # someone else created it first
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        mine = spec.holder_identity == self.holder
        duration = spec.lease_duration_seconds or self.lease_duration
        record = (spec.holder_identity, spec.renew_time, spec.acquire_time, spec.lease_transitions)
        if record != self._seen:
            self._seen, self._seen_at = record, time.monotonic()
        expired = time.monotonic() > self._seen_at + duration
        if not mine and spec.holder_identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(spec.acquire_time if mine and spec.acquire_time else now, now, transitions)
        try:
            self.leases.replace_namespaced_lease(  # carries resourceVersion
                self.name, self.namespace, lease, _request_timeout=timeout
            )
        except ApiException as exc:
            if exc.status == 409:
                return False  # changed since we read it: another candidate took or renewed it
            raise
        return True

    def _spec(self, acquired: datetime, renewed: datetime, transitions: int) -> client.V1LeaseSpec:
        return client.V1LeaseSpec(
            holder_identity=self.holder,
            lease_duration_seconds=int(self.lease_duration),
            acquire_time=acquired,
            renew_time=renewed,
            lease_transitions=transitions,
        )

    async def acquire(self) -> None:
        """Wait until this process leads."""
        log.info(
            "waiting for the lease", extra={"lease": f"{self.namespace}/{self.name}", "holder": self.holder}
        )
        while True:
            try:
                if await asyncio.to_thread(self._try, self.renew_deadline):
                    log.info(
                        "leading", extra={"lease": f"{self.namespace}/{self.name}", "holder": self.holder}
                    )
                    return
            except Exception as exc:  # any failure: try again (urllib3's are not OSErrors)
                log.warning("lease unavailable", extra={"error": one_line(exc)})
            await asyncio.sleep(self.retry_period)

    def keep(self, stopped: threading.Event) -> None:
        """Renew until ``stopped`` is set; raise :class:`LeadershipLost` as soon as a renewal has not succeeded within
        the deadline, whatever the reason: a refusal, another holder, an error of any kind (an unreachable API
        server raises urllib3's errors, not ``OSError``), or no answer at all (no request outlives the deadline, as
        client-go bounds a renewal by it).

        It runs on threads of its own, never on the event loop: a loop kept busy for seconds by work that is not
        wrong (a start-up's imports, a backlog's listing, on a busy machine) would miss renewals, and the leader
        would exit. In CI both replicas of a test lost their Lease that way while starting, one after the other, as
        client-go's renewals run in a goroutine of their own for the same reason."""
        attempts = concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lease-renewal")
        try:
            last = time.monotonic()
            reason = "the renew deadline passed"
            while not stopped.wait(self.retry_period):
                left = self.renew_deadline - (time.monotonic() - last)
                if left > 0:
                    try:
                        renewed = attempts.submit(self._try, left).result(timeout=left)
                    except TimeoutError:
                        reason = "the API server did not answer within the renew deadline"
                    except Exception as exc:  # any failure to renew is one
                        reason = one_line(exc)
                    else:
                        if not renewed:
                            raise LeadershipLost("another process holds the lease")
                        last = time.monotonic()
                        continue
                if time.monotonic() - last > self.renew_deadline and not stopped.is_set():
                    raise LeadershipLost(reason)
        finally:
            attempts.shutdown(wait=False)  # an attempt that never answers must not hold the exit up

    def keep_or_exit(self) -> Callable[[], None]:
        """Start :meth:`keep` on a thread of its own, stopping the whole process at once when leadership is lost
        (worker threads cannot be cancelled, and a standby may take the Lease once it expires). Returns what stops
        the renewals, waiting for the one under way, so that a release after it is not undone by it."""
        stopped = threading.Event()

        def renew() -> None:
            try:
                self.keep(stopped)
            except BaseException as exc:  # renewals that end for any reason but a stop end the leadership
                if stopped.is_set():
                    return
                reason = str(exc) if isinstance(exc, LeadershipLost) else one_line(exc)
                log.error("leader election lost; exiting", extra={"reason": reason, "holder": self.holder})
                logging.shutdown()
                os._exit(1)

        thread = threading.Thread(target=renew, name="lease-keeper", daemon=True)
        thread.start()

        def stop() -> None:
            stopped.set()
            thread.join(self.renew_deadline)

        return stop

    def release(self) -> None:
        """On a clean shutdown: let a standby take over at once (renewTime in the past, holder cleared)."""
        try:
            lease = self.leases.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.renew_deadline
            )
            if lease.spec is None or lease.spec.holder_identity != self.holder:
                return
            lease.spec.holder_identity = None  # a holder-less Lease is free to take at once
            lease.spec.renew_time = self.clock()
            self.leases.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.renew_deadline
            )
        except Exception as exc:  # best effort: the Lease expires anyway
            log.warning("could not release the lease", extra={"error": one_line(exc)})
