"""``python -m lyactl`` runs the command-line interface (:func:`lyactl.cli.main`)."""

import sys

from .cli import main

__all__: list[str] = []

sys.exit(main())
