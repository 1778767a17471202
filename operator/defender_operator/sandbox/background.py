"""Start a command as a recorded background process of a sandbox (so ``sandbox down`` stops it too).

``python -m defender_operator.sandbox.background NAME STATE_DIR -- COMMAND...``; the log is ``STATE_DIR/NAME.log``.
"""

import sys
from pathlib import Path

from . import processes


def main(argv: list[str]) -> int:
    if len(argv) < 4 or argv[2] != "--":
        print(
            "usage: python -m defender_operator.sandbox.background NAME STATE_DIR -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    name, state, command = argv[0], Path(argv[1]), argv[3:]
    processes.stop_recorded_named(state, name)
    record = processes.start(state, name, command)
    print(f"{name} running as pid {record.pid}; log {record.log}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
