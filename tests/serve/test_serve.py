"""``gcmr serve``: the HTTP API over a tiny trained generative model and a dense model, the
item records, the media endpoint's safety rules, and the page's assets."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient

from gcmr.corpus import load_corpus
from gcmr.ids import IndexConfig, build_index
from gcmr.serve import create_app
from gcmr.train import TrainConfig, train

TINY_MODEL = {"d_model": 32, "n_heads": 2, "d_ff": 64, "encoder_layers": 1, "decoder_layers": 1}
BUDGET = {"epochs": 1, "batch_size": 16, "vocab_size": 200, "val_split": None}


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
    assert health.pop("batching") == {"max_batch": 32, "max_wait_ms": 2.0}
    assert health.pop("features") == {"example": True, "updates": False}  # no token
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
    assert "script-src" not in page.headers["content-security-policy"]  # default-src 'self'
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset, media_type in (("page.js", "text/javascript"), ("page.css", "text/css")):
        r = client.get(f"/assets/{asset}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
        assert f"/assets/{asset}" in page.text
    assert "innerHTML" not in client.get("/assets/page.js").text  # data only as text
    assert client.get("/assets/app.py").status_code == 404
    assert client.get("/assets/..%2fapp.py").status_code == 404


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
    item = client.get("/items/item0002").json()
    assert item["identifier"] is None and item["captions"][1] == "green 2"  # no identifiers
    hits = client.get("/search", params={"q": "red item 3", "k": 4}).json()["results"][0]["hits"]
    assert len(hits) == 4
    with pytest.raises(ArtifactError, match="missing manifest"):
        create_app(tmp_path / "nothing")


def test_an_item_record_and_404_for_unknown_ids(trained) -> None:
    from gcmr.ids import load_index

    model, _ = trained
    client = TestClient(create_app(model))
    item = client.get("/items/item0003").json()
    codes = load_index(model.parent / "index").codes[3].tolist()
    assert item == {"id": "item0003", "row": 3,
                    "captions": ["a photo of a gold thing number 3", "gold 3"],
                    "source": None, "identifier": codes, "media": None}
    for unknown in ("/items/item9999", "/items/", "/items/item0003x",
                    "/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd"):
        r = client.get(unknown)
        assert r.status_code == 404 and "no item" in r.json()["detail"], unknown
    assert client.get("/items/item0003/media").status_code == 404  # no source
    long_id = client.get("/items/" + "x" * 5000)
    assert long_id.status_code == 404 and len(long_id.text) < 400  # not echoed


def _fake_with_corpus(corpus: Path):
    """The test_limits fake searcher, over a real corpus directory."""
    from gcmr.corpus import read_items

    class Fake:
        corpus_path = corpus
        item_ids = read_items(corpus / "items.jsonl", load_captions=False)[0]

        def item_descriptions(self):
            return lambda row: f"caption {row}"

        def search_rows(self, queries, *, k=10, beam=None, batch_size=256):
            raise AssertionError("not searched here")

    return Fake()


def test_media_is_served_only_for_images_inside_the_corpus(tmp_path: Path) -> None:
    from gcmr.serve.app import build_app
    from tests.conftest import make_corpus
    from tests.serve.image_corpus import write_png

    outside = write_png(tmp_path / "outside.png", rgb=(0, 0, 255))
    sources = ["media/red.png", "../outside.png", "media/link.png", "media/fake.png",
               "media/notes.txt", "https://example.com/x.png", None, "ABSOLUTE",
               "media/inner_link.png", "media"]
    corpus = tmp_path / "corpus"
    sources[7] = str(corpus / "media" / "red.png")
    make_corpus(corpus, n=len(sources), sources=sources)
    red = write_png(corpus / "media" / "red.png")
    (corpus / "media" / "link.png").symlink_to(outside)  # inside by name, outside in fact
    (corpus / "media" / "inner_link.png").symlink_to(red)  # resolves inside: allowed
    (corpus / "media" / "fake.png").write_text("not a picture")
    (corpus / "media" / "notes.txt").write_bytes(red.read_bytes())  # a PNG, but not named so
    client = TestClient(build_app(_fake_with_corpus(corpus), name="fake"))
    served = {}
    for row in range(len(sources)):
        r = client.get(f"/items/item{row:04d}/media")
        served[row] = r.status_code
        if r.status_code == 200:
            assert r.content == red.read_bytes() and r.headers["content-type"] == "image/png"
            assert r.headers["x-content-type-options"] == "nosniff"
        else:
            assert r.status_code == 404 and "outside" not in r.text
    assert served == {0: 200, 1: 404, 2: 404, 3: 404, 4: 404, 5: 404, 6: 404, 7: 200,
                      8: 200, 9: 404}
    items = {row: client.get(f"/items/item{row:04d}").json() for row in (0, 1, 6)}
    assert items[0]["media"] == "/items/item0000/media" and items[0]["source"] == "media/red.png"
    assert items[1]["media"] is None and items[1]["source"] == "../outside.png"
    assert items[6]["source"] is None and items[0]["identifier"] is None  # the fake has no index
    assert client.get("/items/item9999/media").status_code == 404


def test_media_follows_the_media_root_that_import_stamped(tmp_path: Path) -> None:
    import json

    from gcmr.serve.app import build_app
    from tests.conftest import make_corpus
    from tests.serve.image_corpus import write_png

    corpus = make_corpus(tmp_path / "corpus", n=2, sources=["a.png", "../corpus/b.png"])
    meta = json.loads((corpus / "corpus.json").read_text())
    (corpus / "corpus.json").write_text(json.dumps({**meta, "media_root": str(tmp_path / "data")}))
    write_png(tmp_path / "data" / "a.png")
    write_png(corpus / "b.png")  # in the corpus dir, but outside the declared media root
    client = TestClient(build_app(_fake_with_corpus(corpus), name="fake"))
    assert client.get("/items/item0000/media").status_code == 200
    assert client.get("/items/item0001/media").status_code == 404


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


TOKEN = "test-token-0123456789abcdef"


def _new_item(corpus_dir: Path, item_id: str, source_row: int) -> dict:
    """An item to add: a copy of corpus row ``source_row``'s embedding, a caption of it."""
    import numpy as np

    emb = np.load(corpus_dir / "embeddings.npy")[source_row]
    return {"id": item_id, "captions": ["a brand new thing"],
            "embedding": [float(v) for v in emb]}


def test_search_by_example_over_http(trained) -> None:
    """GET /search?like=ID and POST {like | vector}: the item itself first, a mixed query,
    and clear 422s (unknown id, like + vector, neither text nor example)."""
    import numpy as np

    model, corpus_dir = trained
    client = TestClient(create_app(model))
    first = client.get("/search", params={"like": "item0003", "k": 5}).json()["results"][0]
    assert first["like"] == "item0003" and first["query"] is None
    assert first["hits"][0]["id"] == "item0003" and len(first["hits"]) == 5
    mixed = client.get("/search", params={"like": "item0003", "q": "red item", "k": 3,
                                          "example_weight": 0.9}).json()["results"][0]
    assert mixed["query"] == "red item" and mixed["hits"][0]["id"] == "item0003"
    batch = client.post("/search", json={"like": ["item0001", "item0002"], "k": 2}).json()
    assert [r["hits"][0]["id"] for r in batch["results"]] == ["item0001", "item0002"]
    vec = np.load(corpus_dir / "embeddings.npy")[7].tolist()
    by_vector = client.post("/search", json={"vector": [vec], "k": 3}).json()
    assert by_vector["results"][0]["hits"][0]["id"] == "item0007"
    r = client.get("/search", params={"like": "nope"})
    assert r.status_code == 422 and "unknown item id 'nope'" in r.json()["detail"]
    r = client.post("/search", json={"like": ["item0001"], "vector": [vec]})
    assert r.status_code == 422 and "not both" in r.json()["detail"]
    r = client.post("/search", json={"k": 3})
    assert r.status_code == 422 and "give queries, like" in r.json()["detail"]
    r = client.post("/search", json={"vector": [[1.0, 2.0]]})
    assert r.status_code == 422 and "vector" in r.json()["detail"]


def test_live_add_and_delete_over_http_need_the_token(trained) -> None:
    """POST /items and DELETE /items/ID: 403 without a server token, 401 with a wrong one;
    with it the item is searchable at once, its record served, the model directory saved
    (a fresh load sees it), a taken id is 409, an unknown delete 404, and a deleted item
    never comes back."""
    model, corpus_dir = trained
    new = _new_item(corpus_dir, "fresh1", 5)
    closed = TestClient(create_app(model))
    r = closed.post("/items", json={"items": [new]})
    assert r.status_code == 403 and "--token-file" in r.json()["detail"]
    assert closed.delete("/items/item0001").status_code == 403
    client = TestClient(create_app(model, token=TOKEN))
    assert client.get("/health").json()["features"] == {"example": True, "updates": True}
    r = client.post("/items", json={"items": [new]},
                    headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/items", json={"items": [new]}).status_code == 401  # no header
    auth = {"Authorization": f"Bearer {TOKEN}"}
    r = client.post("/items", json={"items": [new]}, headers=auth)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["op"] == "add" and body["ids"] == ["fresh1"] and body["saved"] is True
    assert client.get("/health").json()["items"] == 41
    assert client.get("/items/fresh1").json()["captions"] == ["a brand new thing"]
    like = client.get("/search", params={"like": "fresh1", "k": 3}).json()["results"][0]
    assert {h["id"] for h in like["hits"][:2]} == {"fresh1", "item0005"}  # same embedding
    r = client.post("/items", json={"items": [new]}, headers=auth)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    bad = {**new, "id": "fresh2", "embedding": [1.0, 2.0]}
    r = client.post("/items", json={"items": [bad]}, headers=auth)
    assert r.status_code == 422 and "dimension 2" in r.json()["detail"]
    r = client.delete("/items/fresh1", headers=auth)
    assert r.status_code == 200 and r.json()["op"] == "delete"
    assert client.get("/items/fresh1").status_code == 404
    hits = client.get("/search", params={"like": "item0005", "k": 40}).json()["results"][0]
    assert "fresh1" not in {h["id"] for h in hits["hits"]}
    r = client.delete("/items/fresh1", headers=auth)
    assert r.status_code == 404 and "unknown item id" in r.json()["detail"]
    r = client.post("/items", json={"items": [new]}, headers=auth)
    assert r.status_code == 409 and "was deleted" in r.json()["detail"]
    # saved: a fresh server over the directory has the update (and the item stays deleted)
    again = TestClient(create_app(model)).get("/health").json()
    assert again["items"] == 40
    from gcmr.search import load_searcher

    assert "fresh1" in load_searcher(model).index.item_ids  # kept as a deleted row


def test_the_update_token_is_checked_at_start(tmp_path: Path) -> None:
    from gcmr.errors import GcmrError
    from gcmr.serve.app import build_app

    from tests.serve.tiny_models import SurrogateSearcher

    with pytest.raises(GcmrError, match="at least 16"):
        build_app(SurrogateSearcher(), name="fake", token="short")
    with pytest.raises(GcmrError, match="printable ASCII"):
        build_app(SurrogateSearcher(), name="fake", token="a token with spaces inside")
    fake = TestClient(build_app(SurrogateSearcher(), name="fake", token=TOKEN))
    r = fake.delete("/items/a", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 422 and "no live updates" in r.json()["detail"]
    r = fake.get("/search", params={"like": "a"})
    assert r.status_code == 422 and "does not search by example" in r.json()["detail"]
    assert fake.get("/health").json()["features"] == {"example": False, "updates": False}


def test_gcmr_serve_reads_the_token_from_a_file_or_the_environment(tmp_path: Path,
                                                                   monkeypatch) -> None:
    from gcmr.cli.serve import read_token
    from gcmr.errors import GcmrError

    path = tmp_path / "token.txt"
    path.write_text(f"{TOKEN}\nsecond line ignored\n", encoding="utf-8")
    assert read_token(path) == TOKEN
    monkeypatch.setenv("GCMR_SERVE_TOKEN", "from-the-environment-0123")
    assert read_token(None) == "from-the-environment-0123"
    monkeypatch.delenv("GCMR_SERVE_TOKEN")
    assert read_token(None) is None  # updates off
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(GcmrError, match="is empty"):
        read_token(path)
    with pytest.raises(GcmrError, match="cannot read"):
        read_token(tmp_path / "missing.txt")
