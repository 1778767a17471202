"""Argo CD's Lua engine (gopher-lua) and Flux's status library (kstatus), through tools/gitops-check, built from the
Go module proxy once per source version and cached beside the sandbox's binaries."""

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from lupa import LuaRuntime

from defender_operator.sandbox import binaries

from .paths import REPO

SOURCE = REPO / "tools" / "gitops-check"
ARGOCD = REPO / "charts" / "defender-operator" / "gitops" / "argocd" / "defender-operator.io" / "AWSConnector"


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Argo CD's health of ``obj`` by the chart's health.lua, in lupa (gopher-lua agrees: test_gitops.py)."""
    lua = LuaRuntime(unpack_returned_tuples=True)
    script = (ARGOCD / "health.lua").read_text()
    check = lua.eval(f"function(obj)\n{script}\nend")
    result = check(lua.table_from(obj, recursive=True))
    return str(result["status"]), str(result["message"])


def gitops_check() -> Path:
    digest = hashlib.sha256(
        b"".join((SOURCE / name).read_bytes() for name in ("go.mod", "go.sum", "main.go"))
    ).hexdigest()[:12]
    target = binaries.cache_dir() / f"gitops-check-{digest}" / "gitops-check"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not target.exists():
            go = shutil.which("go")
            assert go, "tools/gitops-check is built with Go (the sandbox needs it too)"
            env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"}
            built = subprocess.run(
                [go, "build", "-trimpath", "-o", str(target), "."],
                cwd=SOURCE,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            assert built.returncode == 0, built.stderr[-4000:]
    return target


def argocd_health(directory: Path) -> list[dict[str, Any]]:
    """Every case of ``directory``/health_test.yaml, run by gopher-lua: ``{inputPath, expected, got}``."""
    out = subprocess.run(
        [str(gitops_check()), "argocd", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    cases: list[dict[str, Any]] = json.loads(out.stdout)
    return cases


def kstatus(objects: list[dict[str, Any]]) -> list[str]:
    """kstatus's verdict (Current, InProgress, Failed, ...) for each object, as Flux computes health."""
    out = subprocess.run(
        [str(gitops_check()), "kstatus"],
        input=json.dumps(objects),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return [r["status"] for r in json.loads(out.stdout)]
