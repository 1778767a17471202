"""Benchmark: what indexing a watch event costs the operator's event loop, beside Kopf's own floor.

Kopf runs every index handler on every watch event of every object, and runs no other handler until every object it
listed at start is indexed; over a backlog, each object's finalizer and first status come back as events too. This
feeds ``--objects`` objects' events (ADDED, the finalizer's MODIFIED, the status's MODIFIED) through Kopf's own
``index_resource``, as its watcher does, and prints the CPU per event of:

- one index handler that does nothing (Kopf's floor for an index),
- five index handlers that do nothing (what five handlers cost in Kopf's machinery alone),
- the operator's index (``handlers/indexes.py``: one handler, five parts).

No sandbox: Kopf's indexing does no I/O. The best of ``--repeat`` runs of each, to leave out the machine's noise.

    .venv/bin/python -m bench.indexing [--objects 300] [--repeat 5]

Results go into docs/performance.md ("A backlog").
"""

import argparse
import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

from tests.support.kopf_indexing import Indexing

from bench.fleet import manifest
from defender_operator.handlers.indexes import INDEX, awsconnectors

FINALIZER = "defender-operator.io/cleanup"


async def nothing(**_: Any) -> dict[str, Any]:
    return {}


def bodies(objects: int) -> list[tuple[str, dict[str, Any]]]:
    """The events of a backlog's objects, in the order they come: every listed object, then each one's finalizer,
    then each one's first status."""
    events = []
    for kind in ("ADDED", "FINALIZER", "STATUS"):
        for i in range(objects):
            body = manifest("bench", i)
            body["metadata"] |= {"uid": f"uid-{i}", "creationTimestamp": "2026-12-07T10:00:00Z"}
            if kind != "ADDED":
                body["metadata"]["finalizers"] = [FINALIZER]
            if kind == "STATUS":
                body["status"] = {
                    "observedGeneration": 1,
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            events.append(("ADDED" if kind == "ADDED" else "MODIFIED", body))
    return events


def cpu_per_event_ms(
    handlers: Mapping[str, Callable[..., Any]], events: list[tuple[str, dict[str, Any]]]
) -> float:
    indexing = Indexing(handlers)

    async def feed() -> float:
        started = time.process_time()
        for kind, body in events:
            await indexing.event(kind, body)
        return time.process_time() - started

    return asyncio.run(feed()) / len(events) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    events = bodies(args.objects)
    shapes: dict[str, Mapping[str, Callable[..., Any]]] = {
        "one_noop_index_ms_per_event": {"noop": nothing},
        "five_noop_indexes_ms_per_event": {f"noop{i}": nothing for i in range(5)},
        "operator_index_ms_per_event": {INDEX: awsconnectors},
    }
    figures: dict[str, Any] = {"objects": args.objects, "events": len(events)}
    for label, handlers in shapes.items():
        figures[label] = round(min(cpu_per_event_ms(handlers, events) for _ in range(args.repeat)), 3)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
