"""The query tokenizer: a subword model (WordPiece or BPE, HF ``tokenizers``) trained on the
corpus's training texts (item captions + train queries).

Everything the tokenizer needs at load time lives in its one ``tokenizer.json`` file: the
normalizer records lower-casing, the truncation setting records ``max_length`` and the padding
setting records the pad token, so the model directory needs no second options file.

Text that cannot be encoded as UTF-8 (a lone surrogate, which a corpus's JSON may legally hold
as ``"\\ud800"``) is escaped the way :func:`gcmr.errors.safe_text` does before it reaches
the subword model, in training and in encoding alike, so such a caption trains and encodes
instead of crashing the Rust tokenizer. (Search queries are refused earlier, by
:func:`gcmr.search.base.check_query`.)
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch

from gcmr.errors import ArtifactError, ConfigError, GcmrError, safe_text, snippet

PAD = "[PAD]"
UNK = "[UNK]"
KINDS = ("wordpiece", "bpe")


class QueryTokenizer:
    """Text -> padded token ids for the retriever's encoder.

    ``encode_batch`` pads to the longest query of the batch and truncates queries longer than
    ``max_length`` (they are never rejected); an empty or whitespace-only query is an error that
    names its position in the batch.
    """

    pad_tokens: tuple[str, ...] = (PAD,)  # the first one the vocabulary has pads
    what = ""  # names the tokenizer in errors ("T5 tokenizer ...")

    def __init__(self, tokenizer) -> None:  # tokenizers.Tokenizer
        name = f"{self.what} tokenizer".lstrip()
        trunc = tokenizer.truncation
        if not trunc or "max_length" not in trunc:
            raise ArtifactError(f"{name} has no truncation length; {self._origin_hint()}")
        pad = self._pad_token(tokenizer)
        if pad is None:
            tokens = " / ".join(self.pad_tokens)
            raise ArtifactError(f"{name} has no {tokens} token; {self._origin_hint()}")
        self._tok = tokenizer
        self.max_length = int(trunc["max_length"])
        self.pad_id = int(tokenizer.token_to_id(pad))
        self._tok.enable_padding(pad_id=self.pad_id, pad_token=pad)  # pad to the batch's longest

    @classmethod
    def _origin_hint(cls) -> str:
        return "was it saved by gcmr?"

    @classmethod
    def _pad_token(cls, tokenizer) -> str | None:
        return next((name for name in cls.pad_tokens if tokenizer.token_to_id(name) is not None),
                    None)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], *, vocab_size: int = 8000, lowercase: bool = True,
              max_length: int = 32, kind: str = "wordpiece",
              min_frequency: int = 2) -> QueryTokenizer:
        """Train a subword vocabulary of at most ``vocab_size`` tokens on ``texts``.

        ``kind`` is ``wordpiece`` (BERT-style ``##`` continuation pieces) or ``bpe``. Normalization
        is Unicode NFD + accent stripping + whitespace cleaning, plus lower-casing if asked.
        """
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

        if kind not in KINDS:
            raise ConfigError(f"tokenizer kind must be one of {list(KINDS)}, got {kind!r}")
        if vocab_size < 16:
            raise ConfigError(f"tokenizer vocab_size must be >= 16, got {vocab_size}")
        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        if kind == "wordpiece":
            tok = Tokenizer(models.WordPiece(unk_token=UNK))
            trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                                special_tokens=[PAD, UNK], show_progress=False)
            tok.decoder = decoders.WordPiece()
        else:
            tok = Tokenizer(models.BPE(unk_token=UNK))
            trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                          special_tokens=[PAD, UNK], show_progress=False)
        # BertNormalizer: clean control chars, split CJK, strip accents, optionally lower-case
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=True, lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        count = 0

        def stream():
            nonlocal count
            for text in texts:
                count += 1
                yield safe_text(text)

        tok.train_from_iterator(stream(), trainer=trainer)
        if count == 0:
            raise ConfigError("cannot train a query tokenizer on zero texts")
        tok.enable_truncation(max_length=max_length)
        return cls(tok)

    def encode_batch(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids ``[B, S]`` (int64) and attention mask ``[B, S]`` (bool, True = token).

        ``S`` is the batch's longest query after truncation to ``max_length``.
        """
        if isinstance(texts, str):
            raise GcmrError("encode_batch expects a list of queries, got a single string")
        if not texts:
            raise GcmrError("encode_batch got no queries")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise GcmrError(f"query {i} must be a str, got {type(text).__name__}: "
                                f"{snippet(text)}")
            if not text.strip():
                raise GcmrError(f"query {i} is empty: {snippet(text)}")
        encodings = self._tok.encode_batch([safe_text(text) for text in texts])
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.int64)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool)
        empty = (~mask.any(dim=1)).nonzero().flatten()
        if len(empty):
            i = int(empty[0])
            raise GcmrError(f"query {i} has no tokens after normalization: "
                            f"{snippet(texts[i])}")
        return ids, mask

    def tokenize(self, text: str) -> list[str]:
        """The subword pieces of one text (for inspection and tests)."""
        return self._tok.encode(safe_text(text)).tokens

    def save(self, path: str | Path) -> None:
        """Write the tokenizer JSON file (vocabulary, normalizer, truncation = max_length)."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        self._tok.save(str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> QueryTokenizer:
        """Read a tokenizer JSON file written by :meth:`save`."""
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path}: missing tokenizer file")
        try:
            tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception as exc:  # tokenizers raises plain Exception on a bad file
            raise ArtifactError(f"{path}: corrupted tokenizer file ({exc})") from exc
        try:
            return cls(tok)
        except ArtifactError as exc:
            raise ArtifactError(f"{path}: {exc}") from exc


def is_local(source: str) -> bool:
    """Whether a model source names an existing local path (else: a hub name)."""
    return Path(source).expanduser().exists()


class PretrainedQueryTokenizer(QueryTokenizer):
    """A pretrained checkpoint's own ``tokenizer.json`` (a fast HF tokenizer: BERT, MiniLM,
    T5 ...) behind :class:`QueryTokenizer`'s interface (``encode_batch``, ``pad_id``,
    ``max_length``, ``save`` / ``load``); truncation is set to the query length and padding to
    the batch's longest query."""

    pad_tokens: tuple[str, ...] = ("[PAD]", "<pad>")
    what = "pretrained"

    @classmethod
    def _origin_hint(cls) -> str:
        return f"build it with {cls.__name__}.from_source"

    @classmethod
    def from_source(cls, source: str | Path, *, max_length: int = 32):
        """The ``tokenizer.json`` of a local model directory (or of a cached hub model)."""
        from tokenizers import Tokenizer

        if max_length < 1:
            raise ConfigError(f"max_length must be >= 1, got {max_length}")
        source = str(source)
        if is_local(source):
            path = Path(source).expanduser() / "tokenizer.json"
            if not path.is_file():
                raise GcmrError(f"{path}: the {cls.what} model directory has no tokenizer.json "
                                f"(a fast tokenizer file is needed)")
            tok = Tokenizer.from_file(str(path))
        else:
            try:
                tok = Tokenizer.from_pretrained(source)
            except Exception as exc:  # tokenizers raises plain Exception
                raise GcmrError(f"cannot load the tokenizer of {source!r}: {exc}") from exc
        pad = cls._pad_token(tok)
        if pad is None:
            raise GcmrError(f"{source}: tokenizer has none of the pad tokens "
                            f"{list(cls.pad_tokens)} (is it a {cls.what} tokenizer?)")
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(pad_id=tok.token_to_id(pad), pad_token=pad)
        return cls(tok)
