"""``python -m afhub`` is the ``afhub`` command."""

import sys

from afhub.cli import main

sys.exit(main())
