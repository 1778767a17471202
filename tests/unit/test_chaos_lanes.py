"""A campaign in lanes reads as one: schedules never interleave, the summaries add up, a broken lane is named."""

import io
import threading

from bench.chaos.lanes import merge, relay_schedules


def test_a_lane_output_reaches_the_campaign_a_whole_schedule_at_a_time() -> None:
    out = io.StringIO()
    lock = threading.Lock()
    writes: list[str] = []

    class Recording(io.StringIO):
        def write(self, text: str) -> int:
            writes.append(text)
            return out.write(text)

    lines = [
        "--- seed 3: ok\n",
        "  1. kill\n",
        "--- seed 5: 1 VIOLATIONS\n",
        "  1. create\n",
        "    ! leaked\n",
    ]
    relay_schedules(lines, Recording(), lock)

    assert writes == ["--- seed 3: ok\n  1. kill\n", "--- seed 5: 1 VIOLATIONS\n  1. create\n    ! leaked\n"]


def test_the_lanes_summaries_add_up_and_a_lane_without_one_is_named() -> None:
    part = {
        "schedules": 2,
        "steps": 30,
        "operations": {"kill": 3, "create": 1},
        "seconds": {"converge": 10},
        "violations": 1,
        "failingSeeds": [7],
    }
    other = part | {"operations": {"kill": 1}, "seconds": {"converge": 5, "delete": 20}, "failingSeeds": [4]}

    summary = merge({0: part, 2: other}, lanes=3)

    assert summary["lanesFailed"] == [1]
    assert (summary["schedules"], summary["steps"], summary["violations"]) == (4, 60, 2)
    assert summary["operations"] == {"create": 1, "kill": 4}
    assert summary["seconds"] == {"delete": 20, "converge": 15}
    assert summary["failingSeeds"] == [4, 7]
