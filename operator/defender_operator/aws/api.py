"""One way to call AWS: count the call, translate failures into retryable or terminal errors.

boto3 clients use the "standard" retry mode (botocore/data/_retry.json: throttling codes, 5xx and connection errors,
exponential backoff with jitter); what still fails after that is classified here.
"""

from typing import Any

from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from .. import metrics
from ..errors import RetryableError, TerminalError

# Error codes AWS uses for throttling (botocore's standard retry handler treats these as throttles).
THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "RequestThrottled",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
}
TRANSIENT = {
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "RequestTimeout",
    "RequestTimeoutException",
}
# Another operation runs on the StackSet (one of ours, or automatic deployment to an account that joined an OU):
# try again later (API_CreateStackInstances.html, OperationInProgressException).
BUSY = {"OperationInProgressException"}
STACK_SET_BUSY = "StackSetBusy"  # the reason of the RetryableError a BUSY refusal raises
CREDENTIALS = {
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
}

CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 4}, connect_timeout=10, read_timeout=30)


def call(aws_client: Any, operation: str, **kwargs: Any) -> Any:
    """``aws_client.<operation>(**kwargs)``, counted, with failures as RetryableError or TerminalError."""
    service = aws_client.meta.service_model.service_name
    try:
        result = getattr(aws_client, operation)(**kwargs)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        message = str(error.get("Message", code))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
        metrics.cloud_call("aws", service, operation, code, throttled=code in THROTTLING)
        if code in THROTTLING:
            raise RetryableError("AWSThrottled", f"{service}:{operation} is throttled: {message}") from None
        if code in TRANSIENT or status >= 500:
            raise RetryableError(
                "AWSUnavailable", f"{service}:{operation} failed: {code}: {message}"
            ) from None
        if code in CREDENTIALS:
            raise TerminalError(
                "AWSCredentialsRejected", f"AWS rejected the credentials: {code}: {message}"
            ) from None
        if code in BUSY:
            raise RetryableError(STACK_SET_BUSY, f"{service}:{operation}: {message}") from None
        if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
            raise TerminalError("AWSAccessDenied", f"{service}:{operation} was denied: {message}") from None
        raise AwsClientError(code, message, service, operation) from None
    except (EndpointConnectionError, ConnectionError, ReadTimeoutError) as exc:
        metrics.cloud_call("aws", service, operation, "ConnectionError")
        raise RetryableError("AWSUnavailable", f"{service}:{operation} could not reach AWS: {exc}") from None
    except BotoCoreError as exc:
        metrics.cloud_call("aws", service, operation, type(exc).__name__)
        if "credentials" in str(exc).lower():
            raise TerminalError("AWSCredentialsUnavailable", f"No usable AWS credentials: {exc}") from None
        raise RetryableError("AWSUnavailable", f"{service}:{operation} failed: {exc}") from None
    metrics.cloud_call("aws", service, operation, "ok")
    return result


def pages(aws_client: Any, operation: str, key: str, **kwargs: Any) -> list[Any]:
    """Every item of a paged list (``key`` of each page), following NextToken: an organization or a StackSet can
    have more members than one page holds."""
    items: list[Any] = []
    token: str | None = None
    while True:
        page = call(aws_client, operation, **kwargs, **({"NextToken": token} if token else {}))
        items.extend(page.get(key) or [])
        token = page.get("NextToken")
        if not token:
            return items


class AwsClientError(TerminalError):
    """A 4xx the caller may want to look at (e.g. "does not exist"); terminal unless the caller handles it."""

    def __init__(self, code: str, message: str, service: str, operation: str) -> None:
        super().__init__("AWSRequestFailed", f"{service}:{operation} failed: {code}: {message}")
        self.code = code
        self.aws_message = message
