"""``python -m graphs.cli``: the ``queryagent`` command."""

import sys

from graphs.cli import main

sys.exit(main())
