"""The Argo CD health check, run by a real Lua interpreter against sample AWSConnectors."""

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.gitops import ARGOCD, argocd_health, health, kstatus
from tests.support.paths import REPO

GITOPS = REPO / "charts" / "defender-operator" / "gitops"


CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]


@pytest.mark.parametrize("case", CASES, ids=[Path(c["inputPath"]).stem for c in CASES])
def test_argocd_health_cases(case: dict[str, Any]) -> None:
    """Argo CD's own test layout (resource_customizations/<group>/<kind>/health_test.yaml and testdata/)."""
    obj = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    assert health(obj) == (case["healthStatus"]["status"], case["healthStatus"]["message"])


def test_every_health_status_is_covered() -> None:
    assert {c["healthStatus"]["status"] for c in CASES} == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_argocd_snippet_embeds_the_script() -> None:
    snippet = (GITOPS / "argocd-cm-snippet.yaml").read_text()

    embedded = yaml.safe_load(snippet)["data"][
        "resource.customizations.health.defender-operator.io_AWSConnector"
    ]
    assert embedded == (ARGOCD / "health.lua").read_text()


def test_flux_example_is_a_kustomization_with_health_expressions() -> None:

    flux = yaml.safe_load(Path(GITOPS / "flux-kustomization.yaml").read_text())
    kinds = {e["kind"] for e in flux["spec"]["healthCheckExprs"]}
    assert kinds == {"AWSConnector"} and flux["spec"]["wait"] is True


def test_argo_cds_own_lua_engine_agrees() -> None:
    """gopher-lua, the engine Argo CD runs health.lua in, over Argo CD's test layout."""
    results = argocd_health(ARGOCD)
    assert len(results) == len(CASES)
    assert [r for r in results if r["got"] != r["expected"]] == []


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        (
            "no-status",
            "Current",
        ),  # kstatus's own reading of a status-less object; see the CRD's status default
        ("new-generation", "InProgress"),
        ("reconciling", "InProgress"),
        ("ready", "Current"),
        ("stalled", "Failed"),
        ("paused", "Current"),
    ],
)
def test_kstatus_reads_the_status_as_flux_does(case: str, expected: str) -> None:
    obj = yaml.safe_load((ARGOCD / "testdata" / f"{case}.yaml").read_text())
    assert kstatus([obj]) == [expected]
