"""Miniature of the paper's ablation (Table 4, B): with and without the feature branch.

Two encoders are trained for the same small generator with the same data, seed and number of steps:

* (D) baseline: the paper's recipe (inversions G(w) and G(w, F), Eqs. 2-5);
* (B) w/o feature input: the feature branch is dropped, only G(w) is trained and used.

The reconstruction errors on a fixed evaluation batch (held-out real faces and synthetic images with
their ground-truth noise; encoder in eval mode) are printed for G(w, F) of (D), G(w) of (D) and
G(w) of (B).  The paper's claim is that (D)'s G(w, F) reconstructs best.

    python benchmarks/ablation_feature.py --threads 1 --seeds 0 1 2   # configs/tiny.yaml: 300 steps each
    python benchmarks/ablation_feature.py --steps 600
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from fsvideo.train import Trainer, load_train_config

ROWS = [("(D) baseline  G(w, F)", "D", "wf"), ("(D) baseline  G(w)", "D", "w"), ("(B) w/o F     G(w)", "B", "w")]


def run(config: str, steps: int | None, seed: int, out: Path, threads: int) -> dict[str, dict]:
    torch.set_num_threads(threads)
    results = {}
    for name, use_feature in (("D", True), ("B", False)):
        over = {"seed": seed, "loss": {"use_feature": use_feature},
                "log": {"every": 10, "samples": 8, "tensorboard": False}}
        if steps:                                   # keep the config's epochs and decay points, rescale epochs
            base = load_train_config(config)
            over["schedule"] = {"iters_per_epoch": max(1, steps // base.schedule.epochs)}
        cfg = load_train_config(config, overrides=over)
        n_steps = cfg.total_steps
        cfg.log.checkpoint_every = cfg.log.sample_every = n_steps
        t = time.perf_counter()
        summary = Trainer(cfg, out / f"{name}-seed{seed}", overwrite=True).fit()
        results[name] = {"eval": summary["eval"], "first": summary["first_eval"], "seconds": time.perf_counter() - t,
                         "steps": n_steps}
        print(f"  seed {seed} {name}: {n_steps} steps in {results[name]['seconds']:.0f} s", file=sys.stderr)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="tiny", help="training config (default: configs/tiny.yaml)")
    ap.add_argument("--steps", type=int, default=None,
                    help="training steps per encoder, same for both (default: the config's schedule, 300 for tiny)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        per_seed = [run(args.config, args.steps, s, out, args.threads) for s in args.seeds]

    metrics = [k for k in ("mse", "lpips") if any(f"eval/{k}_w_real" in r["D"]["eval"] for r in per_seed)]
    steps = per_seed[0]["D"]["steps"]
    print(f"Ablation (Table 4, B) on {args.config}: {steps} steps per encoder, seeds {args.seeds}; "
          f"held-out real faces and synthetic images (mean over seeds)")
    head = f"{'configuration':<24}" + "".join(f"{m + ' ' + part:>14}" for m in metrics for part in ("real", "synth"))
    print(head)
    print("-" * len(head))
    table = {}
    for label, run_name, rec in ROWS:
        vals = []
        for m in metrics:
            for part in ("real", "syn"):
                key = f"eval/{m}_{rec}_{part}"
                v = statistics.mean(r[run_name]["eval"][key] for r in per_seed)
                vals.append(v)
                table.setdefault(label, {})[f"{m}_{part}"] = v
        print(f"{label:<24}" + "".join(f"{v:>14.4f}" for v in vals))
    start = {f"{m}_{part}": statistics.mean(r["D"]["first"][f"eval/{m}_wf_{part}"] for r in per_seed)
             for m in metrics for part in ("real", "syn")}
    print(f"{'(untrained)   G(w, F)':<24}"
          + "".join(f"{start[f'{m}_{p}']:>14.4f}" for m in metrics for p in ("real", "syn")))
    d, b = table[ROWS[0][0]], table[ROWS[2][0]]
    verdict = all(d[k] < b[k] for k in d)
    print(f"G(w, F) of (D) below G(w) of (B) on every column: {'yes' if verdict else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps({"steps": steps, "seeds": args.seeds, "table": table,
                                         "untrained": start, "per_seed": per_seed}, indent=1))


if __name__ == "__main__":
    main()
