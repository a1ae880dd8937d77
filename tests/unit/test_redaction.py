"""Secret-looking argument names are redacted by word, not by substring."""

from __future__ import annotations

import pytest

from pgqueue.dsn import error_summary
from pgqueue.payload import REDACTED, is_secret_key, redact, scrub_secrets


@pytest.mark.parametrize(
    "key",
    ["password", "db_password", "PASSWORD", "api_key", "apiKey", "X-Api-Key", "authToken",
     "auth", "client_secret", "private_key", "sessionId", "token", "pin", "passphrase"],
)
def test_secret_keys(key: str) -> None:
    """Keys whose words name a secret are redacted."""
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key", ["author", "passenger_count", "to", "subject", "spin", "tokenizer_name", "compass"]
)
def test_ordinary_keys(key: str) -> None:
    """Words that merely contain a secret-looking substring are left alone."""
    assert not is_secret_key(key)


def test_redact_nested() -> None:
    """Nested mappings and lists are redacted too; other values are copied unchanged."""
    value = {"user": "ann", "auth": {"password": "hunter2"}, "items": [{"api_key": "k-1"}]}
    assert redact(value) == {"user": "ann", "auth": REDACTED, "items": [{"api_key": REDACTED}]}


def test_scrub_secret_values_from_error_text() -> None:
    """Secret values that a task formatted into an error message are scrubbed from it."""
    args = {"user": "ann", "password": "hunter2", "pin": "12"}
    text = scrub_secrets("login failed for ann with hunter2 (pin 12)", args)
    assert text == "login failed for ann with [REDACTED] (pin 12)"


def test_error_summary_is_the_first_line_with_passwords_masked() -> None:
    error = RuntimeError("could not reach postgresql://app:s3cret@db/app\nDETAIL: more")
    assert error_summary(error) == "could not reach postgresql://app:***@db/app"
    assert error_summary(RuntimeError("  "), "no detail") == "no detail"
