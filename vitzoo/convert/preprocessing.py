"""How a spec's transformers pipeline and timm's pretrained cfg for the same checkpoint differ."""

from __future__ import annotations

import math
from typing import Any

from vitzoo.registry import ModelSpec, Preprocessing


def _resize_text(mode: str, size: int) -> str:
    return f"squash to {size}x{size}" if mode == "exact" else f"shortest edge to {size}"


def _crop_text(prep: Preprocessing) -> str:
    if prep.crop_size is None:
        return "none"
    return f"centre {prep.crop_size} (crop_pct {prep.crop_size / prep.resize_size:.4g})"


def _timm_cfg(spec: ModelSpec) -> dict[str, Any] | None:
    import timm

    if spec.timm_name is None:
        return None
    try:
        return timm.models.get_pretrained_cfg(spec.timm_name).to_dict()
    except (RuntimeError, AttributeError):
        return None


def preprocessing_differences(spec: ModelSpec, timm_cfg: dict[str, Any] | None = None) -> list[str]:
    """Where `spec`'s transformers pipeline and timm's pretrained cfg (input_size, crop_pct,
    crop_mode, interpolation, mean, std) of `spec.timm_name` disagree, one line per field.

    Empty when they agree, or when the spec has no timm equivalent. `timm_cfg` replaces the cfg
    timm registers for `spec.timm_name` (e.g. one read from a saved folder).
    """
    cfg = timm_cfg if timm_cfg is not None else _timm_cfg(spec)
    if not cfg:
        return []
    hf = spec.preprocessing
    size = int(cfg.get("input_size", (3, 224, 224))[-1])
    crop_pct = cfg.get("crop_pct") or 1.0
    crop_mode = cfg.get("crop_mode") or "center"
    resize = math.floor(size / crop_pct)
    timm_mode = "exact" if crop_mode == "squash" else "shortest"
    out: list[str] = []
    if hf.input_size != size:
        out.append(f"input size: transformers {hf.input_size}, timm {size}")
    hf_resize = _resize_text(hf.resize_mode, hf.resize_size)
    timm_resize = _resize_text(timm_mode, resize) + ("" if crop_mode in ("squash", "center") else f" ({crop_mode})")
    if hf_resize != timm_resize:
        out.append(f"resize: transformers {hf_resize}, timm {timm_resize}")
    hf_pct = hf.input_size / hf.resize_size if hf.crop_size else 1.0
    if not math.isclose(hf_pct, crop_pct, rel_tol=1e-3):
        out.append(f"centre crop: transformers {_crop_text(hf)}, timm crop_pct {crop_pct:.4g}")
    timm_interp = cfg.get("interpolation") or "bilinear"
    if hf.interpolation != timm_interp:
        out.append(f"interpolation: transformers {hf.interpolation}, timm {timm_interp}")
    for field in ("mean", "std"):
        ours, theirs = tuple(getattr(hf, field)), tuple(cfg.get(field) or ())
        if len(ours) != len(theirs) or any(not math.isclose(a, b, abs_tol=1e-4) for a, b in zip(ours, theirs)):
            out.append(f"{field}: transformers {list(ours)}, timm {list(theirs)}")
    return out
