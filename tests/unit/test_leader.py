"""The leader gives up its lease within the renew deadline whatever keeps it from renewing, so that it is gone before
a standby may take over (two leaders would reconcile the same objects at once). Real sockets and the real
Kubernetes client: an API server that refuses connections, and one that accepts them and never answers."""

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from kubernetes import client

from defender_operator.leader import LeaderElector, LeadershipLost

RENEW_DEADLINE = 1.0
LEASE_DURATION = (
    4.0  # what matters: lost before a standby could take the lease over (slack for a busy machine)
)


def elector(port: int) -> LeaderElector:
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.verify_ssl = False
    return LeaderElector(
        client.ApiClient(configuration),
        "defender-operator",
        "defender-operator",
        lease_duration=LEASE_DURATION,
        renew_deadline=RENEW_DEADLINE,
        retry_period=0.2,
    )


def lost_after(leader: LeaderElector) -> tuple[float, str]:
    """Seconds until ``keep`` gave up, and why (at most 10 s: a keep that never returns fails the test)."""
    stopped = threading.Event()
    timer = threading.Timer(10, stopped.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(LeadershipLost) as lost:
            leader.keep(stopped)
    finally:
        timer.cancel()
    return time.monotonic() - started, str(lost.value)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens there once the socket is closed


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A server that accepts connections (the kernel completes the handshake) and never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_an_unreachable_api_server_loses_the_lease_within_the_deadline(closed_port: int) -> None:
    seconds, reason = lost_after(elector(closed_port))
    assert seconds < LEASE_DURATION
    assert "MaxRetryError" in reason  # urllib3's error, which is no OSError


def test_an_api_server_that_never_answers_loses_the_lease_within_the_deadline(silent_port: int) -> None:
    seconds, reason = lost_after(elector(silent_port))
    assert seconds < LEASE_DURATION
    assert reason
