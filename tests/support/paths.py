"""Where the tests find the project and the shared material beside it (CI has ../shared next to the clone)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
CONNECTOR_SCHEMA = SHARED / "specs" / "security-connector-aws.2024-08-01-preview.schema.json"
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))
CRD = REPO / "crds" / "awsconnectors.yaml"
