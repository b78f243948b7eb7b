"""`python -m unimm ...`, which is what `torchrun -m unimm train ...` runs on every process."""

import sys

from unimm.cli import main

sys.exit(main())
