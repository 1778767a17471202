"""The adapters' hook around every write: ``with writing(): <the call that changes something>``.

The operator passes a hook that records, durably and before the first write to a cloud, that one is about to happen,
and notes whether each write took effect (a terminal error is the cloud's refusal: nothing changed). So cleanup
knows whether anything can be left behind, even for a write that never came back. Plans and tests pass
:func:`unrecorded`.
"""

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

Writing = Callable[[], AbstractContextManager[object]]


def unrecorded() -> AbstractContextManager[object]:
    return nullcontext()


@contextmanager
def write(planned: list[str] | None, writing: Writing, description: str) -> Iterator[bool]:
    """One write of an adapter: in a plan (``planned`` given) described there and not made (yields False);
    otherwise inside the ``writing`` hook (yields True)."""
    if planned is not None:
        planned.append(description)
        yield False
        return
    with writing():
        yield True
