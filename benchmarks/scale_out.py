"""Scale-out benchmark: ``gcmr embed`` and ``gcmr train`` on one process vs two torchrun ranks.

On this CPU machine the ranks are processes on the same cores (gloo), so the figures say what
sharding and DDP cost and gain with the cores given, not what GPUs would do:

- **embed**: a folder of ``--images`` generated images, the bundled EfficientNet-Lite0
  (real pretrained weights, offline), as 1 process x 1 thread, 1 process x 2 threads (the same
  cores, used by one process) and ``torchrun --nproc-per-node 2`` x 1 thread each; the whole
  command is timed (start-up and merge included) and the embeddings are compared;
- **train**: a synthetic world (``gcmr synth --items``), a small CART model with its InfoNCE
  head, dropout 0, one epoch at global batch 64, 1 rank vs 2 ranks (1 thread each): the
  epoch's pairs/s from ``train_log.jsonl``, the command's time, and the largest weight
  difference between the two runs (the equivalence on a larger run than the test's).

The machine's load average is recorded before and after each run (the cores are shared).
Writes ``benchmarks/results/scale_out/scale_out.{json,md}``.

    python benchmarks/scale_out.py [--images 96] [--items 1500] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "scale_out"


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict:
    import torch

    from gcmr.bench.report import cpu_model

    cpu = cpu_model()
    return {"cpu_model": cpu, "logical_cpus": os.cpu_count(),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else None, "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "gpu": torch.cuda.is_available()}


def run(args: list[str], *, nproc: int, threads: int) -> dict:
    """Run ``gcmr ARGS`` (under torchrun when ``nproc > 1``); its wall time and load."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "gcmr", *args]
    if nproc > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(nproc), "-m", "gcmr", *args]
    before = load_average()
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return {"seconds": round(seconds, 2), "load_before": before, "load_after": load_average()}


def bench_embed(work: Path, images: int, repeats: int) -> dict:
    sys.path.insert(0, str(ROOT / "tests" / "encoders"))
    import media_fixtures as mf

    pics = work / "pics"
    for i in range(images):
        mf.write_image(pics / f"img{i:04d}.png", seed=i, size=(96, 80))
    configs = [("1 process x 1 thread", 1, 1), ("1 process x 2 threads", 1, 2),
               ("torchrun 2 ranks x 1 thread", 2, 1)]
    rows, arrays = [], {}
    for name, nproc, threads in configs:
        runs = []
        for r in range(repeats):
            out = work / f"emb-{nproc}-{threads}-{r}.npy"
            runs.append(run(["embed", str(pics), "--encoder", "efficientnet-lite0", "--out",
                             str(out), "--chunk-size", "16", "--batch-size", "16",
                             "--no-progress", "--json"], nproc=nproc, threads=threads))
            arrays[name] = np.load(out)
        best = min(runs, key=lambda x: x["seconds"])
        rows.append({"config": name, "processes": nproc, "threads_per_process": threads,
                     "seconds_best": best["seconds"], "seconds_all": [x["seconds"] for x in runs],
                     "items_per_s": round(images / best["seconds"], 2), "runs": runs})
    base = rows[0]["seconds_best"]
    for row in rows:
        row["speedup_vs_1x1"] = round(base / row["seconds_best"], 2)
    ref = arrays[configs[0][0]]
    return {"images": images, "encoder": "efficientnet-lite0", "rows": rows,
            "max_abs_diff_vs_1x1": {k: float(np.abs(v - ref).max()) for k, v in arrays.items()}}


def bench_train(work: Path, items: int, repeats: int) -> dict:
    from safetensors.numpy import load_file

    corpus, index = work / "world", work / "index"
    run(["synth", str(corpus), "--items", str(items), "--seed", "0"], nproc=1, threads=2)
    run(["index", str(corpus), str(index), "--clusters", "16", "--codebook-size", "16",
         "--epochs", "3"], nproc=1, threads=2)
    flags = ["--preset", "none", "--d-model", "64", "--heads", "4", "--ffn", "256",
             "--encoder-layers", "2", "--decoder-layers", "2", "--dropout", "0", "--epochs", "1",
             "--batch-size", "64", "--no-val", "--device", "cpu", "--threads", "1", "--quiet"]
    rows, weights = [], {}
    for nproc in (1, 2):
        runs = []
        for r in range(repeats):
            out = work / f"model-{nproc}-{r}"
            runs.append(run(["train", str(index), str(out), *flags], nproc=nproc, threads=1))
            record = json.loads((out / "train_log.jsonl").read_text().splitlines()[-1])
            runs[-1].update(epoch_seconds=record["seconds"], pairs=record["pairs"],
                            pairs_per_s=record["pairs_per_s"], loss=record["loss"])
            weights[nproc] = load_file(str(out / "model.safetensors"))
        best = min(runs, key=lambda x: x["epoch_seconds"])
        rows.append({"ranks": nproc, "threads_per_rank": 1, "pairs": best["pairs"],
                     "epoch_seconds_best": best["epoch_seconds"],
                     "pairs_per_s_best": best["pairs_per_s"],
                     "command_seconds_best": min(x["seconds"] for x in runs),
                     "loss": best["loss"], "runs": runs})
    rows[1]["epoch_speedup"] = round(rows[0]["epoch_seconds_best"] / rows[1]["epoch_seconds_best"],
                                     2)
    a, b = weights[1], weights[2]
    diffs = {k: float(np.abs(a[k] - b[k]).max()) for k in a}
    num = sum(float(((a[k].astype(np.float64) - b[k]) ** 2).sum()) for k in a) ** 0.5
    den = sum(float((a[k].astype(np.float64) ** 2).sum()) for k in a) ** 0.5
    return {"items": items, "model": "d_model 64, 2+2 layers, InfoNCE head, dropout 0",
            "batch_size": 64, "rows": rows,
            "weights_max_abs_diff": max(diffs.values()),
            "weights_max_abs_diff_matrices": max(v for k, v in diffs.items() if a[k].ndim >= 2),
            "weights_relative_l2_diff": num / den}


def markdown(r: dict) -> str:
    m = r["machine"]
    e, t = r["embed"], r["train"]
    lines = ["# Scale-out on CPU: one process vs two torchrun ranks (gloo)", "",
             (f"Machine: {m['cpu_model']}, {m['usable_cpus']} usable of {m['logical_cpus']} "
              f"logical CPUs, torch {m['torch']}, GPU: {'yes' if m['gpu'] else 'none'}. "
              f"Load average before / after: {r['load_before']} / {r['load_after']} "
              f"(the cores are shared with other work, so the times are noisy; best of "
              f"{r['repeats']} runs)."), "",
             f"## `gcmr embed`: {e['images']} images, {e['encoder']}, chunks of 16", "",
             "| configuration | best s (whole command) | all runs s | items/s | speed-up vs 1x1 |",
             "|---|---|---|---|---|"]
    for row in e["rows"]:
        lines.append(f"| {row['config']} | {row['seconds_best']} | "
                     f"{', '.join(map(str, row['seconds_all']))} | {row['items_per_s']} | "
                     f"{row['speedup_vs_1x1']} |")
    lines += ["", "Embeddings vs the 1 x 1 run, max abs difference: " + ", ".join(
        f"{k}: {v:.2g}" for k, v in e["max_abs_diff_vs_1x1"].items()), "",
        (f"## `gcmr train`: synthetic world of {t['items']} items, {t['model']}, global "
         f"batch {t['batch_size']}, one epoch"), "",
        "| ranks | pairs | epoch s (best) | pairs/s | command s (best) | loss |",
        "|---|---|---|---|---|---|"]
    for row in t["rows"]:
        lines.append(f"| {row['ranks']} | {row['pairs']} | {row['epoch_seconds_best']} | "
                     f"{row['pairs_per_s_best']} | {row['command_seconds_best']} | "
                     f"{row['loss']} |")
    lines += ["", (f"Epoch speed-up with 2 ranks: {t['rows'][1]['epoch_speedup']}x. Weights of "
              f"the 2-rank run vs the 1-rank run: max abs difference "
              f"{t['weights_max_abs_diff']:.2g} over all tensors, "
              f"{t['weights_max_abs_diff_matrices']:.2g} over the weight matrices, relative "
              f"L2 {t['weights_relative_l2_diff']:.2g} (float summation order; the largest "
              f"differences sit in attention key biases, whose exact gradient is 0, so Adam "
              f"normalizes float noise there)."), "",
              f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=96)
    p.add_argument("--items", type=int, default=1500)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="gcmr-scale-out-"))
    try:
        result = {"machine": machine(), "load_before": load_average(), "repeats": args.repeats,
                  "command": "python benchmarks/scale_out.py " + " ".join(argv or sys.argv[1:])}
        result["embed"] = bench_embed(work, args.images, args.repeats)
        result["train"] = bench_train(work, args.items, args.repeats)
        result["load_after"] = load_average()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale_out.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "scale_out.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
