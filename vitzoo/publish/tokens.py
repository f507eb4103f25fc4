"""The Hugging Face token while publishing: found once, never printed, saved or put in a card.

Everything a push reads (vitzoo.json, config.json, args.json, results.json) goes through `scrub`;
the export's last guard (`export._assert_no_secret`) checks the written files for the token itself.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vitzoo.errors import VitzooError

REDACTED = "<redacted>"
# argument names that hold credentials (hub_token, hf_token, token, ...; not tokenizer_class or pad_token_id)
SECRET_KEY = re.compile(r"(^|_)(auth_|access_|api_)?token$|secret|password|api_?key", re.IGNORECASE)


class PushError(VitzooError):
    """The upload could not happen (no token, refused, network); the local export is intact."""


def scrub(value: Any, secrets: tuple[str, ...] = (), by_key: bool = True) -> Any:
    """A copy of `value` with anything token-like replaced: strings starting with `hf_`, any of
    `secrets` wherever it appears, and (`by_key`) string values under keys named like a token."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED
            if by_key and SECRET_KEY.search(str(key)) and isinstance(item, str) and item
            else scrub(item, secrets, by_key)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [scrub(item, secrets, by_key) for item in value]
    if isinstance(value, str):
        if value.startswith("hf_"):
            return REDACTED
        for secret in secrets:
            if secret:
                value = value.replace(secret, REDACTED)
    return value


def known_secrets() -> tuple[str, ...]:
    """The strings to redact wherever they appear: the token, if there is one."""
    token = hub_token()
    return (token,) if token else ()


def hub_token() -> str | None:
    """The token of `HF_TOKEN` or `hf auth login`, or None."""
    import huggingface_hub

    return huggingface_hub.get_token()


def login_hint(first: str) -> str:
    return (
        f"{first} Log in once with `hf auth login` (a token with write access, from "
        "https://huggingface.co/settings/tokens), or set the HF_TOKEN environment variable."
    )
