"""Which of two objects onboarding the same AWS account into the same subscription goes ahead (Azure allows one
connector per pair); the other is Stalled with ConnectorConflict and writes nothing. An object that never writes
holds the pair only for the claim grace; whoever then tries, only one writes (the claim book)."""

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from defender_operator.handlers.indexes import by_account
from defender_operator.reconcile.claims import (
    Claim,
    ClaimBook,
    Ticket,
    claims_of,
    conflict_with,
    onboarding_key,
)

SPEC = {
    "aws": {"accountId": "111122223333"},
    "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000001"},
}
KEY = onboarding_key(SPEC)
GRACE = 600.0
T0 = datetime(2026, 11, 30, 10, 0, 0, tzinfo=UTC)
WROTE = {"firstCloudWrite": {"aws": "2026-11-30T10:00:00Z"}}
READY = {"conditions": [{"type": "Ready", "status": "True"}]}


def entry(name: str, created: str, uid: str, status: dict[str, Any] | None = None) -> tuple[str, Claim]:
    meta = {"creationTimestamp": created, "uid": uid}
    entries = by_account("team", name, uid, meta, SPEC, status or {})
    ((key, value),) = entries.items()
    return key, value


def index(*entries: tuple[str, Claim]) -> dict[str, list[Claim]]:
    out: dict[str, list[Claim]] = {}
    for key, value in entries:
        out.setdefault(key, []).append(value)
    return out


def holder(
    idx: dict[str, list[Claim]], uid: str, at: datetime = T0, spec: dict[str, Any] = SPEC
) -> str | None:
    conflict = conflict_with(idx, spec, uid, at, GRACE)
    return conflict.holder if conflict is not None else None


def test_the_older_object_goes_ahead() -> None:
    idx = index(entry("old", "2026-11-30T10:00:00Z", "ffff"), entry("new", "2026-11-30T10:00:01Z", "0000"))
    assert holder(idx, "ffff") is None
    assert holder(idx, "0000") == "team/old"


def test_created_in_the_same_second_the_one_that_wrote_to_a_cloud_keeps_its_place() -> None:
    # creationTimestamp has one-second resolution; the uid alone would hand the account to the newcomer half the time
    idx = index(
        entry("first", "2026-11-30T10:00:00Z", "ffff", WROTE), entry("second", "2026-11-30T10:00:00Z", "0000")
    )
    assert holder(idx, "ffff") is None
    assert holder(idx, "0000") == "team/first"


def test_a_tie_is_broken_the_same_way_for_both() -> None:
    idx = index(entry("a", "2026-11-30T10:00:00Z", "2222"), entry("b", "2026-11-30T10:00:00Z", "1111"))
    assert holder(idx, "1111") is None
    assert holder(idx, "2222") == "team/b"


def test_another_subscription_is_no_conflict() -> None:
    other = {**SPEC, "azure": {"subscriptionId": "00000000-0000-0000-0000-000000000002"}}
    idx = index(entry("a", "2026-11-30T10:00:00Z", "2222"))
    assert holder(idx, "3333", spec=other) is None


def test_a_subscription_id_in_another_case_is_the_same_onboarding() -> None:
    """Azure compares subscription ids without case; the CRD accepts either (issue 25, found by an adversarial
    review): two objects must not both onboard one account into one subscription by writing it differently."""
    lower = {
        "aws": {"accountId": "111122223333"},
        "azure": {"subscriptionId": "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"},
    }
    upper = {
        "aws": {"accountId": "111122223333"},
        "azure": {"subscriptionId": "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE"},
    }
    assert onboarding_key(lower) == onboarding_key(upper)


# --- the claim grace: an object that never writes does not hold the account for ever -------------------------------


def test_an_object_that_wrote_nothing_holds_the_account_only_for_the_grace() -> None:
    """A tenant's object for an account it does not own, with credentials that never work, was created first: the
    team granted the account waits the grace, told when to look again, and then goes ahead."""
    idx = index(
        entry(
            "squat", "2026-11-30T10:00:00Z", "aaaa", {"conditions": [{"type": "Stalled", "status": "True"}]}
        ),
        entry("granted", "2026-11-30T10:00:05Z", "bbbb"),
    )
    early = conflict_with(idx, SPEC, "bbbb", T0 + timedelta(seconds=100), GRACE)
    assert early is not None and early.holder == "team/squat" and early.lapses_in == GRACE - 100
    assert holder(idx, "bbbb", T0 + timedelta(seconds=GRACE)) is None
    # the older object never counts itself out: it goes on trying too, and the claim book decides who writes
    assert holder(idx, "aaaa", T0 + timedelta(seconds=GRACE)) is None


def test_an_object_that_wrote_or_is_ready_never_lapses() -> None:
    for status in (WROTE, READY):
        idx = index(
            entry("first", "2026-11-30T10:00:00Z", "aaaa", status),
            entry("next", "2026-11-30T10:00:05Z", "bbbb"),
        )
        late = conflict_with(idx, SPEC, "bbbb", T0 + timedelta(days=30), GRACE)
        assert late is not None and late.holder == "team/first" and late.lapses_in is None


def test_among_lapsed_objects_and_newer_ones_the_one_still_in_its_grace_goes_first() -> None:
    idx = index(
        entry("squat", "2026-11-30T10:00:00Z", "aaaa"),
        entry("granted", "2026-11-30T10:20:00Z", "bbbb"),
        entry("third", "2026-11-30T10:20:01Z", "cccc"),
    )
    at = T0 + timedelta(minutes=21)
    assert holder(idx, "bbbb", at) is None
    assert holder(idx, "cccc", at) == "team/granted"


# --- the claim book: whoever tries, one writes ------------------------------------------------------------------------


def test_the_book_gives_an_onboarding_to_one_object_until_it_gives_it_back() -> None:
    book = ClaimBook()
    assert book.take(KEY, "aaaa", "a/one", ()) is None
    assert book.take(KEY, "aaaa", "a/one", ()) is None  # again: still its own
    assert book.take(KEY, "bbbb", "b/two", ()) == "a/one"
    book.release(KEY, "bbbb")  # not the holder: nothing changes
    assert book.take(KEY, "bbbb", "b/two", ()) == "a/one"
    book.release(KEY, "aaaa")  # its writes were all refused
    assert book.take(KEY, "bbbb", "b/two", ()) is None
    book.forget("bbbb")  # gone
    assert book.take(KEY, "cccc", "c/three", ()) is None


def test_the_book_refuses_when_another_objects_status_says_it_wrote() -> None:
    """Objects that wrote before this process started are in no book, only in their status (the index)."""
    idx = index(
        entry("first", "2026-11-30T10:00:00Z", "aaaa", WROTE), entry("next", "2026-11-30T10:00:05Z", "bbbb")
    )
    book = ClaimBook()
    assert Ticket(book, KEY, "bbbb", "team/next", claims_of(idx, KEY)).take() == "team/first"
    first = Ticket(book, KEY, "aaaa", "team/first", claims_of(idx, KEY))
    assert first.take() is None and first.unwritten() == [c for c in idx[KEY] if c.uid == "bbbb"]


# Objects trying at once (a pass decides from the index, and writes a while later), from views of the index that lag
# (a watch's), with credentials that work or not, across the grace, restarts and a process dying between an
# OnboardingRecord and the status that names it: never two objects with a write recorded for one onboarding. The
# steps follow WriteJournal: the claim is asked before a write while the status shows none, then the records of the
# objects the status shows as unwritten; a pass ends by giving back a claim it took without a recorded write.
Step = tuple[str, int, int, bool]  # (kind, object, how many index versions old its view is, credentials work)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                ["check", "check", "check", "write", "write", "write", "tick", "delete", "restart", "die"]
            ),
            st.integers(0, 2),
            st.integers(0, 2),
            st.booleans(),
        ),
        max_size=30,
    )
)
# the interleaving the book is for: the older object tried before its grace ran out and writes after the newer one
# went ahead on the lapse
@example(
    [
        ("check", 0, 0, False),
        ("tick", 0, 0, False),
        ("check", 1, 0, False),
        ("write", 0, 0, True),
        ("write", 1, 0, True),
    ]
)
# and the one the records are for: a process dies between an object's record and its status, the next one leads
@example(
    [
        ("check", 0, 0, False),
        ("die", 0, 0, False),
        ("tick", 0, 0, False),
        ("check", 1, 0, False),
        ("write", 1, 0, True),
        ("check", 0, 0, False),
        ("write", 0, 0, True),
    ]
)
def test_whatever_the_views_and_the_clock_only_one_object_ever_writes_for_an_onboarding(
    steps: list[Step],
) -> None:
    book = ClaimBook()
    uids = ["u0", "u1", "u2"]
    created = {uid: T0 + timedelta(seconds=i) for i, uid in enumerate(uids)}
    live, recorded, written, ready = set(uids), set[str](), set[str](), set[str]()
    trying: dict[str, dict[str, list[Claim]]] = {}  # uid -> the view its pass went ahead on
    at = T0
    history: list[dict[str, list[Claim]]] = []

    def current() -> dict[str, list[Claim]]:
        return {
            KEY: [
                Claim(
                    uid,
                    f"ns/{uid}",
                    created[uid].isoformat().replace("+00:00", "Z"),
                    uid in written,
                    uid in ready,
                )
                for uid in sorted(live)
            ]
        }

    def claimed(uid: str, seen: dict[str, list[Claim]]) -> bool:
        """WriteJournal._claim: the book, then the records of the others the status shows as unwritten."""
        if uid in written:
            return True
        ticket = Ticket(book, KEY, uid, f"ns/{uid}", claims_of(seen, KEY))
        if ticket.take() is not None:
            return False
        if any(other.uid in recorded for other in ticket.unwritten()):
            ticket.release()
            return False
        return True

    history.append(current())
    for kind, which, lag, works in steps:
        uid = uids[which]
        if kind == "tick":
            at += timedelta(seconds=GRACE)
        elif (
            kind == "restart"
        ):  # another process leads: an empty book, no pass in flight, the index listed afresh
            book, trying, history = ClaimBook(), {}, [current()]
        elif kind == "delete" and uid in live:
            live.discard(uid)
            recorded.discard(uid)  # its cleanup removed what it wrote
            written.discard(uid)
            trying.pop(uid, None)
            book.forget(uid)
        elif kind == "check" and uid in live:
            seen = history[max(0, len(history) - 1 - lag)]
            if conflict_with(seen, SPEC, uid, at, GRACE) is None:
                trying[uid] = seen
        elif kind == "die" and uid in trying:  # its record made, the process dies before its status
            if claimed(uid, trying[uid]):
                recorded.add(uid)
            book, trying, history = ClaimBook(), {}, [current()]
        elif kind == "write" and uid in trying:
            seen = trying.pop(uid)
            if claimed(uid, seen):
                if works:
                    recorded.add(uid)
                    written.add(uid)
                    ready.add(uid)
                elif uid not in written:  # refused: the record this pass made is withdrawn
                    recorded.discard(uid)
            if uid not in recorded:
                book.release(KEY, uid)  # WriteJournal.settle
        history.append(current())
        assert len(recorded) <= 1, (recorded, steps)
