"""Where the tests find the project's files. Everything they use is in the repository: a clone has nothing beside it."""

from importlib import resources
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# The strict JSON Schema of the connector body (2024-08-01-preview), carried by the ARM emulator, which validates
# every body against it; tests/unit/test_vendored_schema.py pins its content.
CONNECTOR_SCHEMA = Path(
    str(
        resources.files("defender_operator.sandbox.arm").joinpath(
            "data/security-connector-aws.2024-08-01-preview.schema.json"
        )
    )
)
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CRD = REPO / "crds" / "awsconnectors.yaml"
