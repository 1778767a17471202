"""`defender-operator render | crd | version` as a user runs them: a real process, its exit code and output."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.support.checks import cfn_lint_errors, schema_errors
from tests.support.manifests import base_manifest
from tests.support.paths import CRD, REPO


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "defender_operator.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_render_all_plans_writes_valid_files(tmp_path: Path) -> None:
    result = cli("render", "-f", "examples/all-plans.yaml", "--output", "all", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cloudformation.json",
        "connector.json",
        "main.tf.json",
    ]
    assert cfn_lint_errors(json.loads((tmp_path / "cloudformation.json").read_text())) == []
    assert schema_errors(json.loads((tmp_path / "connector.json").read_text())) == []
    terraform = json.loads((tmp_path / "main.tf.json").read_text())
    assert "aws_iam_role" in terraform["resource"]


def test_render_reads_multi_document_stdin() -> None:
    docs = [base_manifest("one"), base_manifest("two", account="222233334444")]
    result = cli("render", "-f", "-", "--output", "connector", stdin=yaml.safe_dump_all(docs))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["two"]["connector"]["properties"]["hierarchyIdentifier"] == "222233334444"


def test_bad_manifest_gives_one_line_per_problem_and_no_traceback() -> None:
    manifest = base_manifest()
    manifest["spec"]["aws"]["accountId"] = "12345"
    manifest["spec"]["aws"]["regions"] = ["mars-1"]
    manifest["spec"]["scanIntervalHours"] = 5
    result = cli("render", "-f", "-", stdin=yaml.safe_dump(manifest))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    assert "spec.aws.accountId" in lines[0]
    assert "spec.aws.regions[0]" in lines[1]
    assert "spec.scanIntervalHours" in lines[2]
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_management_account_renders_member_template_but_no_terraform(tmp_path: Path) -> None:
    result = cli("render", "-f", "examples/management-account.yaml", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cloudformation.json",
        "connector.json",
        "member-stackset.json",
    ]
    refused = cli("render", "-f", "examples/management-account.yaml", "--output", "terraform")
    assert refused.returncode == 1 and "management account" in refused.stderr


def test_crd_command_matches_checked_in_file() -> None:
    result = cli("crd")
    assert result.returncode == 0
    assert result.stdout == CRD.read_text()


def test_version() -> None:
    from defender_operator import __version__

    assert cli("version").stdout.strip() == __version__
