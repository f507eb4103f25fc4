"""Errors vitzoo raises on purpose.

Every message says what is wrong and what to do next, so the CLI can print it as is
instead of a traceback from inside a dependency.
"""

from __future__ import annotations

import re
import sys
from typing import NoReturn


class VitzooError(Exception):
    """Base class: an error whose message is meant for the user, not a bug report."""


class UnknownModelError(VitzooError, KeyError):
    """A name that is neither registered, nor a local folder, nor a timm model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class WeightsNotFoundError(VitzooError, OSError):
    """Pretrained weights are neither in the local Hub cache nor reachable."""


class BadInputError(VitzooError, ValueError):
    """An argument or an input (image, path, option) that cannot be used as given."""


class Interrupted(VitzooError):
    """A run stopped by SIGINT or SIGTERM after saving a checkpoint to resume from. `exit_code` is the shell's
    128 + the signal (130, 143), which cluster schedulers read as 'pre-empted', not 'failed'."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_code = 128 + signal_number


class DiskFullError(VitzooError):
    """The disk filled up while writing; what was there before is intact."""


_TOKEN_LIKE = re.compile(r"hf_[A-Za-z0-9_\-]{4,}")


def redact_tokens(text: str) -> str:
    """`text` with anything that looks like a Hugging Face token (hf_...) replaced, for messages that
    echo what a user typed."""
    return _TOKEN_LIKE.sub("<redacted>", text)


_ACCESS_TOKEN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")


def looks_like_token(text: str) -> bool:
    """Whether `text` holds a Hugging Face access token (hf_ and 30 or more letters and digits; real ones have
    34): a token pasted where a name belongs is refused before it reaches a message or a Hub URL. Stricter than
    `redact_tokens`, so that names such as hf_cache are not refused."""
    return bool(_ACCESS_TOKEN.search(text))


def exit_usage_error(prog: str, message: str) -> NoReturn:
    """argparse's refusal (exit code 2) in one line: the message and where help is, without the usage block
    that would bury it (a recipe's usage runs to dozens of lines), and never echoing a token."""
    sys.stderr.write(f"{prog}: error: {redact_tokens(message)} (see `{prog} --help`)\n")
    sys.exit(2)
