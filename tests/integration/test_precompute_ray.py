"""``--engine ray``: the same precompute on a Ray Data actor pool, Ray local on this machine.

Needs the optional extra (``pip install -e '.[ray]'``); skipped with that reason otherwise.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from agent.context import Context
from graphs.offline.ingest import ingest
from graphs.serving.precompute import precompute
from graphs.serving.results import RECOMMENDATIONS_NAMESPACE
from memory_store import open_store
from tests.helpers.precompute import scripted_deps as scripted_deps_of

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")

pytestmark = [pytest.mark.integration, pytest.mark.slow]

VOLATILE = {"computed_at"}  # when, not what


@pytest.fixture(scope="module")
def local_ray():
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": str(Path(__file__).resolve().parents[2])}},
    )
    yield ray
    ray.shutdown()


def _home(tmp_path: Path, name: str, tiny_dataset) -> Path:
    home = tmp_path / name
    ingest(tiny_dataset, open_store(home), progress=False)
    return home


def _results(home: Path) -> dict[str, dict]:
    items = open_store(home).search(RECOMMENDATIONS_NAMESPACE, limit=100)
    return {i.key: {k: v for k, v in i.value.items() if k not in VOLATILE} for i in items}


def test_ray_engine_equals_the_in_process_engine(
    local_ray, tmp_path: Path, tiny_dataset, tiny_models
) -> None:
    ctx = Context(max_refinements=1)
    tiny_models.save(tmp_path / "models")  # each actor loads the same fitted models
    scripted_deps = partial(scripted_deps_of, tmp_path / "models")
    local_home = _home(tmp_path, "local", tiny_dataset)
    local = precompute(
        open_store(local_home),
        deps_factory=scripted_deps,
        context=ctx,
        batch_size=3,
        progress=False,
    )
    ray_home = _home(tmp_path, "ray", tiny_dataset)
    on_ray = precompute(
        open_store(ray_home),
        engine="ray",
        deps_factory=scripted_deps,
        store_opener=partial(open_store, ray_home),
        context=ctx,
        batch_size=3,
        ray_actors=2,
        model="scripted",
        progress=False,
    )
    assert sorted(on_ray.computed) == sorted(local.computed) == sorted(tiny_dataset.users)
    assert _results(ray_home) == _results(local_home)  # same shoppers, same results, versions
    # the actors wrote into the store: a second run finds every shopper up to date
    again = precompute(
        open_store(ray_home),
        engine="ray",
        deps_factory=scripted_deps,
        store_opener=partial(open_store, ray_home),
        context=ctx,
        model="scripted",
        progress=False,
    )
    assert again.computed == [] and again.up_to_date == len(tiny_dataset.users)
