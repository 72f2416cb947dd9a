"""``python -m lyactl`` runs the command-line interface (:func:`lyactl.app.cli.main`)."""

import sys

from lyactl.app.cli import main

__all__: list[str] = []

sys.exit(main())
