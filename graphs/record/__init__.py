"""The trajectory record: the versioned record of what the agent did, built from the graph's output.

A trajectory is one graph run: the profile the run recalled, every draft and refinement (the
chain of retrieval) with the token ids recorded when they were generated, what each query
retrieved and how well that fit, and the final recommendation. All of it is in the graph's
``OutputState`` (``profile`` and ``attempts``), so a record is built from an output, its input and
the run's metadata; nothing listens to callbacks::

    from graphs.record import record_from_output, write_trajectories
    out = graph.invoke({"user_id": "A1SWWHE1L3XR3V"}, context=ctx)
    record = record_from_output(out, {"user_id": "A1SWWHE1L3XR3V"}, model="smollm2-sft")
    write_trajectories("runs/demo.jsonl", [record], {"command": "...", "config": {...}})

Many runs at once go through ``graphs.offline.runner.OfflineRunner`` (``graph.batch``: outputs in
input order, so output ``i`` is input ``i``'s record, no matching by key).

Training (SFT, GRPO) and analysis read these files, so the schema is versioned (``SCHEMA``, v3).
One module per concern, this package's face re-exporting their public names:

* ``schema``: the v3 pydantic records and the schema names;
* ``migration``: v1 and v2 lines converted to v3 on read;
* ``build``: a record from a graph output, a live run's stamps, the code's git version;
* ``files``: JSONL files with sidecars, written atomically, appended under a lock, loaded.
"""

from graphs.record.build import code_version, record_from_output, run_stamp
from graphs.record.files import (
    LoadedTrajectories,
    TrajectoryWriter,
    append_trajectories,
    check_appendable,
    load_trajectories,
    meta_path,
    read_meta,
    write_trajectories,
)
from graphs.record.schema import (
    OLD_SCHEMAS,
    SCHEMA,
    SCHEMA_V1,
    SCHEMA_V2,
    Target,
    TrajectoryError,
    TrajectoryRecord,
    TrajectoryStep,
)

__all__ = [
    "OLD_SCHEMAS",
    "SCHEMA",
    "SCHEMA_V1",
    "SCHEMA_V2",
    "LoadedTrajectories",
    "Target",
    "TrajectoryError",
    "TrajectoryRecord",
    "TrajectoryStep",
    "TrajectoryWriter",
    "append_trajectories",
    "check_appendable",
    "code_version",
    "load_trajectories",
    "meta_path",
    "read_meta",
    "record_from_output",
    "run_stamp",
    "write_trajectories",
]
