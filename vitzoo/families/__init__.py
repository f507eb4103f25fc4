"""Family files register themselves on import; every module in this package is imported.

Adding a family or a checkpoint is one file here, or one `ModelSpec` in an existing file.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")
