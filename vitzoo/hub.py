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
import re
import socket
from urllib.parse import urlparse

from huggingface_hub import constants, try_to_load_from_cache

from vitzoo.errors import BadInputError, WeightsNotFoundError


def cache_dir() -> str:
    return str(constants.HF_HUB_CACHE)


def offline() -> bool:
    return bool(constants.HF_HUB_OFFLINE)


def cached_file(repo_id: str, filename: str = "config.json", revision: str | None = None) -> str | None:
    """The path of `filename` of `repo_id` in the local Hub cache, or None when it is not there."""
    found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir(), revision=revision)
    return found if isinstance(found, str) else None


def is_cached(repo_id: str, filename: str = "config.json", revision: str | None = None) -> bool:
    return cached_file(repo_id, filename, revision) is not None


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


def local_weights(repo_id: str, revision: str | None = None) -> str | None:
    """The local weights file the loaders will read for a folder or a cached repository, checked by
    `check_weights_file`: the first of `WEIGHT_FILES` there, so safetensors before a pickle, as
    transformers and timm choose. None when none is local (the loaders download it)."""
    for name in WEIGHT_FILES:
        path = os.path.join(repo_id, name) if os.path.isdir(repo_id) else cached_file(repo_id, name, revision)
        if path is not None and os.path.isfile(path):
            check_weights_file(path)
            return path
    return None


def check_weights_file(path: str) -> None:
    """Refuse, naming it, a weights file that cannot be read whole, or a pickle that holds more than tensors.

    A safetensors file's header is checked against the file's size (a truncated file fails here). A pickle
    (`pytorch_model.bin`) is opened with `torch.load(weights_only=True)` onto the meta device: torch's
    unpickler that builds only tensors and plain containers, so a crafted file never runs code, and no
    tensor data is read. It is the same loader transformers and timm then read the file with; torch
    before 2.6 is refused, as transformers refuses it, since its weights_only could be bypassed
    (CVE-2025-32434). The shards behind an index file are left to the loaders."""
    import pickle

    import torch
    from packaging.version import Version
    from safetensors import SafetensorError, safe_open

    again = "a truncated download or copy? Download or copy it again, or save the model again"
    if path.endswith(".index.json"):
        return
    if path.endswith(".safetensors"):
        try:
            with safe_open(path, framework="pt"):
                return
        except (SafetensorError, OSError) as error:
            raise BadInputError(f"{path} is damaged ({_first_sentence(error)}): {again}") from None
    if Version(torch.__version__).release < (2, 6):
        raise BadInputError(f"{path} is a pickle, and reading one safely needs torch 2.6 or later (CVE-2025-32434), "
                            f"this is torch {torch.__version__}: upgrade torch, or use a copy saved as model.safetensors")
    try:
        torch.load(path, map_location="meta", weights_only=True)
    except pickle.UnpicklingError as error:
        needs = re.search(r"GLOBAL (\S+)", str(error))
        raise BadInputError(
            f"{path} was not loaded: it is a pickle that needs {needs.group(1) if needs else 'objects other than tensors'} "
            "to load, and vitzoo reads pickled weights only with torch.load(weights_only=True), which builds tensors "
            "and plain containers alone; use a copy saved as model.safetensors"
        ) from None
    except Exception as error:  # a damaged pickle raises what its bytes happen to trigger: EOFError, KeyError, RuntimeError...
        raise BadInputError(f"{path} cannot be read as PyTorch weights ({type(error).__name__}: "
                            f"{_first_sentence(error)}): {again}") from None


def _first_sentence(error: BaseException) -> str:
    return str(error).strip().split("\n")[0].split(". ")[0] or type(error).__name__
