"""The README's front door works as written: its quickstart command, verbatim, in a fresh clone."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from defender_operator import sandbox as sandbox_module
from defender_operator.sandbox import binaries
from tests.support.paths import REPO

pytestmark = pytest.mark.integration


def readme_block(after: str) -> str:
    """The first ```sh block after the line containing ``after``."""
    text = (REPO / "README.md").read_text()
    start = text.index(after)
    match = re.search(r"```sh\n(.*?)```", text[start:], flags=re.DOTALL)
    assert match, f"no sh block after {after!r}"
    return match.group(1)


def test_readme_names_the_test_command_that_ci_runs() -> None:
    assert readme_block("**Run the tests**").strip() == "./scripts/test"
    assert "./scripts/test" in (REPO / ".ci" / "run").read_text()


def test_quickstart_from_a_fresh_clone_reaches_ready(tmp_path: Path) -> None:
    command = readme_block("**Run the operator against the sandbox")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True, timeout=120)
    state = binaries.cache_dir() / "readme-sandbox"
    env = {**os.environ, "DEFENDER_OPERATOR_SANDBOX_DIR": str(state)}
    env.pop("VIRTUAL_ENV", None)
    try:
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=1200,
        )
        operator_log = state / "operator.log"
        assert result.returncode == 0, (
            result.stdout[-3000:]
            + result.stderr[-3000:]
            + (operator_log.read_text()[-4000:] if operator_log.exists() else "(no operator log)")
        )
        table = result.stdout.splitlines()
        header = table.index(next(line for line in table if line.startswith("NAME")))
        row = table[header + 1].split()
        assert row[0] == "payments-prod" and row[4:6] == ["True", "Onboarded"], result.stdout
    finally:
        sandbox_module.down(state)
        shutil.rmtree(clone, ignore_errors=True)
