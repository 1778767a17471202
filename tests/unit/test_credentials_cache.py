"""Clients and credentials are cached per credentials, and dropped when no object has used them for a while."""

import time

from defender_operator.credentials import CredentialFactory, _Keys
from defender_operator.settings import Settings


def test_idle_clients_and_credentials_are_forgotten_and_used_ones_kept() -> None:
    factory = CredentialFactory(Settings(aws_endpoint_url="http://127.0.0.1:9"), lambda ns, name: {})
    gone, kept = _Keys("AKIAGONE", "s1", None), _Keys("AKIAKEPT", "s2", None)
    old = factory._client(gone, "sts", "us-east-1")
    factory._client(kept, "sts", "us-east-1")
    factory._used[(gone, "sts", "us-east-1")] = time.monotonic() - 3600  # not used for an hour
    assert factory.forget_idle(900) == 1
    assert factory._client(kept, "sts", "us-east-1") is not None
    assert factory._client(gone, "sts", "us-east-1") is not old  # built again when needed again


def test_clients_are_bounded_least_recently_used_first() -> None:
    """With more credentials than the cache holds, the least recently used clients go (memory bounded by the cache,
    not by the number of objects), and a client in use stays."""
    factory = CredentialFactory(
        Settings(aws_endpoint_url="http://127.0.0.1:9", aws_client_cache=8), lambda ns, name: {}
    )
    keys = [_Keys(f"AKIA{i:04d}", "s", None) for i in range(20)]
    first = factory._client(keys[0], "sts", "us-east-1")
    for index, key in enumerate(keys[1:], start=1):
        factory._client(key, "sts", "us-east-1")
        if index % 4 == 0:
            assert factory._client(keys[0], "sts", "us-east-1") is first  # used again: kept
    assert len(factory._clients) == 8 and len(factory._used) <= 8 + 1
    assert factory._client(keys[0], "sts", "us-east-1") is first
    assert (keys[1], "sts", "us-east-1") not in factory._clients
