"""The catalog fit's thread settings, timed: one next-item epoch and the ranker's LightGBM fit at
1 and 2 threads, with OpenMP's default wait policy and with ``PASSIVE``.

Each setting runs in its own process (OpenMP reads its wait policy once, when torch or LightGBM
loads it), back to back, ``--repeat`` times, so a shared machine's load falls on all of them
alike; the load average is written beside each time. Every run also writes a digest of what it
fitted, which shows the wait policy changes no number (torch's thread count does; LightGBM's
does not). See ``agent.ranking.threads``::

    PYTHONPATH=. python bench/fit_threads.py --users 1500 --repeat 2 \\
        --out bench/results/fit_threads.json

Expected output (2-core development machine, load average 9-14 from other work, 2026-12-07):
next-item epoch on 1,500 shoppers 73-113 s at 2 threads with the default policy, 10-19 s with
``PASSIVE``, 10-16 s at 1 thread; LightGBM (300 trees, 7,500 synthetic shoppers) 225-364 s at 2
threads by default, 45 s with ``PASSIVE``, 41-68 s at 1 thread; digests equal across policies.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SETTINGS = [  # (threads, OMP_WAIT_POLICY or None for OpenMP's default)
    (1, None),
    (2, None),
    (2, "PASSIVE"),
    (1, "PASSIVE"),
]


def _nextitem(threads: int, users: int) -> dict[str, object]:
    # torch (and its OpenMP) first, heavy and only in the child: agent.ranking would set
    # OMP_WAIT_POLICY=PASSIVE when it was not given, and the default is one of the settings.
    import torch

    from agent.ranking.nextitem import NextItemConfig, NextItemModel
    from graphs.cli import BUNDLED_DATA
    from memory_store import load_dataset

    torch.set_num_threads(threads)
    dataset = load_dataset(BUNDLED_DATA)
    cut = {u: list(s[:-1]) for u, s in sorted(dataset.sequences.items())[:users] if len(s) >= 2}
    t = time.perf_counter()
    model = NextItemModel.fit(cut, sorted(dataset.products), NextItemConfig(epochs=1, seed=0))
    seconds = time.perf_counter() - t
    digest = hashlib.sha256()
    for _, value in sorted(model.module.state_dict().items()):
        digest.update(value.numpy().tobytes())
    return {"seconds": round(seconds, 1), "digest": digest.hexdigest()[:16]}


def _lightgbm(threads: int, users: int) -> dict[str, object]:
    import lightgbm as lgb  # heavy: only the child process that times it loads it

    rng = np.random.default_rng(0)
    groups, labels = [], []
    for _ in range(users * 5):  # about as many rows as the bundled catalog's ranker gets
        n = int(rng.integers(15, 40))
        x = rng.normal(size=(n, 12))
        y = np.zeros(n, dtype=int)
        if rng.random() < 0.5:
            y[int(np.argmax(x[:, 0] + rng.normal(size=n)))] = 3 if rng.random() < 0.3 else 1
        groups.append(x)
        labels.append(y)
    t = time.perf_counter()
    model = lgb.LGBMRanker(  # the ranker's parameters (agent.ranking.ranker)
        objective="lambdarank",
        num_leaves=15,
        learning_rate=0.05,
        n_estimators=300,
        min_child_samples=20,
        random_state=0,
        deterministic=True,
        force_row_wise=True,
        n_jobs=threads,
        verbose=-1,
    )
    model.fit(np.concatenate(groups), np.concatenate(labels), group=[len(y) for y in labels])
    seconds = time.perf_counter() - t
    text = model.booster_.model_to_string()
    trees = text[: text.index("parameters:")]  # the parameters name the thread count
    return {"seconds": round(seconds, 1), "digest": hashlib.sha256(trees.encode()).hexdigest()[:16]}


def child(args: argparse.Namespace) -> int:
    fn = _nextitem if args.what == "nextitem" else _lightgbm
    result = fn(args.threads, args.users)
    result["load"] = round(os.getloadavg()[0], 1)
    print(json.dumps(result))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1500, help="shoppers (next-item epoch)")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--what", choices=["nextitem", "lightgbm", "both"], default="both")
    parser.add_argument("--out", type=Path, default=None, help="JSON file written")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    runs = []
    whats = ["nextitem", "lightgbm"] if args.what == "both" else [args.what]
    for what in whats:
        for _ in range(args.repeat):
            for threads, policy in SETTINGS:
                env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
                if policy:
                    env["OMP_WAIT_POLICY"] = policy
                cmd = [sys.executable, __file__, "--child", "--what", what]
                cmd += ["--threads", str(threads), "--users", str(args.users)]
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
                run = {"what": what, "threads": threads, "wait_policy": policy or "default"}
                run.update(json.loads(out.stdout.strip().splitlines()[-1]))
                print(json.dumps(run), flush=True)
                runs.append(run)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": f"{os.cpu_count()} CPUs", "users": args.users, "runs": runs}
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
