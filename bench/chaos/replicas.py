"""The operator's processes in a schedule: one, or several in leader election on one Lease, as the chart's Deployment
runs them (two replicas, the standby Ready too, only the leader acting).

A replica killed is started again before the next step, as its ReplicaSet would. Faults go to every replica's proxy
(whichever leads meets them); a kill right after a write is armed on the leader's. The judge reads every replica's
log: no unexpected exception, no secret, and never two replicas acting at once (:func:`overlaps`).
"""

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.support.operator import OperatorProcess

# Leader election as the chaos operators run it: short enough that a fail-over fits a schedule, with room for a busy
# machine (a renewal may take the renew deadline before the leader gives up; the Lease outlives it).
LEASE_ENV = {
    "DEFENDER_OPERATOR_LEADER_ELECTION": "true",
    "DEFENDER_OPERATOR_LEASE_DURATION_SECONDS": "8",
    "DEFENDER_OPERATOR_RENEW_DEADLINE_SECONDS": "6",
    "DEFENDER_OPERATOR_RETRY_PERIOD_SECONDS": "0.5",
}
# A standby leads within this of the leader's death (the Lease's 8 s, and a busy machine).
FAILOVER_SECONDS = 60.0
# The pace of a schedule: a catalog rollout in batches of two (a schedule has at most four objects), half a second
# between them (docs/catalog-rollout.md); a deleted policy's grace (the chart's annotation) 3 s instead of 10, as
# long as a Helm upgrade takes to make it again in the sandbox many times over; the claim grace 4 s instead of 10
# minutes, so that objects of one account and subscription whose holder wrote nothing (its grant withdrawn, its Secret
# deleted, paused) try at once within a schedule, and the claim book decides which writes (invariant 2).
PACE_ENV = {
    "DEFENDER_OPERATOR_CATALOG_ROLLOUT_BATCH": "2",
    "DEFENDER_OPERATOR_CATALOG_ROLLOUT_PAUSE_SECONDS": "0.5",
    "DEFENDER_OPERATOR_POLICY_GRACE_SECONDS": "3",
    "DEFENDER_OPERATOR_CLAIM_GRACE_SECONDS": "4",
}
GRACE_SECONDS = 30.0  # a pod's terminationGracePeriodSeconds (the chart keeps Kubernetes' default)
RUN_STARTS = ("starting", "waiting for the lease")  # the first lines of a process's run, before it may lead


@dataclass
class Replicas:
    processes: list[OperatorProcess]
    slow_stops: int = (
        0  # replicas a rolling update asked to stop that outlived their grace period (then killed)
    )
    _marks: list[int] = field(default_factory=list)
    _leading: list[datetime | None] = field(default_factory=list)

    @property
    def elected(self) -> bool:
        return len(self.processes) > 1

    def ensure(self) -> None:
        for process in self.processes:
            if process.record is None or not process.record.alive():
                process.start()

    def leader(self, timeout: float = FAILOVER_SECONDS) -> OperatorProcess | None:
        """The replica that leads, by its ``leader_election_master_status`` gauge; None if none leads within
        ``timeout``."""
        if not self.elected:
            return self.processes[0]
        deadline = time.monotonic() + timeout
        while True:
            for process in self.processes:
                if process.record is not None and process.record.alive() and _leads(process):
                    return process
            if time.monotonic() > deadline:
                return None
            time.sleep(0.5)

    def kill(self, restart: bool = True) -> OperatorProcess | None:
        """SIGKILL the leader (a node dies); ``restart``: its replacement starts at once. Returns the killed one."""
        leader = self.leader()
        if leader is not None:
            leader.kill()
            if restart:
                leader.start()
        return leader

    def failover(self) -> str | None:
        """The leader dies and a standby must take over before its replacement starts: None, or what went wrong."""
        killed = self.kill(restart=False)
        if killed is None or not self.elected:
            self.ensure()
            return None
        successor = self.leader(FAILOVER_SECONDS)  # the killed one is dead: only a standby can lead now
        killed.start()
        if successor is None:
            return f"no standby took over within {FAILOVER_SECONDS:.0f}s of the leader's death"
        return None

    def roll(self, env: dict[str, str | None], leader_first: bool = False) -> list[str]:
        """A rolling update of the Deployment to a release that runs with ``env`` (a value of None: the variable
        unset): each replica in turn is asked to stop (SIGTERM), starts again changed, and must be Ready before the
        next goes, as ``maxUnavailable: 0`` has it. The ReplicaSet picks the pods to stop blind to leadership, so
        the leader goes first or last (``leader_first``): first, an old standby takes over and hands over again.
        What went wrong, if anything: a replica not Ready after it started (the rollout stops there, as a
        Deployment's does), or none leading afterwards. A replica that outlives its grace period is killed, as the
        kubelet does (its Lease then expires), and counted in ``slow_stops``."""
        leader = self.leader()
        others = [p for p in self.processes if p is not leader]
        order = (
            ([leader] if leader else []) + others if leader_first else others + ([leader] if leader else [])
        )
        for process in order:
            changed = {**(process.extra_env or {}), **env}
            process.extra_env = {k: v for k, v in changed.items() if v is not None}
            if process.record is not None and process.record.alive() and not process.terminate(GRACE_SECONDS):
                self.slow_stops += 1
            process.start(wait_ready=False)
            deadline = time.monotonic() + FAILOVER_SECONDS
            while not process.ready() and time.monotonic() < deadline:
                time.sleep(0.2)
            if not process.ready():
                return [
                    f"replicas: a replica was not Ready {FAILOVER_SECONDS:.0f}s after a rolling update started it"
                ]
        if self.leader(FAILOVER_SECONDS) is None:
            return [f"replicas: none led within {FAILOVER_SECONDS:.0f}s of a rolling update"]
        return []

    def kill_after(self, cloud: str, pattern: str, method: str = "*") -> None:
        leader = self.leader()
        if leader is not None:
            leader.kill_after(cloud, pattern, method)

    def inject_aws_fault(self, **rule: Any) -> None:
        for process in self.processes:
            process.inject_aws_fault(**rule)

    def inject_arm_fault(self, **rule: Any) -> None:
        for process in self.processes:
            process.inject_arm_fault(**rule)

    def clear_faults(self) -> None:
        for process in self.processes:
            process.clear_aws_faults()
            process.clear_arm_faults()

    def mark(self) -> None:
        """Where the schedule's part of every log begins, and which replica leads then (its "leading" line is in
        an earlier part)."""
        self._marks = [len(process.log()) for process in self.processes]
        now = datetime.now(UTC)
        self._leading = [now if self.elected and _leads(process) else None for process in self.processes]

    def overlaps(self) -> list[str]:
        """:func:`overlaps` over the schedule's part of every log."""
        running = [process.record is not None and process.record.alive() for process in self.processes]
        return overlaps(self.logs(), self._leading, running)

    def logs(self) -> list[str]:
        """Every replica's log since :meth:`mark`."""
        return [process.log()[mark:] for process, mark in zip(self.processes, self._marks, strict=True)]


def _leads(process: OperatorProcess) -> bool:
    try:
        return any(
            line.startswith("leader_election_master_status") and line.endswith(" 1.0")
            for line in process.metrics().splitlines()
        )
    except OSError:
        return False


def overlaps(
    logs: list[str], leading: list[datetime | None] | None = None, running: list[bool] | None = None
) -> list[str]:
    """What a replica did to an object while another led. Each run of a process begins with "starting", then
    "waiting for the lease"; from its "leading" (or, for the replica that led when the logs begin, from then:
    ``leading``) to its last line it may act, or to now while it still runs (``running``); a line about an object
    (any line with an ``object`` field: a pass, a cleanup, Kopf's own) logged inside another replica's such span is
    two acting at once. SIGKILL ends a run at its last line; a leader that cannot renew exits before its Lease
    expires, so a successor's span never begins before it."""
    now = datetime.now(UTC)
    spans: list[tuple[int, datetime, datetime]] = []
    acts: list[tuple[int, datetime, str]] = []
    for replica, log in enumerate(logs):
        lead = leading[replica] if leading else None
        last = lead
        for line in log.splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            at = datetime.fromisoformat(str(record["time"]).replace("Z", "+00:00"))
            if record.get("message") in RUN_STARTS:
                if lead is not None and last is not None:
                    spans.append((replica, lead, last))
                lead = None
            elif record.get("message") == "leading":
                lead = at
            elif "object" in record:
                acts.append((replica, at, str(record["object"])))
            last = at
        if lead is not None and last is not None:
            spans.append((replica, lead, now if running and running[replica] else last))
    return [
        f"replicas: replica {replica} acted on {obj} at {at.isoformat()} while replica {other} led "
        f"({start.isoformat()} to {end.isoformat()})"
        for replica, at, obj in acts
        for other, start, end in spans
        if other != replica and start < at < end
    ]
