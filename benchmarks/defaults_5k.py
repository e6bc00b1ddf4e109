"""The default pipeline on the 5k synthetic world, as a new user runs it: every command with
its defaults (no flags but the paths), timed, beside the dense tower trained with the same
defaults and the world's oracle. Checks the issue-10 targets on the result.

    python benchmarks/defaults_5k.py                      # ~20-25 min on 2 idle cores
    python benchmarks/defaults_5k.py --work /tmp/d5k --out benchmarks/results/defaults

Commands run (each one timed, wall clock):

    gcmr synth W --items 5000 --seed 0                    (skipped when W exists)
    gcmr index W IDX
    gcmr train IDX M                                      (--preset auto: cpu here)
    gcmr eval M --split test                              (the default hybrid search)
    gcmr eval M --split test --rerank none                (pure generation, same model)
    gcmr train-dense IDX D                                (--preset auto: the same budget)
    gcmr eval D --split test

Writes ``OUT/defaults.{json,md}``. Nothing is reused from an earlier run except the world:
the index and models are rebuilt (``--overwrite``) so the times are the real ones.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from gcmr.bench.report import machine_info, write_report

METRICS = ("R@1", "R@5", "R@10", "MRR@10")


def run(cmd: list[str]) -> float:
    """Run a gcmr command (quiet), return its wall time; stop on failure."""
    print("+", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gcmr-bench/defaults5k"))
    ap.add_argument("--world", type=Path, default=None,
                    help="the 5k world (default WORK/w5k; created when missing)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/defaults"))
    args = ap.parse_args()
    gcmr = [sys.executable, "-m", "gcmr"]
    work: Path = args.work
    world = args.world or work / "w5k"
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    started = time.perf_counter()
    times: dict[str, float] = {}
    if not (world / "corpus.json").is_file():
        times["synth"] = run(gcmr + ["synth", str(world), "--items", "5000", "--seed", "0"])
    idx, model, dense = work / "index", work / "model", work / "dense"
    for path in (idx, model, dense):
        shutil.rmtree(path, ignore_errors=True)
    times["index"] = run(gcmr + ["index", str(world), str(idx), "--quiet"])
    times["train"] = run(gcmr + ["train", str(idx), str(model), "--quiet"])
    times["eval"] = run(gcmr + ["eval", str(model), "--split", "test",
                                "--out", str(work / "eval_hybrid.json")])
    times["eval_gen"] = run(gcmr + ["eval", str(model), "--split", "test", "--rerank", "none",
                                    "--out", str(work / "eval_gen.json")])
    times["train_dense"] = run(gcmr + ["train-dense", str(idx), str(dense), "--quiet"])
    times["eval_dense"] = run(gcmr + ["eval", str(dense), "--split", "test",
                                      "--out", str(work / "eval_dense.json")])
    res = {name: json.loads((work / f"eval_{name}.json").read_text())["metrics"]
           for name in ("hybrid", "gen", "dense")}
    oracle = json.loads((world / "oracle.json").read_text())["test"]
    manifest = json.loads((model / "manifest.json").read_text())
    dense_manifest = json.loads((dense / "manifest.json").read_text())
    pipeline = times["index"] + times["train"] + times["eval"]
    rows = [
        {"method": "gcmr index + train + eval, every default (hybrid search)",
         **{m: res["hybrid"][m] for m in METRICS}, "seconds": round(pipeline, 1)},
        {"method": "the same model, pure generation (--rerank none)",
         **{m: res["gen"][m] for m in METRICS}, "seconds": round(times["eval_gen"], 1)},
        {"method": "dense dual tower, gcmr train-dense defaults (same preset)",
         **{m: res["dense"][m] for m in METRICS},
         "seconds": round(times["train_dense"] + times["eval_dense"], 1)},
        {"method": "oracle ceiling", **{m: oracle[m] for m in METRICS}, "seconds": "-"},
    ]
    h, g, d = res["hybrid"], res["gen"], res["dense"]

    def target(what: str, value: float, ref: float, ratio: float) -> str:
        met = value >= ratio * ref
        return (f"Target {'met' if met else 'missed'}: {what} {value:.4f} = "
                f"{value / ref:.2f} x (target >= {ratio:.2f} x {ref:.4f}).")

    rerank = {k: manifest["rerank"][k]
              for k in ("item_vectors", "logprob_weight", "candidates", "max_candidates")}
    notes = [
        target("hybrid R@1 vs the dense tower's", h["R@1"], d["R@1"], 0.95),
        target("hybrid R@1 vs the oracle's", h["R@1"], oracle["R@1"], 0.80),
        target("hybrid R@10 vs the oracle's R@10", h["R@10"], oracle["R@10"], 0.95),
        target("pure generation R@1 vs the dense tower's", g["R@1"], d["R@1"], 0.60),
        (f"Target {'met' if times['train'] <= 900 else 'missed'}: default training took "
         f"{times['train']:.0f} s (target <= 900 s on 2 cores); index {times['index']:.0f} s, "
         f"eval {times['eval']:.0f} s."),
        (f"Training config (the cpu preset via --preset auto): epochs "
         f"{manifest['train_config']['epochs']}, lr {manifest['train_config']['lr']}, "
         f"d_model {manifest['model_config']['d_model']}, "
         f"{manifest['model_config']['encoder_layers']} + "
         f"{manifest['model_config']['decoder_layers']} layers; selected epoch "
         f"{manifest['best_epoch']}; rerank {json.dumps(rerank)}."),
        (f"Dense tower: epochs {dense_manifest['train_config']['epochs']}, d_model "
         f"{dense_manifest['tower_config']['d_model']}."),
        "Wall times per command: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + ".",
    ]
    write_report(args.out, "defaults", title="Every default on the 5k synthetic world",
                 columns=["method", *METRICS, "seconds"], rows=rows,
                 settings={"world": str(world), "items": 5000, "times_s": times},
                 command="python benchmarks/defaults_5k.py " + " ".join(sys.argv[1:]),
                 machine=machine, notes=notes, seconds=time.perf_counter() - started)
    print((args.out / "defaults.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
