"""One botocore client class per service, shared by the clients of every set of credentials.

Each object assumes its own role, so it needs its own IAM, CloudFormation and EKS clients; botocore builds a new
client *class* for every client (``ClientCreator._create_client_class``: a method and a lazily built docstring per
API operation, then ``type()``), although the class depends only on the service model and on the session's
``creating-client-class`` handlers. Over 300 new objects that was about a sixth of the operator's CPU, and every
class is cyclic garbage that only a full collection frees (docs/performance.md, "Where the CPU goes").

Only the class is shared. Everything a client sends with, its credentials above all, is made per client as before
(the request signer, the endpoint and its connection pool, the event emitter and the retry handler are arguments
of the instance, not attributes of the class), so sharing a class cannot sign one tenant's request with another's
keys; ``tests/unit/test_client_classes.py`` checks both. Classes are kept per session event emitter, since the
class attributes come from that session's handlers, and are built once per service and API version.

botocore has no public way to reuse a client class, so this wraps its one private method that builds them; if a
botocore release renames it, clients are built as before, only slower (the test above then fails).
"""

import threading
import weakref
from collections.abc import Callable
from typing import Any

from botocore.client import ClientCreator

_BUILD = "_create_client_class"


def share_client_classes() -> bool:
    """Make botocore build each client class once per session, service and API version (idempotent). True when
    classes are shared."""
    build: Callable[..., type] | None = getattr(ClientCreator, _BUILD, None)
    if build is None:
        return False
    if getattr(build, "shared", False):
        return True
    classes: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], type]] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def shared(self: ClientCreator, service_name: str, service_model: Any) -> type:
        key = (service_name, str(service_model.api_version))
        emitter = self._event_emitter  # type: ignore[attr-defined]  # the session's: its handlers make the class
        with lock:
            built = classes.setdefault(emitter, {})
            cls = built.get(key)
            if cls is None:
                cls = built[key] = build(self, service_name, service_model)
        return cls

    shared.shared = True  # type: ignore[attr-defined]
    setattr(ClientCreator, _BUILD, shared)
    return True
