"""Which failures of a request to the API server are its absence (wait and try again) and which are a refusal (a
person must look): start-up, passes and cleanup all decide by ``kube.api_server_unavailable``."""

import urllib3
from kubernetes.client.exceptions import ApiException

from defender_operator.kube import api_server_unavailable


def test_no_answer_and_a_busy_or_failing_server_are_its_absence() -> None:
    refused = urllib3.exceptions.NewConnectionError(None, "Connection refused")  # type: ignore[arg-type]
    assert api_server_unavailable(urllib3.exceptions.MaxRetryError(None, "/api", refused))  # type: ignore[arg-type]
    for status in (429, 500, 502, 503, 504):
        assert api_server_unavailable(ApiException(status=status))
    # the Kubernetes client turns a TLS failure (an API server restarting behind its address) into status 0
    assert api_server_unavailable(
        ApiException(status=0, reason="SSLError\nEOF occurred in violation of protocol")
    )


def test_a_refusal_or_an_invalid_request_is_not() -> None:
    for status in (401, 403, 404, 409, 422):
        assert not api_server_unavailable(ApiException(status=status))
    assert not api_server_unavailable(ValueError("a bug"))
