"""Holding a credentials Secret for cleanup, and letting it go, against the API server's answers in the moments
between a read and the patch that tests it: the Secret deleted (404), or changed by someone else (the JSON patch's
``test`` of its resourceVersion fails: 422 as the API server answers a failed test, 409 on a conflict). The stand-in
below answers as the API server does for these two calls and nothing else; ``Kube`` is the product's own."""

from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from defender_operator.errors import RetryableError
from defender_operator.kube import Kube

FINALIZER = "defender-operator.io/in-use-by-0000"


class Secrets:
    """One Secret's API: ``after_read`` runs after each read (another actor's change in the gap that follows)."""

    def __init__(self, finalizers: list[str] | None = None, after_read: Any = None) -> None:
        self.exists, self.version, self.finalizers = True, 1, list(finalizers or [])
        self.after_read = after_read or (lambda secrets: None)

    def read_namespaced_secret(self, name: str, namespace: str) -> Any:
        if not self.exists:
            raise ApiException(status=404, reason="Not Found")
        meta = SimpleNamespace(
            resource_version=str(self.version), finalizers=list(self.finalizers), deletion_timestamp=None
        )
        self.after_read(self)
        return SimpleNamespace(metadata=meta)

    def patch_namespaced_secret(self, name: str, namespace: str, body: Any, **_: Any) -> None:
        if not self.exists:
            raise ApiException(status=404, reason="Not Found")
        if body[0]["value"] != str(self.version):
            raise ApiException(status=422, reason="Unprocessable Entity")  # the test op failed
        self.finalizers, self.version = body[1]["value"], self.version + 1


def kube_with(secrets: Secrets) -> Kube:
    kube = Kube(client.ApiClient(client.Configuration()))
    kube.core = secrets  # type: ignore[assignment]
    return kube


def deleted(secrets: Secrets) -> None:
    secrets.exists = False


def changed(secrets: Secrets) -> None:
    secrets.version += 1


def test_a_secret_deleted_between_the_read_and_the_finalizer_is_not_held() -> None:
    """The campaign's seed 65159: the 404 to the patch was taken for held, and the record named a Secret that
    did not exist, blocking cleanup for good."""
    assert kube_with(Secrets(after_read=deleted)).hold_secret("team", "aws-keys", FINALIZER) is False


def test_a_secret_that_keeps_changing_is_retried_not_taken_for_one_being_deleted() -> None:
    with pytest.raises(RetryableError) as busy:
        kube_with(Secrets(after_read=changed)).hold_secret("team", "aws-keys", FINALIZER)
    assert busy.value.reason == "CredentialsSecretBusy"


def test_a_finalizer_that_cannot_be_taken_off_is_not_given_up_on_silently() -> None:
    """Given up on, it would keep the Secret, and its namespace, Terminating for good."""
    secrets = Secrets(finalizers=[FINALIZER], after_read=changed)
    with pytest.raises(RetryableError):
        kube_with(secrets).release_secret("team", "aws-keys", FINALIZER)
    assert secrets.finalizers == [FINALIZER]


def test_holding_and_letting_go_change_only_this_finalizer() -> None:
    secrets = Secrets(finalizers=["someone.else/keep"])
    kube = kube_with(secrets)
    assert kube.hold_secret("team", "aws-keys", FINALIZER) is True
    assert secrets.finalizers == ["someone.else/keep", FINALIZER]
    kube.release_secret("team", "aws-keys", FINALIZER)
    assert secrets.finalizers == ["someone.else/keep"]
    deleted(secrets)
    kube.release_secret("team", "aws-keys", FINALIZER)  # gone: nothing to let go
