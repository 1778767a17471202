"""The ARM emulator carries a copy of the shared connector schema (so the sandbox works when installed from a
wheel); it must stay byte-identical to the shared one."""

from importlib import resources

from tests.support.paths import CONNECTOR_SCHEMA


def test_vendored_schema_is_the_shared_schema() -> None:
    vendored = resources.files("defender_operator.sandbox.arm").joinpath(
        "data/security-connector-aws.2024-08-01-preview.schema.json"
    )
    assert vendored.read_text() == CONNECTOR_SCHEMA.read_text()
