"""Start a command as a recorded background process of a sandbox (so ``sandbox down`` stops it too).

``python -m defender_operator.sandbox.background NAME STATE_DIR [--ready-url URL] -- COMMAND...``; the log is
``STATE_DIR/NAME.log``. With ``--ready-url`` it returns only once that URL answers 200, and fails with the end of the
log when the process exits first (a port already taken, bad settings), instead of leaving the caller to time out.
"""

import argparse
import sys
from pathlib import Path

from . import processes
from .readiness import NotReady, wait_ready

LOG_TAIL_LINES = 20


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print(
            "usage: python -m defender_operator.sandbox.background NAME STATE_DIR [--ready-url URL] -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m defender_operator.sandbox.background")
    parser.add_argument("name")
    parser.add_argument("state", type=Path)
    parser.add_argument("--ready-url", help="wait until this URL answers 200")
    args, command = parser.parse_args(argv[:split]), argv[split + 1 :]
    processes.stop_recorded_named(args.state, args.name)
    record = processes.start(args.state, args.name, command)
    if args.ready_url:
        try:
            wait_ready(record, args.ready_url, args.name, expect=b"ok")
        except NotReady as exc:
            tail = Path(record.log).read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            print(f"{exc}\n" + "\n".join(tail), file=sys.stderr)
            return 1
    print(f"{args.name} running as pid {record.pid}; log {record.log}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
