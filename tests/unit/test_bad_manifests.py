"""Every bad manifest of the shared table is refused by `render`'s validation, naming its field."""

import pytest

from defender_operator.api.manifest import parse_document
from tests.support.manifests import BAD_CASES, BadCase, base_manifest


@pytest.mark.parametrize("case", [c for c in BAD_CASES if not c.on_update], ids=lambda c: c.id)
def test_bad_manifest_is_rejected_naming_the_field(case: BadCase) -> None:
    manifest = parse_document(case.apply(base_manifest()), 1)
    assert manifest.spec is None
    assert any(problem.startswith((case.field + ":", case.field + ".")) for problem in manifest.problems), (
        manifest.problems
    )


def test_the_base_manifest_is_valid() -> None:
    assert parse_document(base_manifest(), 1).problems == []


def test_table_is_large_enough() -> None:
    assert len(BAD_CASES) >= 15
