"""Another IAM catalog than the packaged one: what a Microsoft change looks like to the operator (the catalog
rollout's tests run the operator with it, through the ``catalogFile`` setting)."""

import json
from importlib import resources
from pathlib import Path

# an action Microsoft could add to the CSPM role's policies (both access levels)
ADDED_ACTION = "ec2:DescribeAddressesAttribute"


def packaged() -> str:
    return resources.files("defender_operator.render").joinpath("data/iam-catalog.json").read_text()


def changed_catalog(path: Path) -> Path:
    """The packaged catalog with one more action in the first statement of every CSPM role policy, at ``path``."""
    data = json.loads(packaged())
    for policy in data["roles"]["cspmMonitor"]["policies"]:
        statement = policy["statements"][0]
        statement["Action"] = [*statement["Action"], ADDED_ACTION]
    path.write_text(json.dumps(data, indent=1))
    return path
