"""``python -m gcmr`` = the ``gcmr`` command."""

import sys

from gcmr.cli import main

sys.exit(main())
