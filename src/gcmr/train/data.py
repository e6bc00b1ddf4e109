"""Training pairs: (query text, item row) from item captions and the train query split.

Caption enhancement (CART section 3.3): every item's captions are pseudo-queries for it, so
every item, including those whose human queries are held out for val/test, is seen in
training. Human train queries add one pair per relevant item.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from gcmr.corpus import Corpus
from gcmr.errors import ConfigError


@dataclass
class Pairs:
    """Tokenized training pairs: ``tokens`` [P, S] (padding = pad id), ``rows`` [P] item rows."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    rows: torch.Tensor
    num_caption_pairs: int
    num_query_pairs: int

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def batch(self, index: torch.Tensor, pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids [B, S_max], attention_mask [B, S_max], rows [B]) trimmed to the batch's longest."""
        width = int(self.lengths[index].max().item())
        ids = self.tokens[index, :width].long()
        mask = ids != pad_id
        return ids, mask, self.rows[index]


def training_texts(
    corpus: Corpus, *, use_captions: bool = True, use_train_queries: bool = True,
    split: str = "train",
) -> tuple[list[str], np.ndarray, int]:
    """Texts and their item rows; returns (texts, rows, number of caption pairs)."""
    texts: list[str] = []
    rows: list[int] = []
    if use_captions:
        for row, caps in enumerate(corpus.captions):
            texts.extend(caps)
            rows.extend([row] * len(caps))
    n_captions = len(texts)
    if use_train_queries and split in corpus.queries:
        row_of = corpus.row_of
        for query in corpus.queries[split]:
            for item_id in query.relevant:
                texts.append(query.text)
                rows.append(row_of[item_id])
    if not texts:
        raise ConfigError(
            f"{corpus.path}: no training pairs (items have no captions and there is no "
            f"'{split}' query split); add captions or queries/{split}.jsonl"
        )
    return texts, np.asarray(rows, dtype=np.int64), n_captions


def tokenize_pairs(tokenizer, texts: list[str], rows: np.ndarray, n_captions: int,
                   *, chunk: int = 8192) -> Pairs:
    """Tokenize all texts once into a padded int32 tensor (bounded chunks of work)."""
    width = tokenizer.max_length
    tokens = torch.full((len(texts), width), tokenizer.pad_id, dtype=torch.int32)
    lengths = torch.zeros(len(texts), dtype=torch.int64)
    for start in range(0, len(texts), chunk):
        ids, mask = tokenizer.encode_batch(texts[start:start + chunk])
        tokens[start:start + ids.shape[0], :ids.shape[1]] = ids.to(torch.int32)
        lengths[start:start + ids.shape[0]] = mask.sum(dim=1)
    return Pairs(tokens, lengths.clamp(min=1), torch.from_numpy(rows), n_captions,
                 len(texts) - n_captions)


def item_vectors(items, rows: torch.Tensor) -> torch.Tensor:
    """The L2-normalized float32 embeddings [B, D] of item ``rows`` (read from the corpus's
    memory map row by row: only the batch's rows are loaded)."""
    import torch.nn.functional as F

    x = torch.from_numpy(np.asarray(items[rows.numpy()], dtype=np.float32))
    return F.normalize(x, dim=-1)
