"""``python -m training.sft ...``: the same command as ``queryagent-train sft ...``."""

import sys

from training.sft.script import main

sys.exit(main())
