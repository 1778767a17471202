"""The operator's Azure custom role: generated from one source (the role file, the Terraform), assignable only on
the resource groups named, and the Terraform's scopes evaluated by Terraform itself."""

import json
from pathlib import Path

from defender_operator.cli import USAGE, main
from defender_operator.render.azure_role import ACTIONS, azure_role_configuration, operator_azure_role
from tests.support.checks import terraform_values
from tests.support.paths import REPO

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"


def test_the_checked_in_files_are_generated() -> None:
    documented = json.loads((REPO / "docs" / "operator-azure-role.json").read_text())
    assert documented == operator_azure_role(
        "00000000-0000-0000-0000-000000000000", ["defender-connectors"]
    ), "docs/operator-azure-role.json is stale: run ./scripts/generate"
    terraform = json.loads((REPO / "deploy" / "azure" / "operator-role.tf.json").read_text())
    assert terraform == azure_role_configuration(), "deploy/azure/operator-role.tf.json is stale"


def test_the_role_is_assignable_only_on_the_named_resource_groups() -> None:
    role = operator_azure_role(SUBSCRIPTION, ["team-a", "team-b"])
    assert role["AssignableScopes"] == [
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/team-a",
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/team-b",
    ]
    assert operator_azure_role(SUBSCRIPTION, [])["AssignableScopes"] == [f"/subscriptions/{SUBSCRIPTION}"]
    assert role["Actions"] == list(ACTIONS) and not any("*" in action for action in role["Actions"])


def test_terraform_assigns_the_same_actions_on_the_same_scopes(tmp_path: Path) -> None:
    configuration = azure_role_configuration()
    permissions = configuration["resource"]["azurerm_role_definition"]["operator"]["permissions"]
    assert permissions == [{"actions": list(ACTIONS), "not_actions": []}]
    for number, groups in enumerate(([], ["team-a", "team-b"])):
        workdir = tmp_path / str(number)
        workdir.mkdir()
        variables = {"subscription_id": SUBSCRIPTION, "resource_group_names": json.dumps(groups)}
        values = terraform_values(configuration, {"scopes": "${local.scopes}"}, variables, workdir)
        assert values["scopes"] == operator_azure_role(SUBSCRIPTION, groups)["AssignableScopes"]


def test_the_cli_needs_a_subscription_for_the_role() -> None:
    assert (
        main(["azure-setup"]) == USAGE
    )  # a usage error never exits 2, `plan --detailed-exitcode`'s "changes"
    assert main(["azure-setup", "--subscription", SUBSCRIPTION, "--resource-group", "team-a"]) == 0
