"""`python -m rapsam.training CONFIG`, for `torchrun --nproc_per_node=N -m rapsam.training CONFIG`."""

import sys

from rapsam.cli import train_main

sys.exit(train_main())
