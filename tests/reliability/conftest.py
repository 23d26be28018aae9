"""The ``fuzz`` marker: the long Hypothesis runs, only when asked for with ``-m fuzz``.

Every property in ``test_fuzz_inputs.py`` runs twice: a bounded number of examples in the default
run (CI), and many more in its ``fuzz``-marked twin, which is skipped unless the ``-m``
expression names ``fuzz``.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "fuzz" in (config.option.markexpr or ""):
        return
    skip = pytest.mark.skip(reason="long fuzz run: select it with -m fuzz")
    for item in items:
        if item.get_closest_marker("fuzz") is not None:
            item.add_marker(skip)
