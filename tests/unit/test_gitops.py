"""The Argo CD health check, run by a real Lua interpreter against sample AWSConnectors."""

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import LuaRuntime

from tests.support.paths import REPO

GITOPS = REPO / "charts" / "defender-operator" / "gitops"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = (GITOPS / "argocd-health.lua").read_text()
    check = lua.eval(f"function(obj)\n{script}\nend")
    result = check(lua.table_from(obj, recursive=True))
    return str(result["status"]), str(result["message"])


def connector(generation: int = 1, **status: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "acme", "generation": generation}, "spec": {}}
    if status:
        obj["status"] = status
    return obj


def cond(type_: str, status: str, reason: str = "R", message: str = "m") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": reason, "message": message}


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (connector(), "Progressing"),
        (connector(observedGeneration=1, conditions=[cond("Ready", "True", "Onboarded")]), "Healthy"),
        (
            connector(
                observedGeneration=1,
                conditions=[cond("Ready", "False", "StackCreating"), cond("Reconciling", "True")],
            ),
            "Progressing",
        ),
        (
            connector(
                observedGeneration=1,
                conditions=[
                    cond("Ready", "False", "StackCreateFailed"),
                    cond("Stalled", "True", "StackCreateFailed", "role exists"),
                ],
            ),
            "Degraded",
        ),
        (connector(generation=2, observedGeneration=1, conditions=[cond("Ready", "True")]), "Progressing"),
        (
            {
                **connector(observedGeneration=1, conditions=[cond("Ready", "True")]),
                "metadata": {"generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"},
            },
            "Progressing",
        ),
    ],
    ids=["no-status", "ready", "reconciling", "stalled", "new-generation", "deleting"],
)
def test_argocd_health(obj: dict[str, Any], expected: str) -> None:
    assert health(obj)[0] == expected


def test_degraded_message_carries_the_reason() -> None:
    status = {
        "observedGeneration": 1,
        "conditions": [cond("Stalled", "True", "AccountMismatch", "wrong account")],
    }
    assert health(connector(**status)) == ("Degraded", "AccountMismatch: wrong account")


def test_argocd_snippet_embeds_the_script() -> None:
    snippet = (GITOPS / "argocd-cm-snippet.yaml").read_text()

    embedded = yaml.safe_load(snippet)["data"][
        "resource.customizations.health.defender-operator.io_AWSConnector"
    ]
    assert embedded == (GITOPS / "argocd-health.lua").read_text()


def test_flux_example_is_a_kustomization_with_health_expressions() -> None:

    flux = yaml.safe_load(Path(GITOPS / "flux-kustomization.yaml").read_text())
    kinds = {e["kind"] for e in flux["spec"]["healthCheckExprs"]}
    assert kinds == {"AWSConnector"} and flux["spec"]["wait"] is True
