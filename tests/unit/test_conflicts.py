"""Which of two objects onboarding the same AWS account into the same subscription goes ahead (Azure allows one
connector per pair); the other is Stalled with ConnectorConflict and writes nothing."""

import asyncio
from typing import Any

from defender_operator.handlers.objects import by_account
from defender_operator.reconcile.claims import conflict_with

SPEC = {
    "aws": {"accountId": "111122223333"},
    "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000001"},
}


def entry(
    name: str, created: str, uid: str, status: dict[str, Any] | None = None
) -> tuple[str, tuple[str, str]]:
    meta = {"creationTimestamp": created, "uid": uid}
    entries = asyncio.run(by_account(namespace="team", name=name, spec=SPEC, meta=meta, status=status or {}))
    ((key, value),) = entries.items()
    return key, value


def index(*entries: tuple[str, tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for key, value in entries:
        out.setdefault(key, []).append(value)
    return out


def test_the_older_object_goes_ahead() -> None:
    idx = index(entry("old", "2026-11-30T10:00:00Z", "ffff"), entry("new", "2026-11-30T10:00:01Z", "0000"))
    assert conflict_with(idx, SPEC, "team", "old") is None
    assert conflict_with(idx, SPEC, "team", "new") == "team/old"


def test_created_in_the_same_second_the_one_that_wrote_to_a_cloud_keeps_its_place() -> None:
    # creationTimestamp has one-second resolution; the uid alone would hand the account to the newcomer half the time
    wrote = {"firstCloudWrite": {"aws": "2026-11-30T10:00:00Z"}}
    idx = index(
        entry("first", "2026-11-30T10:00:00Z", "ffff", wrote), entry("second", "2026-11-30T10:00:00Z", "0000")
    )
    assert conflict_with(idx, SPEC, "team", "first") is None
    assert conflict_with(idx, SPEC, "team", "second") == "team/first"


def test_a_tie_is_broken_the_same_way_for_both() -> None:
    idx = index(entry("a", "2026-11-30T10:00:00Z", "2222"), entry("b", "2026-11-30T10:00:00Z", "1111"))
    assert conflict_with(idx, SPEC, "team", "b") is None
    assert conflict_with(idx, SPEC, "team", "a") == "team/b"


def test_another_subscription_is_no_conflict() -> None:
    other = {**SPEC, "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000002"}}
    idx = index(entry("a", "2026-11-30T10:00:00Z", "2222"))
    assert conflict_with(idx, other, "team", "b") is None


def test_a_subscription_id_in_another_case_is_the_same_onboarding() -> None:
    """Azure compares subscription ids without case; the CRD accepts either (issue 25, found by an adversarial
    review): two objects must not both onboard one account into one subscription by writing it differently."""
    from defender_operator.reconcile.claims import onboarding_key

    lower = {
        "aws": {"accountId": "111122223333"},
        "azure": {"subscriptionId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"},
    }
    upper = {
        "aws": {"accountId": "111122223333"},
        "azure": {"subscriptionId": "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"},
    }
    assert onboarding_key(lower) == onboarding_key(upper)
