"""timm <-> transformers: one checkpoint, two backends, proven equal.

- `to_transformers(timm_model, spec)` / `to_timm(hf_model, spec)`: the model rebuilt in the other
  library with the same weights (strict: any missing, extra or misshapen key raises
  `BadInputError` naming it).
- `convert_state_dict(state_dict, spec, to)`: the same on bare state dicts.
- `convert(src, to, output)`: `vitzoo convert`, saving in the target library's own format.
- `parity(name)` / `run_parity(names)`: `vitzoo parity`.
- `preprocessing_differences(spec)`: where the spec's transformers pipeline and timm's
  pretrained cfg disagree.

The key maps (one declarative table per family) live in `vitzoo.convert.keymaps`.
"""

from vitzoo.backends.timm_backend import architecture_from_timm
from vitzoo.convert.export import convert, load_source, spec_for_timm_model
from vitzoo.convert.keymaps import CONVERTIBLE_FAMILIES, KEYMAPS, keymap_for
from vitzoo.convert.models import (
    convert_state_dict,
    family_for_timm_name,
    preprocessing_from_timm,
    timm_data_config,
    to_timm,
    to_transformers,
)
from vitzoo.convert.parity import ParityResult, convertible_names, parity, run_parity
from vitzoo.convert.preprocessing import preprocessing_differences

__all__ = [
    "CONVERTIBLE_FAMILIES",
    "KEYMAPS",
    "ParityResult",
    "architecture_from_timm",
    "convert",
    "convert_state_dict",
    "convertible_names",
    "family_for_timm_name",
    "keymap_for",
    "load_source",
    "parity",
    "preprocessing_differences",
    "preprocessing_from_timm",
    "run_parity",
    "spec_for_timm_model",
    "timm_data_config",
    "to_timm",
    "to_transformers",
]
