"""Leader election does not depend on the replicas' clocks agreeing (issue 25, low): a leader whose clock runs a
minute behind keeps its Lease against a standby on the sandbox's real API server, as client-go judges expiry by when
a candidate last saw the Lease change, on its own clock; a released Lease is taken at once; and a leader whose event
loop is busy for longer than its renew deadline keeps renewing."""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from defender_operator.leader import LeaderElector
from tests.support.kube import api_client, wait_for

pytestmark = pytest.mark.integration

LEASE_SECONDS = 2.0


def elector(
    kubeconfig: Path, name: str, holder: str, behind: float = 0.0, lease_seconds: float = LEASE_SECONDS
) -> LeaderElector:
    return LeaderElector(
        api_client(kubeconfig),
        name,
        "default",
        lease_duration=lease_seconds,
        renew_deadline=lease_seconds / 2,
        retry_period=0.2,
        holder=holder,
        clock=lambda: datetime.now(UTC) - timedelta(seconds=behind),
    )


def test_a_leader_whose_clock_is_behind_keeps_its_lease_while_it_renews(kubeconfig: Path) -> None:
    name = f"clocks-{uuid.uuid4().hex[:6]}"
    leader = elector(kubeconfig, name, "leader", behind=60)  # every renewTime it writes is a minute old
    standby = elector(kubeconfig, name, "standby")
    assert leader._try(5)
    watched_until = time.monotonic() + 3 * LEASE_SECONDS
    while time.monotonic() < watched_until:  # the leader renews, the standby tries, for three lease durations
        assert leader._try(5), "the leader lost a Lease it was renewing"
        assert not standby._try(5), "the standby took a Lease that was being renewed"
        time.sleep(0.2)
    # The leader stops renewing: the standby takes over once it has seen no change for a lease duration.
    wait_for(lambda: standby._try(5), 5 * LEASE_SECONDS, "the standby to take the expired Lease")
    assert not leader._try(5)


def test_a_released_lease_is_taken_at_once(kubeconfig: Path) -> None:
    name = f"release-{uuid.uuid4().hex[:6]}"
    leader, standby = elector(kubeconfig, name, "leader"), elector(kubeconfig, name, "standby")
    assert leader._try(5) and not standby._try(5)
    leader.release()
    assert standby._try(5)


def test_a_leader_whose_event_loop_is_busy_for_longer_than_its_renew_deadline_keeps_its_lease(
    kubeconfig: Path,
) -> None:
    """Seen in CI: both replicas of a test lost their Lease while starting on a busy machine, one after the other
    (the renewals waited for an event loop busy with a start-up's imports). A busy loop is not a reason to give up:
    the renewals run on threads of their own. Generous times here, so that only a loop-bound renewal can fail."""
    lease_seconds = 6.0
    name = f"busy-{uuid.uuid4().hex[:6]}"
    leader = elector(kubeconfig, name, "leader", lease_seconds=lease_seconds)
    standby = elector(kubeconfig, name, "standby", lease_seconds=lease_seconds)
    assert leader._try(5)

    async def busy() -> None:
        stop = leader.keep_or_exit()  # a leader that lost its Lease would end this process: the test with it
        try:
            until = time.monotonic() + 3 * lease_seconds
            while (
                time.monotonic() < until
            ):  # the loop never yields: nothing of it runs for three lease durations
                assert not standby._try(5), "the standby took a Lease whose leader's loop was busy"
                time.sleep(0.5)
        finally:
            stop()

    asyncio.run(busy())
    assert not standby._try(5)
