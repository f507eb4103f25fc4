"""`python -m vitzoo.cli` runs the `vitzoo` command."""

import sys

from vitzoo.cli import main

sys.exit(main())
