"""``python -m benchmarks.pretrain ...``: the pretraining harness's command line (:mod:`.cli`)."""

import sys

from benchmarks.pretrain.cli import main

sys.exit(main())
