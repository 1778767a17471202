"""The adapters' hook around every write: ``with writing(): <the call that changes something>``.

The operator passes a hook that records, durably and before the first write to a cloud, that one is about to happen,
and notes whether each write took effect (a terminal error is the cloud's refusal: nothing changed). So cleanup
knows whether anything can be left behind, even for a write that never came back. Plans and tests pass
:func:`unrecorded`.
"""

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

Writing = Callable[[], AbstractContextManager[object]]


def unrecorded() -> AbstractContextManager[object]:
    return nullcontext()
