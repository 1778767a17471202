"""Independent checkers for rendered output: cfn-lint, the shared connector schema, and parliament."""

import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import parliament
from cfnlint.config import ConfigMixIn
from cfnlint.decode.decode import decode_str
from cfnlint.runner import Runner

from defender_operator.api.spec import AWSConnectorSpec
from defender_operator.render.iam import role_documents
from defender_operator.render.placeholders import substitute

from .paths import CONNECTOR_SCHEMA

# parliament findings accepted on purpose, each with the reason (docs/aws-permissions.md repeats them).
ACCEPTED_FINDINGS = {
    # A service wildcard (firehose:*, sqs:*, s3:*) scoped to Defender's own resources expands to list and admin
    # actions of other resource types; Microsoft's template grants it this way and Defender's pipeline uses it.
    "wildcard": "service wildcard on Defender-prefixed resources",
    # ssm:SendCommand applies to documents *and* instances (Service Authorization Reference); parliament's data
    # knows only the document.
    "ssm:SendCommand": "parliament lacks the instance resource type of ssm:SendCommand",
}
_SEVERITY_GATE = {"MEDIUM", "HIGH", "CRITICAL"}


def cfn_lint_errors(template: dict[str, Any]) -> list[str]:
    """cfn-lint errors (E*) of a template; warnings and informational findings are not failures."""
    return list(_lint(json.dumps(template, sort_keys=True)))


@cache
def _runner() -> Runner:
    # One runner for every template, as the cfn-lint command uses one for many files: loading its rules takes
    # 0.6 s, as long as linting one of these templates (cfnlint.api.lint loads them again on every call).
    return Runner(ConfigMixIn(regions=["us-east-1"]))


@cache
def _lint(text: str) -> tuple[str, ...]:
    # equal templates (e.g. an organization's stack) are linted once
    template, errors = decode_str(text)
    matches = errors or list(_runner().validate_template(template or {}))
    return tuple(f"{m.rule.id} {m.message} ({m.path})" for m in matches if m.rule.id.startswith("E"))


@cache
def connector_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(CONNECTOR_SCHEMA.read_text()))


def schema_errors(body: dict[str, Any]) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in connector_validator().iter_errors(body)
    ]


def _severity(issue: str) -> str:
    config = parliament.config.get(issue, {})
    return str(config.get("severity", "")).upper()


def _accepted(finding: Any, statement_actions: list[str]) -> bool:
    if finding.issue != "RESOURCE_MISMATCH":
        return False
    for item in finding.detail:
        action = item["action"]
        service = action.split(":")[0]
        if f"{service}:*" in statement_actions or action in ACCEPTED_FINDINGS:
            continue
        return False
    return True


def parliament_problems(spec: AWSConnectorSpec) -> list[str]:
    """Findings of MEDIUM severity or worse on every inline policy the spec renders, minus the accepted ones."""
    resolve = {"partition": "aws", "account": "111122223333", "dnsSuffix": "amazonaws.com"}
    problems = []
    for role in role_documents(spec):
        for name, document in role.inline_policies.items():
            concrete = substitute(document, {}, resolve, lambda s: s)
            actions = [
                a
                for st in concrete["Statement"]
                for a in (st["Action"] if isinstance(st["Action"], list) else [st["Action"]])
            ]
            for finding in parliament.analyze_policy_string(json.dumps(concrete)).findings:
                if _severity(finding.issue) in _SEVERITY_GATE and not _accepted(finding, actions):
                    problems.append(f"{role.key}/{name}: {finding.issue} {finding.detail}")
    return problems


def terraform_values(
    configuration: dict[str, Any], expressions: dict[str, str], variables: dict[str, str], workdir: Path
) -> dict[str, Any]:
    """Evaluate ``expressions`` of a rendered configuration with the real Terraform: its variables and locals, the
    expressions as outputs, no provider (so nothing needs downloading); data sources become fixed values."""
    terraform = shutil.which("terraform")
    assert terraform, "terraform is not on PATH (the test machine has /usr/local/bin/terraform)"
    fixed = {
        "${data.aws_partition.current.partition}": "aws",
        "${data.aws_partition.current.dns_suffix}": "amazonaws.com",
    }
    text = json.dumps(
        {
            "variable": configuration["variable"],
            "locals": configuration.get("locals", {}),
            "output": {name: {"value": value} for name, value in expressions.items()},
        }
    )
    for reference, value in fixed.items():
        text = text.replace(reference, value)
    (workdir / "main.tf.json").write_text(text)
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}
    arguments = [f"-var={name}={value}" for name, value in variables.items()]
    for command in (["init", "-backend=false"], ["apply", "-auto-approve", "-input=false", *arguments]):
        done = subprocess.run([terraform, *command], cwd=workdir, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
    shown = subprocess.run(
        [terraform, "output", "-json"], cwd=workdir, env=env, capture_output=True, text=True, check=True
    )
    return {name: output["value"] for name, output in json.loads(shown.stdout).items()}
