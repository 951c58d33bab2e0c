"""The one exception type a user sees: a message that says what is wrong and what to do."""

from __future__ import annotations

import difflib
from typing import Iterable


class HalluguardError(Exception):
    """A problem the user can fix (bad input, missing model, wrong config).

    The CLI prints only the message, without a traceback, and exits with status 2.
    """


class ConfigError(HalluguardError):
    """A config key or value that does not fit the schema."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or an empty string when none is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
