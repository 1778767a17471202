"""Leader election on a coordination.k8s.io Lease, the way client-go's leaderelection package does it, so that with
several replicas exactly one acts and a standby takes over when it dies.

A candidate takes the Lease when it is free or expired (renewTime + leaseDurationSeconds in the past), with the
resourceVersion it read (a concurrent taker loses with 409), then renews it every ``retry_period``. The leader that
cannot renew within ``renew_deadline`` (shorter than the lease duration) stops the whole process at once: worker
threads cannot be cancelled, and a standby may take the Lease once it expires, so the old leader must be gone by
then (controller-runtime exits on "leader election lost" for the same reason). On a clean shutdown the leader
releases the Lease, so a rolling update hands over without waiting for it to expire.

Kopf's own peering is not used: it pauses lower-priority operators when it sees a higher-priority peer, which does
not guarantee that two never act at once (a partitioned operator keeps working), while a Lease with a renew deadline
does.
"""

import asyncio
import logging
import os
import socket
import time
import uuid
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("defender_operator.leader")


def _now() -> datetime:
    return datetime.now(UTC)


def identity() -> str:
    """Unique per process: the pod's name (hostname) and a random suffix, as client-go's examples use."""
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


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
    ) -> None:
        assert renew_deadline < lease_duration, "the leader must give up before a standby may take over"
        self.leases = client.CoordinationV1Api(api)
        self.name, self.namespace, self.holder = name, namespace, holder or identity()
        self.lease_duration, self.renew_deadline, self.retry_period = (
            lease_duration,
            renew_deadline,
            retry_period,
        )

    def _try(self) -> bool:
        """Take or renew the Lease once; True when this process holds it now."""
        now = _now()
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            body = client.V1Lease(
                metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
                spec=self._spec(now, now, 0),
            )
            try:
                self.leases.create_namespaced_lease(self.namespace, body)
            except ApiException as exc:
                if exc.status == 409:
                    return False  # someone else created it first
                raise
            return True
        spec = lease.spec or client.V1LeaseSpec()
        mine = spec.holder_identity == self.holder
        renewed = spec.renew_time or spec.acquire_time
        duration = spec.lease_duration_seconds or self.lease_duration
        expired = renewed is None or renewed + timedelta(seconds=duration) < now
        if not mine and spec.holder_identity and not expired:
            return False
        transitions = (spec.lease_transitions or 0) + (0 if mine else 1)
        lease.spec = self._spec(spec.acquire_time if mine and spec.acquire_time else now, now, transitions)
        try:
            self.leases.replace_namespaced_lease(self.name, self.namespace, lease)  # carries resourceVersion
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
                if await asyncio.to_thread(self._try):
                    log.info(
                        "leading", extra={"lease": f"{self.namespace}/{self.name}", "holder": self.holder}
                    )
                    return
            except (ApiException, OSError) as exc:
                log.warning("lease unavailable", extra={"error": str(exc).splitlines()[0]})
            await asyncio.sleep(self.retry_period)

    async def keep(self) -> None:
        """Renew until the process ends; leave at once when a renewal does not succeed within the deadline."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.retry_period)
            try:
                if await asyncio.to_thread(self._try):
                    last = time.monotonic()
                    continue
                reason = "another process holds the lease"
            except (ApiException, OSError) as exc:
                reason = str(exc).splitlines()[0]
            if time.monotonic() - last > self.renew_deadline or reason == "another process holds the lease":
                log.error("leader election lost; exiting", extra={"reason": reason, "holder": self.holder})
                logging.shutdown()
                os._exit(1)

    def release(self) -> None:
        """On a clean shutdown: let a standby take over at once (renewTime in the past, holder cleared)."""
        try:
            lease = self.leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.holder:
                return
            lease.spec.holder_identity = None
            lease.spec.renew_time = _now() - timedelta(seconds=self.lease_duration + 1)
            self.leases.replace_namespaced_lease(self.name, self.namespace, lease)
        except (ApiException, OSError) as exc:
            log.warning("could not release the lease", extra={"error": str(exc).splitlines()[0]})
