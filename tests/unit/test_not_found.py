"""What a 404 from the API server says is not there: the object itself (it is gone: ``_names``), or its namespace (an
object left in a namespace finalized without it, which the API server lets no one change: ``namespace_gone``), or
neither (an API not served yet after a restart answers plain text). The bodies are the API server's own."""

import json

from kubernetes.client.exceptions import ApiException

from defender_operator.kube import _names, namespace_gone


def _not_found(details: dict[str, str] | None, text: str | None = None) -> ApiException:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = (
        text
        if text is not None
        else json.dumps(
            {
                "kind": "Status",
                "apiVersion": "v1",
                "status": "Failure",
                "reason": "NotFound",
                "details": details,
                "code": 404,
            }
        )
    )
    return exc


def test_a_404_naming_the_object_is_the_object_gone_not_its_namespace() -> None:
    gone = _not_found({"name": "acme", "group": "defender-operator.io", "kind": "awsconnectors"})
    assert _names(gone, "acme")
    assert not namespace_gone(gone, "acme")  # a namespace named as the object changes nothing


def test_a_404_naming_the_namespace_is_the_namespace_gone() -> None:
    gone = _not_found({"name": "team-a", "kind": "namespaces"})
    assert namespace_gone(gone, "team-a")
    assert not namespace_gone(gone, "team-b")
    assert not _names(gone, "team-a")


def test_a_404_naming_nothing_is_neither() -> None:
    for exc in (_not_found(None, text="404 page not found"), _not_found(None, text=""), _not_found({})):
        assert not _names(exc, "acme") and not namespace_gone(exc, "team-a")
