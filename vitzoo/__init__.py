"""vitzoo: the vision-transformer family as one zoo over transformers and timm.

>>> import vitzoo
>>> vitzoo.list_models(family="deit")[:2]
['deit-tiny', 'deit-tiny-distilled']
"""

import vitzoo.families  # noqa: F401, I001  (every family file registers its checkpoints)
from vitzoo.errors import BadInputError, UnknownModelError, VitzooError, WeightsNotFoundError
from vitzoo.registry import Architecture, ModelSpec, Preprocessing, get_spec, list_families, list_models
from vitzoo.version import __version__
from vitzoo.zoo import PrecisionAgreement, ZooModel, load, precision_agreement

__all__ = [
    "Architecture",
    "BadInputError",
    "ModelSpec",
    "PrecisionAgreement",
    "Preprocessing",
    "UnknownModelError",
    "VitzooError",
    "WeightsNotFoundError",
    "ZooModel",
    "__version__",
    "get_spec",
    "list_families",
    "list_models",
    "load",
    "precision_agreement",
]
