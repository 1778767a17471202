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
    result = cli("render", "-f", "examples/all-plans.yaml", "--out-dir", str(tmp_path))
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
    result = cli("render", "-f", "-", "--only", "connector", stdin=yaml.safe_dump_all(docs))
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert out["default/two"]["connector"]["properties"]["hierarchyIdentifier"] == "222233334444"


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


def test_management_account_renders_member_template_and_terraform(tmp_path: Path) -> None:
    result = cli("render", "-f", "examples/management-account.yaml", "--out-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "cloudformation.json",
        "connector.json",
        "main.tf.json",
        "member-stackset.json",
    ]
    terraform = cli("render", "-f", "examples/management-account.yaml", "--only", "terraform")
    assert terraform.returncode == 0, terraform.stderr
    assert "aws_cloudformation_stack_set_instance" in terraform.stdout


def test_crd_command_matches_checked_in_file() -> None:
    result = cli("crd")
    assert result.returncode == 0
    assert result.stdout == CRD.read_text()


def test_version() -> None:
    from defender_operator import __version__

    assert cli("version").stdout.strip() == __version__


def test_f_takes_directories_lists_and_yaml_output(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(base_manifest("one")))
    listed = {"apiVersion": "v1", "kind": "List", "items": [base_manifest("two", account="222233334444")]}
    (tmp_path / "b.json").write_text(json.dumps(listed))
    (tmp_path / "notes.txt").write_text("not a manifest")
    result = cli("render", "-f", str(tmp_path), "--only", "connector", "-o", "yaml")
    assert result.returncode == 0, result.stderr
    out = yaml.safe_load(result.stdout)
    assert sorted(out) == ["default/one", "default/two"]


def test_same_name_in_two_namespaces_gets_two_directories(tmp_path: Path) -> None:
    docs = [base_manifest("acme", "team-a"), base_manifest("acme", "team-b", account="222233334444")]
    result = cli("render", "-f", "-", "--out-dir", str(tmp_path), stdin=yaml.safe_dump_all(docs))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "team-a" / "acme" / "connector.json").exists()
    assert (tmp_path / "team-b" / "acme" / "connector.json").exists()
    twice = cli("render", "-f", "-", stdin=yaml.safe_dump_all([base_manifest("acme")] * 2))
    assert twice.returncode == 1 and "default/acme: given more than once" in twice.stderr


def test_empty_and_invalid_input_are_one_line_errors() -> None:
    empty = cli("render", "-f", "-", stdin="")
    assert empty.returncode == 1 and empty.stderr.strip() == "-: no AWSConnector in it"
    broken = cli("render", "-f", "-", stdin="spec:\n  aws: [unclosed\n")
    lines = broken.stderr.strip().splitlines()
    assert (
        broken.returncode == 1 and len(lines) == 1 and "not valid YAML" in lines[0] and "line" in lines[0]
    ), lines
    assert "Traceback" not in broken.stderr


def test_run_help_documents_every_setting_with_its_default_and_variable() -> None:
    from defender_operator.settings import Settings

    text = " ".join(cli("run", "--help").stdout.split())
    for name in Settings.model_fields:
        assert f"DEFENDER_OPERATOR_{name.upper()}" in text, name
    assert "--in-progress-seconds IN_PROGRESS_SECONDS How soon to look again" in text
    assert "(default: 15.0; env DEFENDER_OPERATOR_IN_PROGRESS_SECONDS)" in text


def test_configuration_page_lists_every_setting() -> None:
    from defender_operator.settings import Settings

    page = (REPO / "docs" / "configuration.md").read_text()
    missing = [name for name in Settings.model_fields if f"| `{name.upper()}` |" not in page]
    assert not missing, f"docs/configuration.md has no row for {missing}"


def test_the_collector_runs_less_often_only_when_asked() -> None:
    import gc

    from defender_operator.operator_main import collect_less_often

    before = gc.get_threshold()
    try:
        collect_less_often(0)
        assert gc.get_threshold() == before
        collect_less_often(12345)
        assert gc.get_threshold() == (12345, *before[1:])
    finally:
        gc.set_threshold(*before)


def test_aws_setup_prints_the_checked_in_setup_files() -> None:
    for only, path in (
        ("template", REPO / "deploy" / "aws" / "account-setup.json"),
        ("terraform", REPO / "deploy" / "aws" / "account-setup.tf.json"),
        ("policy", REPO / "docs" / "operator-iam-policy.json"),
        ("delegated-admin-policy", REPO / "docs" / "operator-iam-policy-delegated-admin.json"),
    ):
        result = cli("aws-setup", "--only", only)
        assert result.returncode == 0, result.stderr
        assert result.stdout == path.read_text()
