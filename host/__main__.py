"""``python -m host`` runs the ``infusekit`` command line."""
import sys

from host.cli import main

sys.exit(main())
