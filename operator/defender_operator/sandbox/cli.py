"""``defender-operator sandbox up | env | status | down | build``."""

import argparse
import shlex
import sys
import time
from pathlib import Path

from . import Sandbox, binaries, default_state_dir, down, processes, up
from .controlplane import ControlPlaneError
from .readiness import NotReady


def main(args: argparse.Namespace) -> int:
    state = default_state_dir()
    try:
        return _ACTIONS[args.action](args, state)
    except (binaries.BinaryError, ControlPlaneError, NotReady) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1


def _build(args: argparse.Namespace, state: Path) -> int:
    print(binaries.kube_apiserver())
    print(binaries.kube_controller_manager())
    print(binaries.kube_scheduler())
    print(binaries.kwok())
    print(binaries.helm())
    print(binaries.promtool())
    return 0


def _up(args: argparse.Namespace, state: Path) -> int:
    started = time.monotonic()
    sandbox = up(state, emulators=not args.no_emulators, async_stack_seconds=args.async_stacks)
    print(
        f"sandbox ready in {time.monotonic() - started:.1f}s: {sandbox.control_plane.server}", file=sys.stderr
    )
    print(f'run: eval "$({sys.argv[0]} sandbox env)"', file=sys.stderr)
    return 0


def _env(args: argparse.Namespace, state: Path) -> int:
    sandbox = Sandbox.load(state)
    if sandbox is None:
        print("sandbox: not running (start it with `defender-operator sandbox up`)", file=sys.stderr)
        return 1
    if args.kubeconfig:
        print(sandbox.control_plane.kubeconfig)
        return 0
    for key, value in sandbox.env().items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def _status(args: argparse.Namespace, state: Path) -> int:
    sandbox = Sandbox.load(state)
    records = processes.recorded(state)
    if sandbox is None and not records:
        print("sandbox: not running")
        return 1
    for record in records:
        print(
            f"{record.name:16} pid {record.pid:<8} {'running' if record.alive() else 'STOPPED'}  log {record.log}"
        )
    if sandbox is not None:
        print(f"kube-apiserver   {sandbox.control_plane.server}")
        if sandbox.aws_endpoint:
            print(f"aws (moto)       {sandbox.aws_endpoint}")
        if sandbox.arm_endpoint:
            print(f"azure (ARM)      {sandbox.arm_endpoint}")
    return 0 if records and all(r.alive() for r in records) else 1


def _down(args: argparse.Namespace, state: Path) -> int:
    stopped = down(state)
    print(f"sandbox: stopped {', '.join(stopped) or 'nothing'}", file=sys.stderr)
    return 0


_ACTIONS = {"build": _build, "up": _up, "env": _env, "status": _status, "down": _down}
