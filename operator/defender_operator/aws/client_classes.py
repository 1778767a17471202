"""One botocore client class and service model per service, shared by the clients of every set of credentials.

Each object assumes its own role, so it needs its own IAM, CloudFormation and EKS clients, and botocore builds two
things for every client that depend only on the service: a new client *class* (``ClientCreator._create_client_class``:
a method and a lazily built docstring per API operation, then ``type()``) and a new ``ServiceModel`` around the
cached JSON (``ClientCreator._load_service_model``), whose own caches (each operation's model and shapes, the
endpoint-discovery operation found by walking every operation) then start empty, so every new client pays for them
again on its first calls. Over 300 new objects that was about a fifth of the operator's CPU, and every class is cyclic
garbage only a full collection frees (docs/performance.md, "Where the CPU goes").

Only these are shared. Everything a client sends with, its credentials above all, is made per client as before (the
request signer, the endpoint and its connection pool, the event emitter and the retry handler are arguments of the
instance, not attributes of the class or the model), so sharing cannot sign one tenant's request with another's
keys; ``tests/unit/test_client_classes.py`` checks it. A class is kept per session event emitter (its attributes come
from that session's ``creating-client-class`` handlers) and a model per loader (its JSON comes from there); each is
built once per service and API version. botocore treats a service model as read-only after loading (its one setter,
``signature_version``, is set by nothing).

botocore has no public way to reuse either, so this wraps the two private methods that build them; if a botocore
release renames one, clients are built as before, only slower (the test above then fails).
"""

import threading
import weakref
from collections.abc import Callable
from typing import Any

from botocore.client import ClientCreator

# method of ClientCreator -> (the attribute of the creator that owns what it builds, the arguments that key it)
_SHARED: dict[str, tuple[str, Callable[..., tuple[str, str]]]] = {
    "_create_client_class": (
        "_event_emitter",
        lambda service_name, service_model: (service_name, str(service_model.api_version)),
    ),
    "_load_service_model": (
        "_loader",
        lambda service_name, api_version=None: (service_name, str(api_version)),
    ),
}


def share_client_classes() -> bool:
    """Make botocore build each client class and service model once per session, service and API version
    (idempotent). True when both are shared."""
    return all(_share(method, owner, key) for method, (owner, key) in _SHARED.items())


def _share(method: str, owner: str, key: Callable[..., tuple[str, str]]) -> bool:
    build: Callable[..., Any] | None = getattr(ClientCreator, method, None)
    if build is None:
        return False
    if getattr(build, "shared", False):
        return True
    built: weakref.WeakKeyDictionary[Any, dict[tuple[str, str], Any]] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def shared(self: ClientCreator, *args: Any, **kwargs: Any) -> Any:
        known = key(*args, **kwargs)
        with lock:
            cache = built.setdefault(getattr(self, owner), {})
            found = cache.get(known)
            if found is None:
                found = cache[known] = build(self, *args, **kwargs)
        return found

    shared.shared = True  # type: ignore[attr-defined]
    setattr(ClientCreator, method, shared)
    return True
