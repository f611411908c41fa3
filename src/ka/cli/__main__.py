"""``python -m ka.cli``: the ka command."""

import sys

from . import main

sys.exit(main())
