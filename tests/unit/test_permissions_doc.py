"""docs/aws-permissions.md against the catalog it describes: every role with its Learn page and date, and no action
promised that no policy grants (issue 28: the page once promised `firehose:ListDeliveryStreams` and `sqs:ListQueues`
with `Resource: *`, and named the containers role by an old name: the roles table must hold exactly the catalog's
roles by their default names)."""

import re

from defender_operator.api.spec import RoleNames
from defender_operator.render.catalog import catalog
from tests.support.paths import REPO

DOC = (REPO / "docs" / "aws-permissions.md").read_text()
# Actions the page names to say that no role has them, each with the sentence that says so.
NAMED_AS_ABSENT = {
    "firehose:ListDeliveryStreams": "No role\n  gets `firehose:ListDeliveryStreams`",
    "iam:AttacheRolePolicy": "`iam:AttacheRolePolicy` (not an IAM action)",
}


def rows(header: str) -> list[list[str]]:
    """The cells of the Markdown table whose header row starts with ``header``."""
    table: list[list[str]] = []
    for line in DOC[DOC.index(header) :].splitlines()[2:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip("|").split("|")])
    return table


def test_every_role_of_the_catalog_has_a_row_a_learn_page_and_a_date() -> None:
    defaults = {(f.alias or name): f.default for name, f in RoleNames.model_fields.items()}
    assert set(defaults) == set(catalog().roles)
    roles = {row[0].strip("`"): row[1].strip("`") for row in rows("| default name | `roleNames` key |")}
    assert roles == {name: key for key, name in defaults.items()}
    sourced: dict[str, list[str]] = {}
    for names, page, date in rows("| role | Microsoft Learn page, section | ms.date |"):
        for name in re.findall(r"`([\w-]+)`", names):
            sourced[name] = [page, date]
    for name in defaults.values():
        page, date = sourced[name]
        assert "https://learn.microsoft.com/" in page, name
        assert re.search(r"\d{4}-\d{2}-\d{2}", date), f"{name}: no date"


def test_every_action_the_page_names_is_granted_somewhere_or_said_to_be_absent() -> None:
    granted: set[str] = set()
    for document in [
        *(REPO / "operator" / "defender_operator" / "render" / "data").glob("*.json"),
        *(REPO / "docs").glob("*.json"),
    ]:
        granted |= set(re.findall(r'"([a-z0-9-]+:[A-Z][A-Za-z0-9*]*)"', document.read_text()))
    named = set(re.findall(r"`([a-z0-9-]+:[A-Z][A-Za-z0-9*]*)`", DOC))
    assert named, "the page names no action"
    for action in named - granted:
        assert NAMED_AS_ABSENT.get(action, "\0") in DOC, f"the page names {action}, which no policy grants"
    for action, sentence in NAMED_AS_ABSENT.items():
        assert action not in granted and sentence in DOC
