"""Where weights come from: the local Hub cache, the Hub when reachable, or a local folder.

Loading always goes through the libraries' own `from_pretrained` / `timm.create_model(
pretrained=True)`, which read the Hub cache. What this module adds is the decision made before
that call: if the files are not cached and the Hub cannot be reached, the user gets one clear
error naming the repository, the cache folder and the ways forward, at once, instead of a
minute of retries and a traceback from inside huggingface_hub.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache

from vitzoo.errors import WeightsNotFoundError


def cache_dir() -> str:
    return str(constants.HF_HUB_CACHE)


def offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def is_cached(repo_id: str, filename: str = "config.json", revision: str | None = None) -> bool:
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir(), revision=revision)
    return isinstance(found, str)


@functools.lru_cache(maxsize=1)
def hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub endpoint; a closed network answers at once."""
    if offline():
        return False
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def family_note(what: str) -> str:
    """What the family of registered model `what` says a user must do before its weights download
    (`Family.weights_note`: a gated repository, a license to accept); "" for anything else."""
    from vitzoo import registry

    if not registry.is_registered(what):
        return ""
    return registry.get_family(registry.get_spec(what).family).weights_note


def weights_not_found(repo_id: str, what: str, revision: str | None = None, cause: str = "") -> WeightsNotFoundError:
    where = "HF_HUB_OFFLINE=1 is set" if offline() else "the Hub cannot be reached from this machine"
    rev = f" at revision {revision!r}" if revision else ""
    detail = f"\n  ({cause})" if cause else ""
    note = family_note(what)
    detail += f"\n  note: {note}" if note else ""
    return WeightsNotFoundError(
        f"weights for {what} ({repo_id}{rev}) are not in the local Hub cache and {where}.\n"
        f"  cache directory: {cache_dir()} (set HF_HUB_CACHE or HF_HOME to use another)\n"
        "  to go on: download them on a machine with network access "
        f"(`hf download {repo_id}`) and copy the cache here, "
        "or pass a local folder instead of the name, "
        "or train from random weights with pretrained=False (`--scratch` on the command line)."
        f"{detail}"
    )


def ensure_available(repo_id: str, what: str, filename: str, revision: str | None = None) -> None:
    """Raise `WeightsNotFoundError` now if `filename` of `repo_id` can be neither read nor fetched."""
    if os.path.isdir(repo_id):
        return
    if is_cached(repo_id, filename, revision) or hub_reachable():
        return
    raise weights_not_found(repo_id, what, revision)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def ensure_weights(repo_id: str, what: str, revision: str | None = None) -> None:
    """Raise `WeightsNotFoundError` now, naming the files looked for, when a cached or local config
    has no weights beside it (an interrupted download, a folder copied without them)."""
    names = " or ".join(WEIGHT_FILES[::2])
    if os.path.isdir(repo_id):
        if not any(os.path.isfile(os.path.join(repo_id, name)) for name in WEIGHT_FILES):
            raise WeightsNotFoundError(f"{repo_id} has a config.json but no weights file ({names}); copy the "
                                       "weights into it, or pass another folder")
        return
    if any(is_cached(repo_id, name, revision) for name in WEIGHT_FILES) or hub_reachable():
        return
    raise weights_not_found(repo_id, what, revision,
                            cause=f"its config.json is cached, but no weights file ({names}): an interrupted download?")
