"""Both log formats carry the structured fields (which object, what result), not only the message."""

import json
import logging

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
