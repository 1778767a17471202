"""The operator asks discovery again while Kopf serves not all of its resources (served.py), with Kopf's real
registry and insights; only discovery's answers are scripted (what an API server that has just started says). The
whole path, against a real API server, is test_safety.py's
test_an_operator_started_before_discovery_lists_its_resources_serves_them_once_it_does."""

import asyncio

import kopf
import pytest

from defender_operator import handlers, served
from defender_operator.api.names import GROUP, VERSION
from defender_operator.served import OWN_PLURALS, Insights, keep_served, unserved

VERBS = frozenset({"list", "watch", "patch", "get", "create", "update", "delete"})


def resource(plural: str) -> kopf.Resource:
    return kopf.Resource(GROUP, VERSION, plural, namespaced=plural == "awsconnectors", verbs=VERBS)


def run(
    monkeypatch: pytest.MonkeyPatch, answers: list[set[str] | Exception], watched: set[str]
) -> list[set[str]]:
    """keep_served over a first scan that left ``watched`` served, then discovery answering ``answers`` in turn:
    what Kopf served before each answer, and at the end."""
    assert handlers.objects.reconcile_loop is not None  # the handlers register themselves on import
    pending = iter(answers)
    insights = Insights()
    states: list[set[str]] = []

    async def scan(**_: object) -> list[kopf.Resource]:
        states.append(OWN_PLURALS - unserved(insights))
        answer = next(pending)
        if isinstance(answer, Exception):
            raise answer
        return [resource(p) for p in answer]

    async def main() -> None:
        insights.watched_resources.update(resource(p) for p in watched)
        insights.ready_resources.set()
        await asyncio.wait_for(
            keep_served(insights, kopf.OperatorSettings(), kopf.get_default_registry()), 10
        )

    monkeypatch.setattr(served, "scan_resources", scan)
    monkeypatch.setattr(served, "FIRST_RESCAN_SECONDS", 0.0)
    asyncio.run(main())
    return [*states, OWN_PLURALS - unserved(insights)]


def test_discovery_that_lists_the_resources_later_has_them_served(monkeypatch: pytest.MonkeyPatch) -> None:
    states = run(
        monkeypatch, [set(), TimeoutError("the API server is away"), set(OWN_PLURALS)], watched=set()
    )
    assert states == [set(), set(), set(), set(OWN_PLURALS)]


def test_a_scan_that_meets_the_gap_again_takes_no_served_kind_away(monkeypatch: pytest.MonkeyPatch) -> None:
    states = run(monkeypatch, [set(), {"awsconnectors"}, set(OWN_PLURALS)], watched={"awsconnectors"})
    assert states == [{"awsconnectors"}, {"awsconnectors"}, {"awsconnectors"}, set(OWN_PLURALS)]


def test_nothing_is_asked_when_everything_is_served(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run(monkeypatch, [], watched=set(OWN_PLURALS)) == [set(OWN_PLURALS)]
