"""The operator's Azure custom role, assignable only on the resource groups that hold its connectors.

The role carries exactly the ARM operations the operator calls (a test holds the list equal to the adapter's calls);
its assignable scopes, and the assignments made from it, are what keeps a holder of the operator's Azure identity
from writing connectors anywhere else (docs/tenancy.md). As JSON for ``az role definition create`` and as Terraform.
"""

from collections.abc import Sequence
from typing import Any

from .terraform import requirements

ROLE_NAME = "Defender Operator"
DESCRIPTION = (
    "What defender-operator needs: manage Defender for Cloud security connectors, read their health, and read the "
    "subscription (its tenant is checked before any write) and, where assigned on it, its Defender plans."
)
ACTIONS = (
    "Microsoft.Security/securityConnectors/read",
    "Microsoft.Security/securityConnectors/write",
    "Microsoft.Security/securityConnectors/delete",
    "Microsoft.Security/healthReports/read",
    "Microsoft.Security/pricings/read",
    "Microsoft.Resources/subscriptions/read",
)


def scopes(subscription: str, resource_groups: Sequence[str]) -> list[str]:
    """The resource groups' scopes; the whole subscription only when none is named."""
    base = f"/subscriptions/{subscription}"
    return [f"{base}/resourceGroups/{rg}" for rg in resource_groups] or [base]


def operator_azure_role(subscription: str, resource_groups: Sequence[str]) -> dict[str, Any]:
    """The role definition as ``az role definition create --role-definition`` reads it."""
    return {
        "Name": ROLE_NAME,
        "IsCustom": True,
        "Description": DESCRIPTION,
        "Actions": list(ACTIONS),
        "NotActions": [],
        "DataActions": [],
        "NotDataActions": [],
        "AssignableScopes": scopes(subscription, resource_groups),
    }


def azure_role_configuration() -> dict[str, Any]:
    """The role and its assignments to the operator's identity, one per resource group, as Terraform."""
    return {
        "//": "defender-operator's Azure custom role, rendered by defender-operator: assignable and assigned only on "
        "the resource groups that hold the connectors.",
        "terraform": requirements("azurerm", "hashicorp/azurerm", ">= 3.0"),
        "provider": {"azurerm": {"features": {}}},
        "variable": {
            "subscription_id": {"type": "string"},
            "resource_group_names": {
                "type": "list(string)",
                "default": [],
                "description": "Resource groups of the connectors (spec.azure.resourceGroup); empty: the subscription",
            },
            "principal_id": {
                "type": "string",
                "default": "",
                "description": "Object id of the operator's identity to assign the role to; empty: no assignment",
            },
            "role_name": {"type": "string", "default": ROLE_NAME},
        },
        "locals": {
            "scopes": '${length(var.resource_group_names) == 0 ? ["/subscriptions/${var.subscription_id}"] : '
            '[for rg in var.resource_group_names : "/subscriptions/${var.subscription_id}/resourceGroups/${rg}"]}'
        },
        "resource": {
            "azurerm_role_definition": {
                "operator": {
                    "name": "${var.role_name}",
                    "scope": "/subscriptions/${var.subscription_id}",
                    "description": DESCRIPTION,
                    "permissions": [{"actions": list(ACTIONS), "not_actions": []}],
                    "assignable_scopes": "${local.scopes}",
                }
            },
            "azurerm_role_assignment": {
                "operator": {
                    "for_each": '${var.principal_id == "" ? toset([]) : toset(local.scopes)}',
                    "scope": "${each.value}",
                    "role_definition_id": "${azurerm_role_definition.operator.role_definition_resource_id}",
                    "principal_id": "${var.principal_id}",
                }
            },
        },
        "output": {
            "role_definition_id": {"value": "${azurerm_role_definition.operator.role_definition_resource_id}"}
        },
    }
