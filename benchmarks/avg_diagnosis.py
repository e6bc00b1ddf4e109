"""Where generation goes wrong, per trained model: the identifier tree, the rank of the true
code at each level, and beam search's found scores against the true identifier's.

    python benchmarks/avg_diagnosis.py CORPUS LABEL=MODEL_DIR [LABEL=MODEL_DIR ...] \
        --out benchmarks/results/avg/diagnosis

For each model (pure generation, the model's own index):

- the tree: per level the codes used, items per code (mean / max) and children per parent
  (mean / max): how much each level has to tell apart;
- per level, over sampled test queries, teacher-forced on the relevant item's identifier: the
  rank of the true code among the children of the true prefix (1 = the model's first choice
  there), the fraction ranked first, and the mean log-probability of the true code;
- per beam width (10, 20, 30): R@1, R@10, the fraction of queries whose true identifier is in
  the list, and for the others whether it scored above the list's best (a search error: beam
  search pruned it) or below (a model error: the model prefers wrong identifiers), plus the mean
  top-1 score. Beam search is exact over what it keeps, so a top-1 score that rises with the
  beam while R@1 falls means higher-scoring wrong identifiers sit outside the narrow beam.

Writes ``OUT/diagnosis.{json,md}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gcmr.bench.report import machine_info, write_report
from gcmr.corpus import load_corpus
from gcmr.evaluate.runner import sample_queries
from gcmr.search.beam import constrained_beam_search
from gcmr.search.retriever import Retriever

BEAMS = (10, 20, 30)


def tree_rows(label: str, retriever: Retriever) -> list[dict]:
    """Codes used, items per code and children per parent, per level of the index."""
    index, trie = retriever.index, retriever.index.trie
    codes = np.asarray(index.codes)
    out = []
    for lvl, name in enumerate(index.level_names):
        counts = np.bincount(codes[:, lvl], minlength=index.level_sizes[lvl])
        used = counts[counts > 0]
        off = trie.offsets[lvl].numpy()
        children = np.diff(off)
        out.append({"model": label, "level": name, "size": int(index.level_sizes[lvl]),
                    "codes_used": len(used), "items_per_code": round(float(used.mean()), 2),
                    "max_items_per_code": int(used.max()),
                    "children_per_parent": round(float(children.mean()), 2),
                    "max_children": int(children.max())})
    return out


@torch.no_grad()
def true_paths(retriever: Retriever, enc, codes: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For identifiers ``codes`` [B, L] of the encoded queries ``enc``: the rank [B, L] of the
    true code among the children of the true prefix, its log-probability [B, L], and the
    sequence score [B]."""
    model, trie = retriever.model, retriever.index.trie
    logp = torch.log_softmax(model.decode_logits(enc, codes).float(), dim=-1)  # [B, L, V]
    token = logp.gather(-1, codes.unsqueeze(-1)).squeeze(-1)
    nodes = torch.zeros(len(codes), dtype=torch.int64)
    ranks = torch.zeros_like(codes)
    for lvl in range(codes.shape[1]):
        allowed, targets, valid = trie.allowed(lvl, nodes)
        child = logp[:, lvl].gather(1, allowed).masked_fill(~valid, float("-inf"))
        ranks[:, lvl] = 1 + (child > token[:, lvl:lvl + 1]).sum(dim=1)
        col = ((allowed == codes[:, lvl:lvl + 1]) & valid).to(torch.int64).argmax(dim=1)
        nodes = targets.gather(1, col.unsqueeze(1)).squeeze(1)
    return ranks, token, token.sum(dim=1)


def diagnose(label: str, retriever: Retriever, texts: list[str], relevant: list,
             batch: int) -> tuple[list[dict], list[dict]]:
    index = retriever.index
    codes_all = torch.as_tensor(np.asarray(index.codes), dtype=torch.int64)
    first = np.array([min(r) for r in relevant])  # the (first) relevant item
    level_rows, beam_rows = [], []
    ranks, token_lp, true_score = [], [], []
    found = {b: [] for b in BEAMS}
    hits1, hits10, top = ({b: [] for b in BEAMS} for _ in range(3))
    above = {b: [] for b in BEAMS}
    for start in range(0, len(texts), batch):
        ids, mask = retriever.tokenizer.encode_batch(texts[start:start + batch])
        codes = codes_all[first[start:start + batch]]
        enc = retriever.model.encode(ids, mask)  # one encoder pass for every beam width
        r, t, s = true_paths(retriever, enc, codes)
        ranks.append(r)
        token_lp.append(t)
        true_score.append(s)
        for b in BEAMS:
            scores, rows, _ = constrained_beam_search(retriever.model, ids, mask, index.trie,
                                                      beam=b, k=b, enc=enc)
            for i, (row, sc) in enumerate(zip(rows.numpy(), scores.numpy())):
                rel = relevant[start + i]
                hit = np.isin(row, list(rel))
                found[b].append(bool(hit.any()))
                hits1[b].append(bool(hit[:1].any()))
                hits10[b].append(bool(hit[:10].any()))
                top[b].append(float(sc[0]))
                above[b].append(bool(float(s[i]) > float(sc[0]) + 1e-4))
    ranks_t, token_t, score_t = torch.cat(ranks), torch.cat(token_lp), torch.cat(true_score)
    for lvl, name in enumerate(index.level_names):
        r = ranks_t[:, lvl].float()
        level_rows.append({"model": label, "level": name,
                           "true_rank_first": round(float((r == 1).float().mean()), 4),
                           "true_rank_mean": round(float(r.mean()), 2),
                           "true_rank_median": float(r.median()),
                           "true_logp_mean": round(float(token_t[:, lvl].mean()), 3)})
    for b in BEAMS:
        miss = ~np.array(found[b])
        ab = np.array(above[b])
        beam_rows.append({"model": label, "beam": b, "R@1": round(float(np.mean(hits1[b])), 4),
                          "R@10": round(float(np.mean(hits10[b])), 4),
                          "true_in_list": round(float(np.mean(found[b])), 4),
                          "missed_search_error": round(float((miss & ab).mean()), 4),
                          "missed_model_error": round(float((miss & ~ab).mean()), 4),
                          "top1_score_mean": round(float(np.mean(top[b])), 3),
                          "true_score_mean": round(float(score_t.mean()), 3)})
    return level_rows, beam_rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", type=Path)
    ap.add_argument("models", nargs="+", help="LABEL=MODEL_DIR")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/avg/diagnosis"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--max-queries", type=int, default=500)
    ap.add_argument("--batch", type=int, default=125)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = machine_info()
    started = time.perf_counter()
    corpus = load_corpus(args.corpus, load_captions=False)
    texts, relevant = sample_queries(corpus, args.split, args.max_queries, seed=0)
    trees, levels, beams = [], [], []
    for spec in args.models:
        label, _, path = spec.partition("=")
        retriever = Retriever.load(path, rerank="none")
        trees += tree_rows(label, retriever)
        lv, bm = diagnose(label, retriever, texts, relevant, args.batch)
        levels += lv
        beams += bm
        print(*lv, *bm, sep="\n", flush=True)
    settings = {"corpus": str(args.corpus), "split": args.split, "queries": len(texts),
                "models": args.models, "beams": list(BEAMS), "search": "pure generation",
                }
    seconds = time.perf_counter() - started
    command = "python benchmarks/avg_diagnosis.py " + " ".join(sys.argv[1:])
    write_report(args.out, "tree", title="Identifier tree per level",
                 columns=list(trees[0]), rows=trees, settings=settings, machine=machine,
                 command=command, seconds=seconds)
    write_report(args.out, "levels", title="Rank of the true code among its prefix's children",
                 columns=list(levels[0]), rows=levels, settings=settings, machine=machine,
                 command=command, seconds=seconds)
    write_report(args.out, "beams", title="Beam width: found lists and scores",
                 columns=list(beams[0]), rows=beams, settings=settings, machine=machine,
                 command=command, seconds=seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
