"""An empty query split is an error naming its file, not all-zero metrics with exit 0."""

from __future__ import annotations

from pathlib import Path

import pytest

from gcmr.cli import main
from gcmr.corpus import load_corpus
from gcmr.errors import GcmrError
from gcmr.evaluate.runner import evaluate


class NeverCalled:
    def search_rows(self, texts, **_):
        raise AssertionError("an empty split must not be searched")


def test_evaluate_refuses_an_empty_split(tiny_corpus: Path) -> None:
    (tiny_corpus / "queries" / "test.jsonl").write_text("")
    corpus = load_corpus(tiny_corpus)
    with pytest.raises(GcmrError, match=r"queries/test\.jsonl: query split 'test' has no "
                                        r"queries"):
        evaluate(NeverCalled(), corpus, "test")


def test_eval_verb_exits_non_zero_on_an_empty_split(tiny_corpus: Path, tmp_path: Path,
                                                    capsys) -> None:
    from gcmr.train import TrainConfig
    from gcmr.train.dense import train_dense

    (tiny_corpus / "queries" / "empty.jsonl").write_text("")
    # an empty validation split is no validation (noted), not an error in the middle of training
    cfg = TrainConfig(epochs=1, batch_size=16, vocab_size=120, val_split="empty")
    train_dense(tiny_corpus, tmp_path / "dense", config=cfg, show_progress=False,
                tower_options={"d_model": 16, "n_heads": 2, "d_ff": 32, "encoder_layers": 1})
    assert main(["eval", str(tmp_path / "dense"), "--split", "empty"]) == 2
    err = capsys.readouterr().err
    assert "empty.jsonl" in err and "has no queries" in err
    assert not (tmp_path / "dense" / "eval_empty.json").exists()
