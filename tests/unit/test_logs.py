"""Both log formats carry the structured fields (which object, what result), not only the message."""

import json
import logging
from typing import Any

import pytest

from defender_operator import logs


def emit(capsys: pytest.CaptureFixture[str], fmt: str) -> str:
    logs.configure(fmt, "INFO")
    try:
        logging.getLogger("defender_operator").warning(
            "retryable error; backing off",
            extra={"object": "security/payments-prod", "delay": 4.0, "reason": ""},
        )
    finally:
        logging.getLogger().handlers.clear()
    return capsys.readouterr().err.strip()


def test_json_lines_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    entry = json.loads(emit(capsys, "json"))
    assert entry["level"] == "WARNING" and entry["message"] == "retryable error; backing off"
    assert entry["object"] == "security/payments-prod" and entry["delay"] == 4.0


def test_text_lines_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    line = emit(capsys, "text")
    assert line.endswith('retryable error; backing off object=security/payments-prod delay=4.0 reason=""')


@pytest.mark.parametrize(
    "line",
    [
        "<AssumeRoleResult><Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>wJalr/K7MDENG+bPxRfi"
        "</SecretAccessKey><SessionToken>FQoGZXIvYXdzEJr//////////</SessionToken></Credentials>",
        "{'SecretAccessKey': 'wJalr/K7MDENG+bPxRfi', 'SessionToken': 'FQoGZXIvYXdzEJr//////////'}",
        '{"token_type": "Bearer", "access_token": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig"}',
        "grant_type=client_credentials&client_id=app&client_secret=wJalr/K7MDENG+bPxRfi&scope=x",
        "request headers: {'Authorization': 'Bearer eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.e30.sig'}",
        "headers={'X-Amz-Security-Token': 'FQoGZXIvYXdzEJr//////////', 'Host': 'sts'}",
        # botocore's DEBUG dump of a request's headers: a dict whose values are bytes
        "Sending http request: <AWSPreparedRequest headers={'X-Amz-Security-Token': b'FQoGZXIvYXdzEJr//////////', "
        "'Authorization': b'AWS4-HMAC-SHA256 Credential=ASIA1/20261204/us-east-1/sts/aws4_request, "
        "Signature=wJalr/K7MDENG+bPxRfi'}>",
    ],
)
def test_credential_fields_are_redacted_whoever_they_belong_to(line: str) -> None:
    redacted = logs.Redactor().redact(line)
    for secret in ("wJalr/K7MDENG+bPxRfi", "FQoGZXIvYXdzEJr", "eyJ0eXAiOiJKV1Qi"):
        assert secret not in redacted
    assert logs.REDACTED in redacted


def test_registered_secrets_are_redacted_anywhere_even_base64_encoded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.secret("canary-value-31337")
    logs.configure("json", "DEBUG")
    try:
        logging.getLogger("botocore.parsers").debug("Response body: b'%s'", "canary-value-31337")
        logging.getLogger("kubernetes").debug("data: Y2FuYXJ5LXZhbHVlLTMxMzM3")
        try:
            raise ValueError("failed with canary-value-31337")
        except ValueError:
            logging.getLogger("defender_operator").exception("oops", extra={"detail": "canary-value-31337"})
    finally:
        logging.getLogger().handlers.clear()
    out = capsys.readouterr().err
    assert (
        out.count(logs.REDACTED) >= 4
        and "canary-value-31337" not in out
        and "Y2FuYXJ5LXZhbHVlLTMxMzM3" not in out
    )


def test_kopf_internals_are_left_out_and_its_object_reference_kept(
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs.configure("json", "INFO")
    try:
        logging.getLogger("kopf._core.reactor.processing").warning(
            "Handler failed",
            extra={"settings": object(), "k8s_skip": False, "k8s_ref": {"namespace": "ns", "name": "a"}},
        )
    finally:
        logging.getLogger().handlers.clear()
    entry = json.loads(capsys.readouterr().err)
    assert entry["object"] == "ns/a" and not {"settings", "k8s_skip", "k8s_ref"} & set(entry)


def test_a_secret_is_forgotten_with_the_last_owner_holding_it() -> None:
    redactor = logs.Redactor()
    redactor.add("shared-value-0123456789", ("secret", "a", "keys"))
    redactor.add("shared-value-0123456789", ("secret", "b", "keys"))
    redactor.add("only-a-value-0123456789", ("secret", "a", "keys"))
    assert len(redactor) == 4  # each value and its base64
    redactor.release(("secret", "a", "keys"))
    assert redactor.redact("x shared-value-0123456789 only-a-value-0123456789") == (
        f"x {logs.REDACTED} only-a-value-0123456789"
    )
    redactor.release(("secret", "b", "keys"))
    assert len(redactor) == 0


def test_short_values_never_blank_ordinary_words_ids_or_names() -> None:
    """A tenant's Secret of short values ("security", an account id) must not blank them in everyone's logs."""
    redactor = logs.Redactor()
    for value in ("security", "111122223333", "Onboarded", "a" * (logs.MIN_SECRET - 1)):
        redactor.add(value, "tenant")
    line = "reconciled object=security/payments account=111122223333 reason=Onboarded"
    assert redactor.redact(line) == line and len(redactor) == 0


def test_many_secrets_each_found_in_one_pass_longest_first() -> None:
    redactor = logs.Redactor()
    values = [f"secret-{i:06d}-abcdefghijkl" for i in range(20_000)]
    for i, value in enumerate(values):
        redactor.add(value, i % 7)
    redactor.add(values[5] + "-longer-suffix", "x")  # shares its first characters with a shorter one
    line = f"a {values[0]} b {values[19_999]}{values[3]} c {values[5]}-longer-suffix d"
    assert redactor.redact(line) == f"a {logs.REDACTED} b {logs.REDACTED}{logs.REDACTED} c {logs.REDACTED} d"


def test_a_tenants_secret_blanks_nothing_outside_its_namespace_and_never_structured_status() -> None:
    """Issue 25 (found by an adversarial review): a tenant could store other objects' role names or ARNs in its own
    Secret and have them blanked in every status, which the operator reads back as state."""
    from defender_operator.kube import _redacted

    redactor = logs.REDACTOR
    word = "DefenderForCloud-DefenderForServers"
    redactor.hold(("secret", "tenant-a", "keys"), [word])
    try:
        message = f"role {word} is missing"
        assert redactor.redact(message, namespace="tenant-b") == message
        assert redactor.redact(message, namespace="tenant-a") == f"role {logs.REDACTED} is missing"
        assert redactor.redact(message) == f"role {logs.REDACTED} is missing"  # logs: every secret, anywhere
        status = {
            "aws": {"roleNames": {"defenderForServers": word}},
            "conditions": [{"type": "Ready", "message": message}],
        }
        assert _redacted(status, "tenant-b") == status
        assert _redacted(status, "tenant-a")["aws"] == status["aws"]  # structured fields are never rewritten
    finally:
        redactor.release(("secret", "tenant-a", "keys"))


def test_a_tenants_secret_blanks_nothing_in_log_lines_about_another_namespaces_objects() -> None:
    """Issue 25: a Secret value passes as a credential if it is one line of 16+ characters, so a tenant could store
    another team's role ARN and blank it from every log line about that team's objects. A line about one object (the
    operator's ``object`` field, Kopf's object reference) is searched for its namespace's Secrets only; a line about
    no object, as the SDKs' wire dumps are, for every value held."""
    arn = "arn:aws:iam::210987654321:role/defender-onboarding"
    own = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    redactor = logs.Redactor()
    redactor.hold(("secret", "tenant-a", "keys"), [arn])
    redactor.hold(("secret", "tenant-b", "keys"), [own])
    redactor.add("operator-own-credential-0123456789")  # the operator's identity: redacted in every line

    def filtered(message: str, **about: Any) -> str:
        record = logging.LogRecord("defender_operator", logging.INFO, __file__, 1, message, None, None)
        record.__dict__.update(about)
        redactor.filter(record)
        return record.getMessage()

    line = f"assumed {arn} with {own} and operator-own-credential-0123456789"
    for about_b in ({"object": "tenant-b/prod"}, {"k8s_ref": {"namespace": "tenant-b", "name": "prod"}}):
        assert filtered(line, **about_b) == f"assumed {arn} with {logs.REDACTED} and {logs.REDACTED}"
    assert filtered(line, object="tenant-a/x") == f"assumed {logs.REDACTED} with {own} and {logs.REDACTED}"
    cluster_scoped = {"k8s_ref": {"name": "team-policy"}}
    assert filtered(line, **cluster_scoped) == f"assumed {arn} with {own} and {logs.REDACTED}"
    assert filtered(line) == f"assumed {logs.REDACTED} with {logs.REDACTED} and {logs.REDACTED}"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "failed", None, None)
    record.__dict__.update(object="tenant-b/prod", error=f"AccessDenied on {arn}")
    redactor.filter(record)
    assert record.__dict__["error"] == f"AccessDenied on {arn}"


def test_a_secret_read_again_holds_its_new_values_only_and_oversized_values_are_ignored() -> None:
    redactor = logs.Redactor()
    redactor.hold("owner", ["first-value-0123456789"])
    redactor.hold("owner", ["second-value-0123456789"])  # rotated
    assert redactor.redact("first-value-0123456789") == "first-value-0123456789"
    assert redactor.redact("second-value-0123456789") == logs.REDACTED
    redactor.hold("owner", ["x" * (logs.MAX_SECRET + 1)])
    assert len(redactor) == 0


def test_only_values_that_can_be_credentials_are_held_so_a_tenant_cannot_blank_others_lines() -> None:
    """An adversarial review's find (issue 25): a Secret's secretAccessKey was held before it was checked, so a
    tenant could store "reconcile failed unexpectedly" (or any 16+ character text) and blank it out of every log
    line. A value that is refused as a credential is never held; one that is accepted is, as stored and as used."""
    import pytest as _pytest

    from defender_operator.credentials import _secret
    from defender_operator.errors import TerminalError
    from defender_operator.logs import REDACTOR

    text = "reconcile failed unexpectedly"
    with _pytest.raises(TerminalError):
        _secret(
            lambda ns, n: {"accessKeyId": "AKIAEXAMPLE", "secretAccessKey": text},
            "t",
            "s",
            ("accessKeyId", "secretAccessKey"),
            "AWS",
        )
    assert REDACTOR.redact(f"a line: {text}") == f"a line: {text}"
    key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    found = _secret(
        lambda ns, n: {
            "accessKeyId": "AKIAEXAMPLE",
            "secretAccessKey": key + "\n",
            "note": "a long ordinary sentence",
        },
        "t2",
        "s",
        ("accessKeyId", "secretAccessKey"),
        "AWS",
    )
    assert found["secretAccessKey"] == key
    assert REDACTOR.redact(f"key={key}") == f"key={logs.REDACTED}"
    assert REDACTOR.redact("a long ordinary sentence") == "a long ordinary sentence"
    REDACTOR.release(("secret", "t2", "s"))
