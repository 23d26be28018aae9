"""``python -m training.grpo ...``: the same command as ``queryagent-train grpo ...``."""

import sys

from training.grpo.script import main

sys.exit(main())
