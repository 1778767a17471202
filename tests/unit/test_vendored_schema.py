"""The connector body's strict JSON Schema is carried in the repository (the ARM emulator validates every body
against it, and the tests check every rendered body with it). Its content is pinned: it is the schema the project
was given for api-version 2024-08-01-preview, and a change to it must be a deliberate one, made here too."""

import hashlib

from tests.support.paths import CONNECTOR_SCHEMA

# sha256 of the schema as received (specs/security-connector-aws.2024-08-01-preview.schema.json)
PINNED = "52d1d2ac7dd3ffb317396caa02a928d8d7e72e6ad7c602082a5d13574f83d964"


def test_the_connector_schema_is_the_one_pinned() -> None:
    assert hashlib.sha256(CONNECTOR_SCHEMA.read_bytes()).hexdigest() == PINNED
