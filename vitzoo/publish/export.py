"""The Hub-ready export folder: `model.safetensors` (never a pickle), `config.json` (label names
included), `preprocessor_config.json`, `vitzoo.json` (the spec, the base model, the training arguments
and results, the repo it was made for) and `README.md` (the model card), written atomically.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import struct
from typing import Any

from vitzoo.errors import BadInputError
from vitzoo.io import HUB_EXPORT, atomic_directory, read_json
from vitzoo.publish.card import render_card
from vitzoo.publish.source import VITZOO_FILE, ModelSource, base_spec, detect_kind, resolve_source
from vitzoo.publish.tokens import PushError, known_secrets, scrub

EXPORT_DIR = "hub_export"
CARD_FILE = "README.md"
REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9_.-]+$")
WEIGHT_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


def check_repo_id(repo_id: str) -> str:
    """`user/name` (or `org/name`) as the Hub accepts it, else a BadInputError saying so."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not isinstance(repo_id, str) or not REPO_ID.match(repo_id):
        raise BadInputError(
            f"repo id {repo_id!r} must look like USER/NAME or ORG/NAME (letters, digits, '-', '_', '.'), "
            "e.g. someone/deit-tiny-digits"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise BadInputError(f"repo id {repo_id!r} is not valid on the Hub: {error}") from None
    return repo_id



@dataclasses.dataclass
class Export:
    path: str
    kind: str
    files: list[tuple[str, int]]  # (relative path, size in bytes), sorted

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.files)


def default_export_dir(source: ModelSource) -> str:
    if source.run_dir is not None:
        return os.path.join(source.run_dir, EXPORT_DIR)
    return source.model_dir.rstrip(os.sep) + "-" + EXPORT_DIR


def _weight_files(model_dir: str) -> list[str]:
    names = sorted(os.listdir(model_dir))
    weights = [n for n in names if n.endswith(WEIGHT_SUFFIXES)]
    if "model.safetensors.index.json" in names:
        weights.append("model.safetensors.index.json")
    if not any(n.endswith(".safetensors") for n in weights):
        pickles = [n for n in names if n.endswith(PICKLE_SUFFIXES)]
        found = f" (found only pickled weights: {', '.join(pickles)})" if pickles else ""
        raise BadInputError(
            f"{model_dir} has no model.safetensors{found}; vitzoo publishes safetensors only. "
            "Re-save the model with vitzoo.load(folder).save_pretrained(new_folder)."
        )
    return weights


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)  # weights are never rewritten in place, so a hard link is a safe copy
    except OSError:
        shutil.copy2(source, target)


def export_model(
    path: str | os.PathLike,
    repo_id: str,
    export_dir: str | os.PathLike | None = None,
) -> Export:
    """Write the Hub-ready folder (weights, configs, vitzoo.json, README.md) atomically and return it."""
    check_repo_id(repo_id)
    source = resolve_source(path)
    kind = detect_kind(source.meta)
    target = os.path.abspath(os.fspath(export_dir) if export_dir else default_export_dir(source))
    # never over the model it reads, nor its run folder: the export is written as a whole folder
    reading = [source.model_dir, *([source.run_dir] if source.run_dir else [])]
    secrets = known_secrets()
    card = render_card(source, repo_id, kind, secrets=secrets)
    with atomic_directory(target, HUB_EXPORT, reading=reading, option="--export-dir") as tmp:
        for name in _weight_files(source.model_dir):
            _link_or_copy(os.path.join(source.model_dir, name), os.path.join(tmp, name))
        with open(os.path.join(tmp, "config.json"), "w") as handle:
            json.dump(source.config, handle, indent=2)
        if os.path.isfile(os.path.join(source.model_dir, "preprocessor_config.json")):
            with open(os.path.join(tmp, "preprocessor_config.json"), "w") as handle:
                json.dump(
                    scrub(read_json(os.path.join(source.model_dir, "preprocessor_config.json")), secrets, False),
                    handle,
                    indent=2,
                )
        with open(os.path.join(tmp, VITZOO_FILE), "w") as handle:
            json.dump(_export_metadata(source, repo_id), handle, indent=2, default=str)
        with open(os.path.join(tmp, CARD_FILE), "w", encoding="utf-8") as handle:
            handle.write(str(card))
        _assert_no_secret(tmp, secrets)
        files = sorted(
            (os.path.relpath(os.path.join(root, name), tmp), os.path.getsize(os.path.join(root, name)))
            for root, _, names in os.walk(tmp)
            for name in names
        )
    return Export(path=target, kind=kind, files=files)


def _export_metadata(source: ModelSource, repo_id: str) -> dict[str, Any]:
    meta = dict(source.meta)
    training = source.training
    if source.args is not None:
        training["arguments"] = source.args
    if source.results is not None:
        training["results"] = {
            key: source.results[key]
            for key in (
                "eval",
                "test",
                "steps",
                "epochs",
                "train_images_per_second",
                "wall_time_seconds",
                "num_processes",
                "data",
                "environment",
            )
            if key in source.results
        }
    base = base_spec(source)
    if base is not None:
        training.setdefault("base_model_hub_id", base.hub_id)
    if training:
        meta["training"] = training
    meta["hub_repo_id"] = repo_id
    return meta


def _assert_no_secret(folder: str, secrets: tuple[str, ...]) -> None:
    """A last guard: no exported file (text files, safetensors headers) holds the token."""
    needles = [s.encode() for s in secrets if s]
    if not needles:
        return
    for root, _, names in os.walk(folder):
        for name in names:
            file = os.path.join(root, name)
            with open(file, "rb") as handle:
                if name.endswith(".safetensors"):
                    (length,) = struct.unpack("<Q", handle.read(8))
                    data = handle.read(min(length, 100_000_000))
                else:
                    data = handle.read()
            if any(needle in data for needle in needles):
                raise PushError(f"refusing to publish: {name} contains your Hugging Face token")


def is_export(path: str) -> bool:
    """A folder written by export_model (pushed again as it is, without re-exporting)."""
    meta_path = os.path.join(path, VITZOO_FILE)
    if not (os.path.isfile(os.path.join(path, CARD_FILE)) and os.path.isfile(meta_path)):
        return False
    return "hub_repo_id" in read_json(meta_path)


def existing_export(path: str) -> Export:
    """An export folder read back as it is (a retry uploads it without exporting again)."""
    meta = read_json(os.path.join(path, VITZOO_FILE))
    files = sorted(
        (os.path.relpath(os.path.join(root, name), path), os.path.getsize(os.path.join(root, name)))
        for root, _, names in os.walk(path)
        for name in names
    )
    return Export(path=os.path.abspath(path), kind=detect_kind(meta), files=files)
