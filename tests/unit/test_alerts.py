"""The alerts ship in the chart and are tested with promtool (built from the Go module proxy, cached): each fires on
the series that must fire it and stays silent on those that must not."""

import subprocess

import yaml

from defender_operator.sandbox import binaries
from tests.support.paths import REPO

RULES = REPO / "charts" / "defender-operator" / "files" / "alerts.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(binaries.promtool()), *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


def test_rules_are_valid() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_rules_fire_when_they_must_and_only_then() -> None:
    tested = promtool("test", "rules", "tests/alerts/alerts_test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_test_and_the_docs_point_at_the_rules() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    tested = {
        t["alertname"]
        for case in yaml.safe_load((REPO / "tests" / "alerts" / "alerts_test.yaml").read_text())["tests"]
        for t in case.get("alert_rule_test", [])
    }
    assert alerts == tested
    assert "charts/defender-operator/files/alerts.yaml" in (REPO / "docs" / "operations.md").read_text()


def test_every_alert_links_a_runbook_that_exists() -> None:
    """runbook_url of each alert is a section of docs/troubleshooting.md named after the alert."""
    doc = (REPO / "docs" / "troubleshooting.md").read_text()
    anchors = {line[4:].strip().lower() for line in doc.splitlines() if line.startswith("### ")}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            url = rule["annotations"]["runbook_url"]
            assert url.endswith(f"docs/troubleshooting.md#{rule['alert'].lower()}"), url
            assert rule["alert"].lower() in anchors, rule["alert"]
