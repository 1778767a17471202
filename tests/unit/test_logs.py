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
