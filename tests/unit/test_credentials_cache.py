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
