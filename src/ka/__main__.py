"""``python -m ka``: the ka command."""

import sys

from .cli import main

sys.exit(main())
