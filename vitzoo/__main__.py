"""`python -m vitzoo` runs the `vitzoo` command: `accelerate launch -m vitzoo finetune ...` launches a recipe on N
processes from an installed vitzoo, without a checkout's recipes/."""

import sys

from vitzoo.cli import main

sys.exit(main())
