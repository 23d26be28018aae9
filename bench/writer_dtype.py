"""The writer's generation time in float32 and bfloat16 on this CPU (which ``auto`` should pick).

    python -m bench.writer_dtype [--model models/smollm2-writer] [--rounds 3] \
        [--out bench/results/writer_dtype.json]

Greedy texts for 32 ``valid`` writing prompts, one at a time and as one batch, the two dtypes
interleaved per round (so a busy machine slows both alike); seconds per prompt, the median over
rounds. ``torch.cpu`` capability flags are recorded beside them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agent.drafting import load_model, resolve_model
from bench import machine
from memory_store import load_dataset
from memory_store.files import atomic_write
from training.writer.heldout import greedy_texts
from training.writer.rows import writer_rows

OUT = Path(__file__).parent / "results" / "writer_dtype.json"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.writer_dtype")
    parser.add_argument("--data", type=Path, default=Path("data/amazon-scientific"))
    parser.add_argument("--model", default="models/smollm2-writer")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    import torch  # heavy: only this benchmark

    rows, _ = writer_rows(load_dataset(args.data), "valid", limit=32, seed=0)
    model, tokenizer = load_model(resolve_model(args.model), merge=True)
    models = {"float32": model.float(), "bfloat16": None}
    models["bfloat16"] = load_model(resolve_model(args.model), merge=True)[0].to(torch.bfloat16)
    times: dict[str, dict[str, list[float]]] = {d: {"one": [], "batch32": []} for d in models}
    for m in models.values():  # warm-up
        greedy_texts(m, tokenizer, rows[:2], batch=2)
    for _ in range(args.rounds):
        for name, m in models.items():
            start = time.perf_counter()
            for row in rows[:8]:
                greedy_texts(m, tokenizer, [row], batch=1)
            times[name]["one"].append((time.perf_counter() - start) / 8)
            start = time.perf_counter()
            greedy_texts(m, tokenizer, rows, batch=32)
            times[name]["batch32"].append((time.perf_counter() - start) / 32)
    report = {
        "what": "seconds per writing prompt (greedy, up to 16 new tokens), median over rounds",
        "command": "python -m bench.writer_dtype "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "cpu": {
            "capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": bool(getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()),
            "amx_tile": bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)()),
            "mkldnn_bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        },
        "seconds_per_prompt": {
            d: {k: round(statistics.median(v), 3) for k, v in t.items()} for d, t in times.items()
        },
        "rounds": times,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(args.out, json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["seconds_per_prompt"]), report["cpu"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
