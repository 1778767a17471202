"""Errors the reconciler understands: retryable ones back off, terminal ones stop and say what to fix.

Adapters translate every SDK exception into one of these, so the decision logic never sees botocore or azure-core
types. Messages carry the cloud's own words and never a credential.
"""


class CloudError(Exception):
    """A failed cloud call. ``reason`` is the CamelCase condition reason shown on the object."""

    retryable: bool = False

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class RetryableError(CloudError):
    """Throttling, 5xx, timeouts, connection resets: try again later, with backoff."""

    retryable = True


class TerminalError(CloudError):
    """AccessDenied, validation, conflicts, unusable credentials: the user must change something."""
