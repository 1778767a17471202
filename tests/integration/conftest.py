"""The integration tests' own guard: the AWS emulator's settings are the same after a test as before it."""

import warnings
from collections.abc import Iterator

import pytest

from defender_operator.sandbox import Sandbox
from tests.support.clouds import aws_control


@pytest.fixture(autouse=True)
def emulator_settings_kept(sandbox: Sandbox, request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests slow CloudFormation down, page lists, authorize IAM or delay IAM's propagation, and most set it back;
    one that does not changes every later test of its worker's sandbox, and which tests come later depends on how
    pytest-xdist shares the files out (IAM's propagation left at 10 s refused every later role the moment it was
    made). Whatever a test left is set back here, and said."""
    before = aws_control(sandbox, "/_sandbox/config", {})
    yield
    after = aws_control(sandbox, "/_sandbox/config", {})
    if after != before:
        aws_control(sandbox, "/_sandbox/config", before)
        warnings.warn(f"{request.node.nodeid} left the AWS emulator's settings at {after}", stacklevel=1)
