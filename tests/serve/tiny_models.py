"""Tiny served things shared by the server's reliability tests (tests/serve/test_limits.py,
tests/serve/test_openapi_fuzz.py): a real tiny model trained in seconds whose corpus holds
lone surrogates, and a fake searcher whose ids and captions hold them too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# a caption and an id of the committed corpus, rewritten with lone surrogates (JSON escapes):
# legal in items.jsonl, and not encodable as UTF-8 once read
SURROGATE_CAPTION = ("a photo of a red thing number 0",
                     "a photo of a red \\ud800 thing number 0")
SURROGATE_ID = ('"item0005"', '"item\\udfff0005"')


def train_tiny_model(root: Path) -> Path:
    """A tiny generative model (pure generation, about 3 s) on the committed 24-item corpus,
    one of whose captions and item ids holds a lone surrogate."""
    import shutil

    from gcmr.corpus import load_corpus
    from gcmr.ids import IndexConfig, build_index
    from gcmr.train import TrainConfig, train

    shutil.copytree(Path(__file__).parents[1] / "fixtures" / "legacy_v0_1" / "corpus",
                    root / "corpus")
    for path in [root / "corpus" / "items.jsonl", *(root / "corpus" / "queries").iterdir()]:
        text = path.read_text(encoding="utf-8")
        for old, new in (SURROGATE_CAPTION, SURROGATE_ID):
            text = text.replace(old, new)
        path.write_text(text, encoding="utf-8")
    index = build_index(load_corpus(root / "corpus"),
                        IndexConfig(num_clusters=3, codebook_size=4, latent_dim=4,
                                    hidden_dims=[8], epochs=1, max_steps=4, batch_size=8),
                        show_progress=False).save(root / "index")
    train(index, root / "model", show_progress=False,
          config=TrainConfig(epochs=1, batch_size=8, vocab_size=60, val_split=None),
          model_options={"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1,
                         "decoder_layers": 1})
    return root / "model"


class SurrogateSearcher:
    """A searcher without a model over 6 items, one id and one caption holding a lone
    surrogate: query text picks the first item (its length mod 6), then the next ones."""

    def __init__(self) -> None:
        self.item_ids = ["a", "b", "c", "item\udfff3", "e", "f"]

    def item_descriptions(self):
        return lambda row: "caption \ud800 two" if row == 2 else f"caption {row}"

    def search_rows(self, queries, *, k=10, beam=None, candidates=None, batch_size=256,
                    **options):
        n = len(self.item_ids)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        width = min(k, n)
        for i, q in enumerate(queries):
            rows[i, :width] = (len(q) + np.arange(width)) % n
        scores = np.where(rows >= 0, -np.arange(k, dtype=np.float32), -np.inf)
        return scores.astype(np.float32), rows
