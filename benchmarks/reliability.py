"""Reliability battery: bad inputs, tampered artifacts and hostile requests against gcmr.

    python benchmarks/reliability.py                       # ~2-3 min on 2 cores
    python benchmarks/reliability.py --out DIR --work DIR

Builds a tiny world (200 items), an index and a tiny generative model, then runs each case
and classifies what happened:

- ``caught``: a clean gcmr error (non-zero exit with a message and no Python traceback; a
  GcmrError from the library; an HTTP 4xx with a short body);
- ``traceback``: a Python traceback printed, an exception other than a GcmrError, an HTTP
  5xx, or a 4xx whose body is over 2 KB (an error that echoes the request);
- ``silently accepted``: success (exit 0, a result, HTTP 2xx) where the input was bad;
- ``data lost``: an artifact that loaded before the case no longer loads after it.

Every case that mutates an artifact works on a fresh copy. Writes
``OUT/reliability.{json,md}``. The cases are importable: ``CASES`` (a list of
:class:`Case`) and :func:`run_cases` (``tests/bench/test_reliability_script.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CAUGHT, TRACEBACK, SILENT, LOST = "caught", "traceback", "silently accepted", "data lost"
CLASSES = (CAUGHT, TRACEBACK, SILENT, LOST)
TRACE = "Traceback (most recent call last)"
MAX_BODY = 2048  # an HTTP error body this long or longer is not "short"
TIMEOUT = 120


@dataclass
class Outcome:
    cls: str
    detail: str


@dataclass
class Case:
    name: str
    group: str
    expected: str  # what a robust gcmr does, in words
    fn: Callable[[Env], Outcome]
    cheap: bool = False  # needs no model (only the world / no subprocess of torch)


class Env:
    """The work directory with the pristine world ``W``, index ``IDX`` and model ``M`` (built
    on first use) and the in-process searcher / server (loaded on first use)."""

    def __init__(self, work: Path, *, need_model: bool = True) -> None:
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.world = self.work / "W"
        self.index = self.work / "IDX"
        self.model = self.work / "M"
        self._searcher: Any = None
        self._client: Any = None
        self._n = 0
        self.setup_seconds: dict[str, float] = {}
        self._ensure_world()
        if need_model:
            self.ensure_model()

    # --- setup -------------------------------------------------------------------------
    def _setup(self, name: str, args: list[str]) -> None:
        t0 = time.perf_counter()
        proc = subprocess.run(gcmr(*args), capture_output=True, text=True, timeout=600,
                              check=False)
        if proc.returncode != 0:
            raise SystemExit(f"setup step {name} failed:\n{proc.stdout}\n{proc.stderr}")
        self.setup_seconds[name] = round(time.perf_counter() - t0, 1)

    def _ensure_world(self) -> None:
        if not (self.world / "corpus.json").is_file():
            shutil.rmtree(self.world, ignore_errors=True)
            self._setup("synth", ["synth", str(self.world), "--items", "200", "--seed", "0"])

    def ensure_model(self) -> None:
        if not (self.index / "manifest.json").is_file():
            shutil.rmtree(self.index, ignore_errors=True)
            self._setup("index", ["index", str(self.world), str(self.index), "--epochs", "1",
                                  "--max-steps", "5", "--quiet"])
        if not (self.model / "manifest.json").is_file():
            shutil.rmtree(self.model, ignore_errors=True)
            self._setup("train", ["train", str(self.index), str(self.model), *TINY])

    # --- helpers -----------------------------------------------------------------------
    def copy(self, src: Path, tag: str) -> Path:
        """A fresh copy of ``src`` under WORK/cases/."""
        self._n += 1
        dst = self.work / "cases" / f"{self._n:03d}-{tag}"
        shutil.rmtree(dst, ignore_errors=True)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(src, dst)
        return dst

    def path(self, tag: str) -> Path:
        self._n += 1
        p = self.work / "cases" / f"{self._n:03d}-{tag}"
        shutil.rmtree(p, ignore_errors=True)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def searcher(self) -> Any:
        if self._searcher is None:
            from gcmr.search import load_searcher

            self._searcher = load_searcher(self.model)
        return self._searcher

    @property
    def client(self) -> Any:
        if self._client is None:
            from fastapi.testclient import TestClient

            from gcmr.serve.app import create_app

            self._client = TestClient(create_app(self.model), raise_server_exceptions=False)
        return self._client


TINY = ["--epochs", "1", "--d-model", "32", "--heads", "2", "--ffn", "64", "--encoder-layers",
        "1", "--decoder-layers", "1", "--max-steps", "3", "--quiet", "--preset", "none",
        "--no-val"]


def gcmr(*args: Any) -> list[Any]:
    if any(isinstance(a, bytes) for a in args):
        return [os.fsencode(sys.executable), b"-m", b"gcmr",
                *(a if isinstance(a, bytes) else os.fsencode(str(a)) for a in args)]
    return [sys.executable, "-m", "gcmr", *(str(a) for a in args)]


def short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n] + "..."


def cli(*args: Any, stdin: bytes | None = None) -> Outcome:
    """Run ``gcmr ARGS``; classify by exit status and stderr."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
    try:
        proc = subprocess.run(gcmr(*args), capture_output=True, timeout=TIMEOUT,
                              input=stdin if stdin is not None else b"", env=env,
                              check=False)
    except subprocess.TimeoutExpired:
        return Outcome(TRACEBACK, f"timed out after {TIMEOUT} s")
    out = proc.stdout.decode("utf-8", "replace")
    err = proc.stderr.decode("utf-8", "replace")
    if TRACE in err or TRACE in out:
        tail = err[err.find(TRACE):] if TRACE in err else out[out.find(TRACE):]
        return Outcome(TRACEBACK, f"exit {proc.returncode}: {short(tail[-600:], 600)}")
    if proc.returncode == 0:
        return Outcome(SILENT, f"exit 0: {short(out or err)}")
    message = err.strip() or out.strip()
    if not message:
        return Outcome(TRACEBACK, f"exit {proc.returncode} with no message")
    return Outcome(CAUGHT, f"exit {proc.returncode}: {short(message)}")


def call(fn: Callable[[], Any]) -> Outcome:
    """Call a library function; a GcmrError is caught, any other exception a traceback."""
    from gcmr.errors import GcmrError

    try:
        result = fn()
    except GcmrError as exc:
        return Outcome(CAUGHT, f"{type(exc).__name__}: {short(str(exc))}")
    except Exception as exc:  # noqa: BLE001 - the point is to see which ones escape
        return Outcome(TRACEBACK, f"{type(exc).__name__}: {short(str(exc))}")
    return Outcome(SILENT, f"returned {short(repr(result), 200)}")


def http(response: Any) -> Outcome:
    body = response.content
    status = response.status_code
    text = short(body.decode("utf-8", "replace"), 300)
    if status >= 500:
        return Outcome(TRACEBACK, f"HTTP {status}: {text}")
    if 400 <= status < 500:
        if len(body) >= MAX_BODY:
            return Outcome(TRACEBACK, f"HTTP {status} with a {len(body):,}-byte body: {text}")
        return Outcome(CAUGHT, f"HTTP {status} ({len(body)} B): {text}")
    return Outcome(SILENT, f"HTTP {status} ({len(body):,} B): {text}")


def loads_model(path: Path) -> str | None:
    """None when the model at ``path`` loads (sha256 verified), else why not."""
    try:
        from gcmr.search import load_searcher

        load_searcher(path)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {short(str(exc), 200)}"
    return None


def loads_index(path: Path) -> str | None:
    try:
        from gcmr.ids.index import load_index

        load_index(path)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {short(str(exc), 200)}"
    return None


def kept(outcome: Outcome, why_not: str | None, what: str) -> Outcome:
    """``outcome``, unless the artifact it must have left alone no longer loads."""
    if why_not is not None:
        return Outcome(LOST, f"{what} no longer loads ({why_not}); command: {outcome.detail}")
    return Outcome(outcome.cls, outcome.detail + f" [{what} still loads]")


# ---------------------------------------------------------------------------------------
# corpus cases: a copy of the world, damaged, then `gcmr validate` (and one `gcmr index`)

def _items(w: Path) -> list[str]:
    return (w / "items.jsonl").read_text(encoding="utf-8").splitlines()


def _write_items(w: Path, lines: list[str]) -> None:
    (w / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")


def c_malformed_jsonl(e: Env) -> Outcome:
    w = e.copy(e.world, "malformed")
    lines = _items(w)
    lines[5] = lines[5][:-7]  # cut the closing of the JSON object
    _write_items(w, lines)
    return cli("validate", w)


def c_duplicate_ids(e: Env) -> Outcome:
    w = e.copy(e.world, "dupids")
    lines = _items(w)
    lines[3] = lines[3].replace('"item-0000003"', '"item-0000002"')
    _write_items(w, lines)
    return cli("validate", w)


def _emb(e: Env, tag: str, change: Callable[[np.ndarray], Any]) -> Path:
    w = e.copy(e.world, tag)
    x = np.load(w / "embeddings.npy")
    x = change(x)
    np.save(w / "embeddings.npy", x)
    return w


def c_nan_embeddings(e: Env) -> Outcome:
    def nan(x: np.ndarray) -> np.ndarray:
        x[7, 3] = np.nan
        return x
    return cli("validate", _emb(e, "nan", nan))


def c_inf_embeddings(e: Env) -> Outcome:
    def inf(x: np.ndarray) -> np.ndarray:
        x[9, 0] = np.inf
        return x
    return cli("validate", _emb(e, "inf", inf))


def c_nan_embeddings_index(e: Env) -> Outcome:
    def nan(x: np.ndarray) -> np.ndarray:
        x[:, 5] = np.nan
        return x
    w = _emb(e, "nanidx", nan)
    return cli("index", w, e.path("nanidx-out"), "--epochs", "1", "--max-steps", "2",
               "--quiet")


def c_wrong_dim(e: Env) -> Outcome:
    return cli("validate", _emb(e, "wrongdim", lambda x: x[:, :512].copy()))


def c_wrong_rows(e: Env) -> Outcome:
    return cli("validate", _emb(e, "wrongrows", lambda x: x[:150].copy()))


def c_pickled_embeddings(e: Env) -> Outcome:
    w = e.copy(e.world, "pickle")
    np.save(w / "embeddings.npy", np.array([{"evil": 1}] * 200, dtype=object),
            allow_pickle=True)
    return cli("validate", w)


def c_raw_pickle_embeddings(e: Env) -> Outcome:
    w = e.copy(e.world, "rawpickle")
    (w / "embeddings.npy").write_bytes(pickle.dumps(np.zeros((200, 1024), np.float32)))
    return cli("validate", w)


def c_missing_corpus_json(e: Env) -> Outcome:
    w = e.copy(e.world, "nocorpusjson")
    (w / "corpus.json").unlink()
    return cli("validate", w)


def c_corpus_json_wrong_count(e: Env) -> Outcome:
    w = e.copy(e.world, "wrongcount")
    meta = json.loads((w / "corpus.json").read_text())
    meta["num_items"] = 201
    (w / "corpus.json").write_text(json.dumps(meta))
    return cli("validate", w)


def _with_query(e: Env, tag: str, split: str, line: int, query: dict) -> Path:
    """A copy of the world whose ``split`` has ``query`` at (0-based) ``line``."""
    w = e.copy(e.world, tag)
    p = w / "queries" / f"{split}.jsonl"
    lines = p.read_text(encoding="utf-8").splitlines()
    lines[line] = json.dumps(query)
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return w


def c_empty_query_in_split(e: Env) -> Outcome:
    return cli("validate", _with_query(e, "emptyquery", "test", 2,
                                       {"text": "", "relevant": ["item-0000018"]}))


def c_unknown_relevant(e: Env) -> Outcome:
    return cli("validate", _with_query(e, "unknownrel", "val", 0,
                                       {"text": "a dog", "relevant": ["item-9999999"]}))


def c_empty_items(e: Env) -> Outcome:
    w = e.copy(e.world, "emptyitems")
    (w / "items.jsonl").write_text("", encoding="utf-8")
    return cli("validate", w)


def c_items_not_utf8(e: Env) -> Outcome:
    w = e.copy(e.world, "itemsutf8")
    data = (w / "items.jsonl").read_bytes()
    (w / "items.jsonl").write_bytes(data.replace(b"salad", b"sal\xff\xfed", 1))
    return cli("validate", w)


def c_eval_empty_split(e: Env) -> Outcome:
    w = e.copy(e.world, "emptysplit")
    (w / "queries" / "test.jsonl").write_text("", encoding="utf-8")
    return cli("eval", e.model, "--corpus", w, "--split", "test",
               "--out", e.path("emptysplit.json"))


def c_eval_unknown_split(e: Env) -> Outcome:
    return cli("eval", e.model, "--split", "nosuch", "--out", e.path("nosuch.json"))


# ---------------------------------------------------------------------------------------
# tampered artifacts: a copy of the model / index, damaged, then `gcmr search`

def c_flipped_safetensors(e: Env) -> Outcome:
    m = e.copy(e.model, "flip")
    p = m / "model.safetensors"
    data = bytearray(p.read_bytes())
    for pos in (len(data) // 2, len(data) // 2 + 1, len(data) - 10):
        data[pos] ^= 0xFF
    p.write_bytes(bytes(data))
    return cli("search", m, "a dog", "-k", "3")


def c_truncated_safetensors(e: Env) -> Outcome:
    m = e.copy(e.model, "trunc")
    p = m / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return cli("search", m, "a dog", "-k", "3")


def c_truncated_safetensors_noverify(e: Env) -> Outcome:
    m = e.copy(e.model, "truncnv")
    p = m / "model.safetensors"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 3])
    return cli("search", m, "a dog", "-k", "3", "--no-verify")


def c_garbage_header_noverify(e: Env) -> Outcome:
    m = e.copy(e.model, "hdrnv")
    p = m / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[8:24] = b"\xff" * 16  # inside the JSON header
    p.write_bytes(bytes(data))
    return cli("search", m, "a dog", "-k", "3", "--no-verify")


def c_missing_safetensors(e: Env) -> Outcome:
    m = e.copy(e.model, "nosafet")
    (m / "model.safetensors").unlink()
    return cli("search", m, "a dog", "-k", "3")


def c_swapped_item_ids(e: Env) -> Outcome:
    i = e.copy(e.index, "swapids")
    ids = json.loads((i / "item_ids.json").read_text())
    lst = ids if isinstance(ids, list) else ids.get("item_ids", ids.get("ids"))
    lst[0], lst[1] = lst[1], lst[0]
    (i / "item_ids.json").write_text(json.dumps(ids))
    return cli("search", e.model, "a dog", "-k", "3", "--index", i)


def c_edited_ids_npy(e: Env) -> Outcome:
    i = e.copy(e.index, "editids")
    codes = np.load(i / "ids.npy")
    codes[0], codes[1] = codes[1].copy(), codes[0].copy()
    np.save(i / "ids.npy", codes)
    return cli("search", e.model, "a dog", "-k", "3", "--index", i)


def c_corrupt_model_manifest(e: Env) -> Outcome:
    m = e.copy(e.model, "badmanifest")
    p = m / "manifest.json"
    p.write_text(p.read_text()[:100], encoding="utf-8")
    return cli("search", m, "a dog", "-k", "3")


def c_corrupt_index_manifest(e: Env) -> Outcome:
    i = e.copy(e.index, "badidxmanifest")
    (i / "manifest.json").write_text("{not json", encoding="utf-8")
    return cli("search", e.model, "a dog", "-k", "3", "--index", i)


def c_missing_tokenizer(e: Env) -> Outcome:
    m = e.copy(e.model, "notok")
    (m / "tokenizer.json").unlink()
    return cli("search", m, "a dog", "-k", "3")


def c_corpus_reordered(e: Env) -> Outcome:
    w = e.copy(e.world, "reorder")
    lines = _items(w)
    x = np.load(w / "embeddings.npy")
    order = np.arange(len(lines))
    order[[0, 1]] = order[[1, 0]]
    _write_items(w, [lines[j] for j in order])
    np.save(w / "embeddings.npy", x[order])
    return cli("search", e.model, "a dog", "-k", "3", "--corpus", w)


# ---------------------------------------------------------------------------------------
# CLI arguments

def c_search_file_not_dir(e: Env) -> Outcome:
    return cli("search", e.model / "manifest.json", "a dog")


def c_search_missing_model(e: Env) -> Outcome:
    return cli("search", e.work / "no-such-model", "a dog")


def c_k_huge(e: Env) -> Outcome:
    return cli("search", e.model, "a dog", "-k", "1000000000")


def c_k_zero(e: Env) -> Outcome:
    return cli("search", e.model, "a dog", "-k", "0")


def c_k_negative(e: Env) -> Outcome:
    return cli("search", e.model, "a dog", "-k", "-3")


def c_k_not_int(e: Env) -> Outcome:
    return cli("search", e.model, "a dog", "-k", "2.5")


def c_beam_zero(e: Env) -> Outcome:
    return cli("search", e.model, "a dog", "--beam", "0")


def c_argv_bad_utf8(e: Env) -> Outcome:
    return cli("search", e.model, b"a d\xff\xfeg", "-k", "3")


def c_file_bad_utf8(e: Env) -> Outcome:
    p = e.path("badutf8.txt")
    p.write_bytes(b"a dog\nsal\xff\xfead\n")
    return cli("search", e.model, "--file", p, "-k", "3")


def c_file_missing(e: Env) -> Outcome:
    return cli("search", e.model, "--file", e.work / "no-such-file.txt", "-k", "3")


def c_empty_query(e: Env) -> Outcome:
    return cli("search", e.model, "", "-k", "3")


def c_whitespace_query(e: Env) -> Outcome:
    return cli("search", e.model, "   \t ", "-k", "3")


def c_eval_k_zero(e: Env) -> Outcome:
    return cli("eval", e.model, "-k", "0", "--out", e.path("evalk0.json"))


def c_index_existing(e: Env) -> Outcome:
    i = e.copy(e.index, "idxexist")
    out = cli("index", e.world, i, "--epochs", "1", "--max-steps", "2", "--quiet")
    return kept(out, loads_index(i), "the existing index")


def c_train_existing(e: Env) -> Outcome:
    m = e.copy(e.model, "trainexist")
    out = cli("train", e.index, m, *TINY)
    return kept(out, loads_model(m), "the existing model")


def c_train_overwrite_bad_lr(e: Env) -> Outcome:
    m = e.copy(e.model, "m2lr")
    out = cli("train", e.index, m, *TINY, "--overwrite", "--lr", "-1")
    return kept(out, loads_model(m), "the old model")


def c_train_overwrite_zero_epochs(e: Env) -> Outcome:
    m = e.copy(e.model, "m2ep0")
    tiny = [a for a in TINY]
    tiny[tiny.index("--epochs") + 1] = "0"
    out = cli("train", e.index, m, *tiny, "--overwrite")
    return kept(out, loads_model(m), "the old model")


def c_train_overwrite_bad_heads(e: Env) -> Outcome:
    m = e.copy(e.model, "m2heads")
    tiny = [a for a in TINY]
    tiny[tiny.index("--heads") + 1] = "3"  # 32 is not divisible by 3
    out = cli("train", e.index, m, *tiny, "--overwrite")
    return kept(out, loads_model(m), "the old model")


def c_synth_existing(e: Env) -> Outcome:
    w = e.copy(e.world, "synthexist")
    out = cli("synth", w, "--items", "50", "--seed", "1")
    try:
        from gcmr.corpus import load_corpus

        load_corpus(w)
        n = len(_items(w))
        why = None if n == 200 else f"it has {n} items, not 200"
    except Exception as exc:  # noqa: BLE001
        why = f"{type(exc).__name__}: {short(str(exc), 200)}"
    return kept(out, why, "the existing world")


# ---------------------------------------------------------------------------------------
# library: gcmr.search.load_searcher(M).search(...)

def c_lib_none(e: Env) -> Outcome:
    return call(lambda: e.searcher.search(None))


def c_lib_k_float(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a dog", k=2.5))


def c_lib_k_bool(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a dog", k=True))


def c_lib_k_huge(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a dog", k=10**9))


def c_lib_surrogate(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a d\ud800g", k=3))


def c_lib_beam_zero(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a dog", k=3, beam=0))


def c_lib_candidates_empty(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a dog", k=3, candidates=[]))


def c_lib_candidates_out_of_range(e: Env) -> Outcome:
    return call(lambda: e.searcher.search("a dog", k=3, candidates=[0, 10**6]))


def c_lib_empty_string(e: Env) -> Outcome:
    return call(lambda: e.searcher.search([""], k=3))


def c_lib_int_query(e: Env) -> Outcome:
    return call(lambda: e.searcher.search(123, k=3))


def c_lib_load_not_a_model(e: Env) -> Outcome:
    from gcmr.search import load_searcher

    return call(lambda: load_searcher(e.world))


# ---------------------------------------------------------------------------------------
# server: fastapi TestClient on gcmr.serve.app.create_app(M)

JSON = {"content-type": "application/json"}


def c_http_surrogate(e: Env) -> Outcome:
    return http(e.client.post("/search", content=b'{"queries": ["a d\\ud800g"], "k": 3}',
                              headers=JSON))


def c_http_body_over_limit(e: Env) -> Outcome:
    body = json.dumps({"queries": ["a" * 900] * 1300}).encode()  # ~1.2 MB
    return http(e.client.post("/search", content=body, headers=JSON))


def c_http_10k_queries(e: Env) -> Outcome:
    out = http(e.client.post("/search", json={"queries": ["a dog"] * 10_000, "k": 3}))
    return out


def c_http_1mb_query(e: Env) -> Outcome:
    return http(e.client.post("/search", json={"queries": ["x" * 1_000_000], "k": 3}))


def c_http_bad_utf8_body(e: Env) -> Outcome:
    return http(e.client.post("/search", content=b'{"queries": ["a d\xff\xfeg"]}',
                              headers=JSON))


def c_http_k_zero(e: Env) -> Outcome:
    return http(e.client.post("/search", json={"queries": ["a dog"], "k": 0}))


def c_http_k_huge(e: Env) -> Outcome:
    return http(e.client.get("/search", params={"q": "a dog", "k": 10**9}))


def c_http_beam_zero(e: Env) -> Outcome:
    return http(e.client.post("/search", json={"queries": ["a dog"], "beam": 0}))


def c_http_get_bad_utf8(e: Env) -> Outcome:
    return http(e.client.get("/search?q=a%20d%FF%FEg&k=3"))


def c_http_get_no_q(e: Env) -> Outcome:
    return http(e.client.get("/search"))


def c_http_not_json(e: Env) -> Outcome:
    return http(e.client.post("/search", content=b"queries=a dog", headers=JSON))


def c_http_queries_not_list(e: Env) -> Outcome:
    return http(e.client.post("/search", json={"queries": "a dog", "k": 3}))


def c_http_empty_queries(e: Env) -> Outcome:
    return http(e.client.post("/search", json={"queries": [], "k": 3}))


def c_http_whitespace_query(e: Env) -> Outcome:
    return http(e.client.get("/search", params={"q": "   ", "k": 3}))


def c_http_bad_content_length(e: Env) -> Outcome:
    return http(e.client.post("/search", content=b'{"queries": ["a"]}',
                              headers={**JSON, "content-length": "abc"}))


# ---------------------------------------------------------------------------------------
# kill -9 of gcmr train, a lone surrogate served, 1 MB queries to the library tokenizer

def _long_train(e: Env, model: Path, *extra: Any) -> list[Any]:
    """``gcmr train`` argv over ``model`` that runs long enough to be killed mid-way."""
    tiny = list(TINY)
    tiny[tiny.index("--max-steps") + 1] = "100000"
    tiny[tiny.index("--epochs") + 1] = "40"
    return gcmr("train", e.index, model, *tiny, *extra)


def _kill_when(argv: list[Any], ready: Callable[[], bool], *, env: dict | None = None
               ) -> str | None:
    """Start ``argv``, SIGKILL it once ``ready()``; None, or why it could not be killed."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not ready():
            if proc.poll() is not None:
                return f"exited {proc.returncode} first: {short(proc.stderr.read().decode())}"
            if time.monotonic() > deadline:
                return "never reached the kill point"
            time.sleep(0.05)
        proc.kill()
        proc.wait()
        return None
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()


def _resumed(e: Env, model: Path, *extra: Any) -> Outcome:
    """``gcmr train --resume`` of a killed run: caught (clean) when it completes a model that
    loads; the training itself succeeding is the expected outcome, not a silent one."""
    tiny = list(TINY)
    tiny[tiny.index("--max-steps") + 1] = "100000"
    tiny[tiny.index("--epochs") + 1] = "2"  # epochs may change on resume
    out = cli("train", e.index, model, *tiny, *extra, "--resume")
    if out.cls == SILENT:  # exit 0: the run finished
        why = loads_model(model)
        if why is not None:
            return Outcome(LOST, f"--resume finished but the model does not load: {why}")
        return Outcome(CAUGHT, "--resume completed a model that loads")
    return out


def c_kill9_train_mid_run(e: Env) -> Outcome:
    m = e.path("kill9train")
    why = _kill_when(_long_train(e, m), lambda: (m / "checkpoint" / "state.json").is_file())
    if why is not None:
        return Outcome(TRACEBACK, f"harness: the run {why}")
    out = _resumed(e, m)
    return Outcome(out.cls, "killed after its first checkpoint; " + out.detail)


def c_kill9_train_overwrite(e: Env) -> Outcome:
    m = e.copy(e.model, "kill9over")
    staging = m.parent / f".{m.name}.partial"
    why = _kill_when(_long_train(e, m, "--overwrite"),
                     lambda: (staging / "checkpoint" / "state.json").is_file())
    if why is not None:
        return Outcome(TRACEBACK, f"harness: the run {why}")
    lost = loads_model(m)
    if lost is not None:
        return Outcome(LOST, f"after kill -9 of --overwrite the old model does not load: {lost}")
    out = _resumed(e, m)
    return Outcome(out.cls, "killed mid-run, the old model still loads; " + out.detail)


KILL_BETWEEN = """
import os, sys, time
from pathlib import Path
from gcmr import artifacts
from gcmr.cli import main
out = Path(sys.argv[1])
artifacts._exchange_paths = lambda a, b: False  # the two-rename swap (no renameat2)
real = os.replace
def replace(a, b):
    real(a, b)
    if Path(b).name.startswith(f".{out.name}.old-"):
        Path(sys.argv[2]).write_text("ready")
        time.sleep(600)
os.replace = replace
sys.exit(main(sys.argv[3:]))
"""


def c_kill9_train_between_renames(e: Env) -> Outcome:
    m = e.copy(e.model, "kill9swap")
    marker = e.path("kill9swap.ready")
    argv = [sys.executable, "-c", KILL_BETWEEN, str(m), str(marker),
            "train", str(e.index), str(m), *TINY, "--overwrite"]
    why = _kill_when(argv, marker.exists)
    if why is not None:
        return Outcome(TRACEBACK, f"harness: the run {why}")
    gone = not m.exists()
    lost = loads_model(m)
    if lost is not None:
        return Outcome(LOST, f"killed between the renames, the old model is lost: {lost}")
    return Outcome(CAUGHT, f"killed between the two renames of the final swap (final path "
                           f"{'missing' if gone else 'present'}); the next load put the old "
                           f"model back and it loads, sha256 verified")


def c_http_surrogate_caption(e: Env) -> Outcome:
    w = e.copy(e.world, "surrcaption")
    lines = _items(w)
    item = json.loads(lines[0])
    item["captions"] = ["a red \ud800 dog"] + item.get("captions", [])[1:]
    lines[0] = json.dumps(item)  # ensure_ascii: the line holds the JSON escape \\ud800
    _write_items(w, lines)
    i, m = e.path("surrcaption-idx"), e.path("surrcaption-model")
    for args in (("index", w, i, "--epochs", "1", "--max-steps", "5", "--quiet"),
                 ("train", i, m, *TINY)):
        out = cli(*args)
        if out.cls != SILENT:
            return Outcome(TRACEBACK if out.cls == TRACEBACK else out.cls,
                           f"gcmr {args[0]} on a corpus with a lone surrogate: {out.detail}")
    from fastapi.testclient import TestClient

    from gcmr.serve.app import create_app

    with TestClient(create_app(m), raise_server_exceptions=False) as client:
        response = client.get("/search", params={"q": "a red dog", "k": 200})
    out = http(response)
    if out.cls != SILENT:
        return out
    try:
        body = json.loads(response.content.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return Outcome(TRACEBACK, f"HTTP 200 but not valid UTF-8 JSON: {exc}")
    captions = [h["caption"] for r in body["results"] for h in r["hits"]]
    if "a red \\ud800 dog" not in captions:
        return Outcome(SILENT, "HTTP 200 without the item's caption, escaped")
    return Outcome(CAUGHT, "trained on it; HTTP 200, valid UTF-8, the caption shown escaped "
                           "(a red \\ud800 dog)")


def _tokenizer_error(e: Env, text: str) -> Outcome:
    from gcmr.model.tokenizer import QueryTokenizer

    tok = QueryTokenizer.load(e.model / "tokenizer.json")
    out = call(lambda: tok.encode_batch([text]))
    if out.cls == CAUGHT and len(out.detail) > MAX_BODY:
        return Outcome(TRACEBACK, f"the error echoes {len(out.detail):,} characters")
    return out


def c_lib_tokenizer_1mb_blank(e: Env) -> Outcome:
    return _tokenizer_error(e, " " * 1_000_000)


def c_lib_tokenizer_1mb_no_tokens(e: Env) -> Outcome:
    return _tokenizer_error(e, "\x00" * 1_000_000)


# ---------------------------------------------------------------------------------------

def _c(name: str, group: str, expected: str, fn: Callable[[Env], Outcome],
       cheap: bool = False) -> Case:
    return Case(name, group, expected, fn, cheap)


CASES: list[Case] = [
    _c("malformed JSONL line in items.jsonl", "corpus", "validate names file and line",
       c_malformed_jsonl, True),
    _c("duplicate item ids", "corpus", "validate names the duplicate", c_duplicate_ids, True),
    _c("NaN in embeddings", "corpus", "validate refuses non-finite values", c_nan_embeddings,
       True),
    _c("inf in embeddings", "corpus", "validate refuses non-finite values", c_inf_embeddings,
       True),
    _c("NaN column in embeddings, gcmr index", "corpus", "index refuses before fitting",
       c_nan_embeddings_index),
    _c("wrong-dimension embeddings", "corpus", "validate: dim != corpus.json",
       c_wrong_dim, True),
    _c("fewer embedding rows than items", "corpus", "validate: row count", c_wrong_rows, True),
    _c("pickled object array as embeddings.npy", "corpus", "refused, never unpickled",
       c_pickled_embeddings, True),
    _c("raw pickle file as embeddings.npy", "corpus", "refused, never unpickled",
       c_raw_pickle_embeddings, True),
    _c("missing corpus.json", "corpus", "validate names the missing file",
       c_missing_corpus_json, True),
    _c("corpus.json num_items wrong", "corpus", "validate: count mismatch",
       c_corpus_json_wrong_count, True),
    _c("empty query in a query split", "corpus", "validate names split and line",
       c_empty_query_in_split, True),
    _c("unknown relevant item id", "corpus", "validate names the id", c_unknown_relevant,
       True),
    _c("empty items.jsonl", "corpus", "validate: no items", c_empty_items, True),
    _c("invalid UTF-8 in items.jsonl", "corpus", "validate names the line",
       c_items_not_utf8, True),
    _c("empty test split for gcmr eval", "corpus", "eval refuses: nothing to evaluate",
       c_eval_empty_split),
    _c("gcmr eval --split nosuch", "corpus", "eval names the missing split",
       c_eval_unknown_split),
    _c("flipped bytes in model.safetensors", "artifact", "sha256 check refuses",
       c_flipped_safetensors),
    _c("truncated model.safetensors", "artifact", "sha256 check refuses",
       c_truncated_safetensors),
    _c("truncated model.safetensors, --no-verify", "artifact", "load error, clean",
       c_truncated_safetensors_noverify),
    _c("garbage in safetensors header, --no-verify", "artifact", "load error, clean",
       c_garbage_header_noverify),
    _c("missing model.safetensors", "artifact", "names the missing file",
       c_missing_safetensors),
    _c("swapped two ids in index item_ids.json", "artifact", "sha256 check refuses",
       c_swapped_item_ids),
    _c("edited index ids.npy", "artifact", "sha256 check refuses", c_edited_ids_npy),
    _c("corrupted model manifest.json", "artifact", "names the manifest",
       c_corrupt_model_manifest),
    _c("corrupted index manifest.json", "artifact", "names the manifest",
       c_corrupt_index_manifest),
    _c("missing tokenizer.json", "artifact", "names the missing file", c_missing_tokenizer),
    _c("corpus reordered after training, gcmr search", "artifact",
       "fingerprint mismatch refused", c_corpus_reordered),
    _c("gcmr search FILE q (a file, not a dir)", "cli", "not a model directory",
       c_search_file_not_dir),
    _c("gcmr search on a missing directory", "cli", "no such model", c_search_missing_model),
    _c("-k 1000000000", "cli", "k over the maximum", c_k_huge),
    _c("-k 0", "cli", "k must be >= 1", c_k_zero),
    _c("-k -3", "cli", "k must be >= 1", c_k_negative),
    _c("-k 2.5", "cli", "argparse: not an int", c_k_not_int),
    _c("--beam 0", "cli", "beam must be >= 1", c_beam_zero),
    _c("invalid UTF-8 in a query argument", "cli", "query not UTF-8", c_argv_bad_utf8),
    _c("invalid UTF-8 in --file", "cli", "names file and line", c_file_bad_utf8),
    _c("--file that does not exist", "cli", "names the file", c_file_missing),
    _c("empty query string", "cli", "query is empty", c_empty_query),
    _c("whitespace-only query", "cli", "query is blank", c_whitespace_query),
    _c("gcmr eval -k 0", "cli", "k must be >= 1", c_eval_k_zero),
    _c("gcmr index into an existing dir without --overwrite", "cli",
       "refused; old index intact", c_index_existing),
    _c("gcmr train into an existing dir without --overwrite", "cli",
       "refused; old model intact", c_train_existing),
    _c("gcmr train --overwrite --lr -1 on an existing model", "cli",
       "refused; old model still loads", c_train_overwrite_bad_lr),
    _c("gcmr train --overwrite --epochs 0 on an existing model", "cli",
       "refused; old model still loads", c_train_overwrite_zero_epochs),
    _c("gcmr train --overwrite --heads 3 (d-model 32) on an existing model", "cli",
       "refused; old model still loads", c_train_overwrite_bad_heads),
    _c("gcmr synth into an existing world without --overwrite", "cli",
       "refused; old world intact", c_synth_existing, True),
    _c("Retriever.search(None)", "library", "ConfigError", c_lib_none),
    _c("search(k=2.5)", "library", "ConfigError", c_lib_k_float),
    _c("search(k=True)", "library", "ConfigError", c_lib_k_bool),
    _c("search(k=10**9)", "library", "ConfigError", c_lib_k_huge),
    _c("search with a lone surrogate", "library", "ConfigError", c_lib_surrogate),
    _c("search(beam=0)", "library", "ConfigError", c_lib_beam_zero),
    _c("search(candidates=[])", "library", "ConfigError", c_lib_candidates_empty),
    _c("search(candidates=[0, 10**6])", "library", "ConfigError",
       c_lib_candidates_out_of_range),
    _c("search([''])", "library", "ConfigError", c_lib_empty_string),
    _c("search(123)", "library", "ConfigError", c_lib_int_query),
    _c("load_searcher(a corpus dir)", "library", "ArtifactError", c_lib_load_not_a_model,
       True),
    _c("HTTP lone surrogate in JSON", "server", "4xx, short", c_http_surrogate),
    _c("HTTP body over the limit", "server", "413", c_http_body_over_limit),
    _c("HTTP 10,000 queries in one request", "server", "422, body < 2 KB",
       c_http_10k_queries),
    _c("HTTP a 1 MB query", "server", "4xx, body < 2 KB", c_http_1mb_query),
    _c("HTTP invalid UTF-8 body", "server", "400", c_http_bad_utf8_body),
    _c("HTTP k=0", "server", "422", c_http_k_zero),
    _c("HTTP GET k=10**9", "server", "422", c_http_k_huge),
    _c("HTTP beam=0", "server", "422", c_http_beam_zero),
    _c("HTTP GET with bad UTF-8 query string", "server", "400", c_http_get_bad_utf8),
    _c("HTTP GET /search without q", "server", "422", c_http_get_no_q),
    _c("HTTP body not JSON", "server", "422", c_http_not_json),
    _c("HTTP queries not a list", "server", "422", c_http_queries_not_list),
    _c("HTTP empty queries list", "server", "422", c_http_empty_queries),
    _c("HTTP whitespace-only q", "server", "422", c_http_whitespace_query),
    _c("HTTP invalid Content-Length", "server", "400", c_http_bad_content_length),
    _c("HTTP a caption holding a lone surrogate", "server",
       "trains; 200 with the caption escaped, valid UTF-8", c_http_surrogate_caption),
    _c("QueryTokenizer.encode_batch(1 MB of spaces)", "library",
       "GcmrError, message cut short", c_lib_tokenizer_1mb_blank),
    _c("QueryTokenizer.encode_batch(1 MB without a token)", "library",
       "GcmrError, message cut short", c_lib_tokenizer_1mb_no_tokens),
    _c("kill -9 of gcmr train after its first checkpoint", "crash",
       "--resume completes a loadable model", c_kill9_train_mid_run),
    _c("kill -9 of gcmr train --overwrite mid-run", "crash",
       "old model still loads; --resume finishes", c_kill9_train_overwrite),
    _c("kill -9 between the two renames of train --overwrite's swap", "crash",
       "old model put back on load", c_kill9_train_between_renames),
]
BY_NAME = {c.name: c for c in CASES}
assert len(BY_NAME) == len(CASES), "duplicate case names"


def run_cases(names: list[str] | None, work: str | Path, *, verbose: bool = False
              ) -> list[dict[str, Any]]:
    """Run the named cases (all when None) in ``work``; one row per case."""
    cases = CASES if names is None else [BY_NAME[n] for n in names]
    env = Env(Path(work), need_model=not all(c.cheap for c in cases))
    rows = []
    for i, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        try:
            out = case.fn(env)
        except Exception as exc:  # noqa: BLE001 - a bug in the harness or an escape
            out = Outcome(TRACEBACK, f"harness: {type(exc).__name__}: {short(str(exc))}")
        secs = time.perf_counter() - t0
        rows.append({"case": case.name, "group": case.group, "expected": case.expected,
                     "outcome": out.cls, "seconds": round(secs, 2), "detail": out.detail})
        if verbose:
            print(f"[{i:2d}/{len(cases)}] {out.cls:17s} {secs:5.1f}s  {case.name}", flush=True)
    return rows


def main() -> int:
    from gcmr.bench.report import command_line, machine_info, write_report

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/reliability"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/gcmr-bench/reliability"))
    args = ap.parse_args()
    shutil.rmtree(args.work / "cases", ignore_errors=True)
    machine = machine_info()
    t0 = time.perf_counter()
    env_probe = Env(args.work)  # build the world, index and model first (timed)
    setup = env_probe.setup_seconds
    rows = run_cases(None, args.work, verbose=True)
    seconds = time.perf_counter() - t0
    counts = Counter(r["outcome"] for r in rows)
    print()
    print(f"{'class':18s} count")
    for cls in CLASSES:
        print(f"{cls:18s} {counts.get(cls, 0)}")
    bad = [r for r in rows if r["outcome"] != CAUGHT]
    for r in bad:
        print(f"\nNOT CAUGHT [{r['outcome']}] {r['case']}: {r['detail']}")
    table_rows = [{"case": r["case"], "group": r["group"], "expected": r["expected"],
                   "outcome": r["outcome"], "detail": r["detail"].replace("|", "\\|")[:160]}
                  for r in rows]
    notes = [f"{len(rows)} cases: " + ", ".join(f"{counts.get(c, 0)} {c}" for c in CLASSES),
             ("caught = clean gcmr error (non-zero exit with a message, no traceback; a "
             "GcmrError; HTTP 4xx with a body < 2 KB); traceback = a Python traceback, a "
             "non-GcmrError exception, HTTP 5xx or a 4xx body >= 2 KB; silently accepted = "
             "success on bad input; data lost = an artifact that loaded before no longer "
             "loads after the case."),
             ("Not in the battery because it is valid input: an empty batch, search([]), "
              "returns (0, k) arrays as faiss does (tests/search/test_validation.py); the HTTP "
              "API refuses an empty list with 422."),
             ("World: gcmr synth --items 200 --seed 0; index --epochs 1 --max-steps 5; model "
              "d-model 32, 1+1 layers, 3 steps. Setup seconds: " + json.dumps(setup))]
    notes += [f"not caught: [{r['outcome']}] {r['case']}: {r['detail']}" for r in bad]
    write_report(args.out, "reliability", title="gcmr reliability battery",
                 columns=["case", "group", "expected", "outcome", "detail"], rows=table_rows,
                 settings={"work": str(args.work), "timeout_s": TIMEOUT, "cases": len(rows)},
                 command=command_line(), machine=machine, notes=notes, seconds=seconds,
                 extra={"counts": {c: counts.get(c, 0) for c in CLASSES}, "cases": rows})
    print(f"\nwrote {args.out}/reliability.json and .md ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
