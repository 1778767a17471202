"""How an organization's account counts for the member StackSet (aws/stackset.py: standing): deployed to, detached
(closed: StackSets skip it and cannot delete its instance), or waited for (neither deployed to nor let go)."""

import pytest

from defender_operator.aws.stackset import MemberAccounts, standing


@pytest.mark.parametrize(
    ("account", "expected"),
    [
        ({"Status": "ACTIVE", "State": "ACTIVE"}, "active"),
        ({"Status": "SUSPENDED", "State": "CLOSED"}, "closed"),  # closed by its owner (CloseAccount)
        (
            {"Status": "SUSPENDED", "State": "SUSPENDED"},
            "waiting",
        ),  # restricted by AWS, which may reinstate it
        ({"Status": "PENDING_CLOSURE", "State": "PENDING_CLOSURE"}, "waiting"),  # still functional
        ({"Status": "ACTIVE", "State": "PENDING_ACTIVATION"}, "waiting"),  # sign-up not finished
        ({"Status": "ACTIVE", "State": "SOMETHING_NEW"}, "waiting"),  # a state AWS adds later: touch nothing
        ({"Status": "ACTIVE"}, "active"),  # before State: Status alone
        ({"Status": "SUSPENDED"}, "closed"),  # CloseAccount's end state there
        ({"Status": "PENDING_CLOSURE"}, "waiting"),
        ({}, "active"),
    ],
)
def test_an_accounts_standing_comes_from_its_state_and_else_its_status(
    account: dict[str, str], expected: str
) -> None:
    assert standing(account) == expected


def test_standings_of_two_listings_add_up() -> None:
    listed = MemberAccounts(active=frozenset({"1"}), closed=frozenset({"2"}))
    described = MemberAccounts(closed=frozenset({"3"}), waiting=frozenset({"4"}))
    both = listed | described
    assert both == MemberAccounts(frozenset({"1"}), frozenset({"2", "3"}), frozenset({"4"}))
    assert both.known == {"1", "2", "3", "4"}
