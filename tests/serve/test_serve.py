"""``gcmr serve``: the HTTP API over a tiny trained generative model and a dense model."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402

from gcmr.corpus import load_corpus  # noqa: E402
from gcmr.ids import IndexConfig, build_index  # noqa: E402
from gcmr.serve import create_app  # noqa: E402
from gcmr.train import TrainConfig, train  # noqa: E402

TINY_MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1, "decoder_layers": 1}
BUDGET = dict(epochs=1, batch_size=16, vocab_size=200, val_split=None)


@pytest.fixture
def trained(tiny_corpus: Path, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path
    corpus = load_corpus(tiny_corpus)
    index = build_index(corpus, IndexConfig(num_clusters=4, codebook_size=4, latent_dim=8,
                                            hidden_dims=[16], epochs=1, max_steps=5,
                                            batch_size=16), show_progress=False)
    index_dir = index.save(root / "index")
    train(index_dir, root / "model", config=TrainConfig(**BUDGET), model_options=TINY_MODEL,
          show_progress=False)
    return root / "model", corpus.path


def test_health_search_and_page(trained) -> None:
    model, _ = trained
    client = TestClient(create_app(model))
    health = client.get("/health").json()
    assert "max_queries" in health.pop("limits")  # the values: tests/serve/test_limits.py
    assert health == {"status": "ok", "model": str(model), "kind": "generative", "items": 40}
    one = client.get("/search", params={"q": "red item 3", "k": 5}).json()
    hits = one["results"][0]["hits"]
    assert one["results"][0]["query"] == "red item 3" and len(hits) == 5
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert len({h["id"] for h in hits}) == 5 and all(h["id"].startswith("item") for h in hits)
    assert hits[0]["score"] >= hits[-1]["score"] and hits[0]["caption"]
    batch = client.post("/search", json={"queries": ["red item 3", "blue 2"], "k": 3,
                                         "beam": 6}).json()
    assert [r["query"] for r in batch["results"]] == ["red item 3", "blue 2"]
    assert all(len(r["hits"]) == 3 for r in batch["results"])
    # the batch answer for a query equals its single-query answer (same search)
    assert [h["id"] for h in batch["results"][0]["hits"]] == \
        [h["id"] for h in client.get("/search", params={"q": "red item 3", "k": 3,
                                                          "beam": 6}).json()["results"][0]["hits"]]
    page = client.get("/")
    assert page.status_code == 200 and "<form" in page.text and "40 items" in page.text


def test_bad_requests_are_422_with_the_field(trained) -> None:
    client = TestClient(create_app(trained[0]))
    r = client.post("/search", json={"queries": ["ok", "  "]})
    assert r.status_code == 422 and "queries[1] is empty" in r.json()["detail"]
    r = client.get("/search", params={"q": "x", "k": 0})
    assert r.status_code == 422 and "k" in str(r.json()["detail"])
    r = client.post("/search", json={"queries": []})
    assert r.status_code == 422 and "queries" in str(r.json()["detail"])
    assert client.get("/search").status_code == 422  # q missing


def test_dense_model_and_missing_model(trained, tmp_path: Path) -> None:
    from gcmr.errors import ArtifactError
    from gcmr.train.dense import train_dense

    _, corpus = trained
    train_dense(corpus, tmp_path / "dense", config=TrainConfig(**BUDGET),
                tower_options={"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1},
                show_progress=False)
    client = TestClient(create_app(tmp_path / "dense"))
    assert client.get("/health").json()["kind"] == "dense"
    hits = client.get("/search", params={"q": "red item 3", "k": 4}).json()["results"][0]["hits"]
    assert len(hits) == 4
    with pytest.raises(ArtifactError, match="missing manifest"):
        create_app(tmp_path / "nothing")


def test_cli_serve_is_registered() -> None:
    from gcmr.cli import build_parser

    args = build_parser().parse_args(["serve", "MODEL", "--port", "9000"])
    assert args.port == 9000 and args.host == "127.0.0.1" and args.func.__name__ == "cmd_serve"


@pytest.mark.slow
def test_gcmr_serve_process_answers_over_http(trained) -> None:
    """The real command: uvicorn in a subprocess on a free port, queried over HTTP."""
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "gcmr", "serve", str(trained[0]),
                             "--port", str(port)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"gcmr serve did not start: {proc.stdout.read()}")
                time.sleep(0.3)
        assert health["status"] == "ok" and health["items"] == 40
        r = httpx.post(f"http://127.0.0.1:{port}/search", json={"queries": ["blue 2"], "k": 2})
        assert r.status_code == 200 and len(r.json()["results"][0]["hits"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=20)
