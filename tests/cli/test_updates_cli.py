"""gcmr add / delete / search --like --vector through the CLI: thin wiring over
gcmr.search.updates, errors exit 2 naming the id or file."""

from __future__ import annotations

import json

import numpy as np

from gcmr.cli import main
from tests.search.conftest import live_world, model_copy  # noqa: F401 (fixtures)


def test_add_search_like_delete(live_world, model_copy, tmp_path,  # noqa: F811
                                capsys) -> None:
    m = str(model_copy)
    assert main(["add", m, str(live_world["new"]), "--json", "--quiet"]) == 0
    [added] = json.loads(capsys.readouterr().out)
    assert added["op"] == "add" and added["count"] == 8 and added["version"] == 1
    assert main(["search", m, "--like", "item0045", "-k", "3", "--json"]) == 0
    hit = json.loads(capsys.readouterr().out)
    assert hit["example"] == "like item0045" and hit["results"][0]["id"] == "item0045"
    np.save(tmp_path / "v.npy", np.asarray(live_world["full"].embeddings[45]))
    assert main(["search", m, "--vector", str(tmp_path / "v.npy"), "-k", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["results"] == hit["results"]
    assert main(["search", m, "blue 45", "--like", "item0045", "-k", "3", "--json"]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert mixed["query"] == "blue 45" and len(mixed["results"]) == 3
    assert main(["delete", m, "item0045", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["version"] == 2
    assert main(["search", m, "--like", "item0045"]) == 2
    assert "unknown item id 'item0045'" in capsys.readouterr().err
    assert main(["search", m, "a photo of a blue thing number 45", "-k", "48", "--beam", "48",
                 "--json"]) == 0
    assert "item0045" not in capsys.readouterr().out
    assert main(["delete", m, "nope"]) == 2
    assert "unknown item id 'nope'" in capsys.readouterr().err
    assert main(["add", m, str(live_world["new"])]) == 2
    assert "already exists" in capsys.readouterr().err


def test_add_jsonl_with_a_finetune_and_bad_inputs(live_world, model_copy,  # noqa: F811
                                                  tmp_path,
                                                  capsys) -> None:
    full = live_world["full"]
    m = str(model_copy)
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": "n1", "captions": ["gold 99"]})
                                          + "\n")
    np.save(tmp_path / "emb.npy", np.asarray(full.embeddings[41:42]))
    assert main(["add", m, str(tmp_path / "items.jsonl"), "--embeddings",
                 str(tmp_path / "emb.npy"), "--finetune-steps", "2", "--json", "--quiet"]) == 0
    ops = [r["op"] for r in json.loads(capsys.readouterr().out)]
    assert ops == ["add", "finetune"]
    np.save(tmp_path / "bad.npy", np.full((1, 16), np.nan, dtype=np.float32))
    (tmp_path / "items.jsonl").write_text(json.dumps({"id": "n2", "captions": ["x"]}) + "\n")
    assert main(["add", m, str(tmp_path / "items.jsonl"), "--embeddings",
                 str(tmp_path / "bad.npy")]) == 2
    assert "'n2'" in capsys.readouterr().err
    assert main(["add", m, str(tmp_path / "items.jsonl"), "--replay", "2"]) == 2
    assert "apply to a fine-tune" in capsys.readouterr().err
    assert main(["search", m, "--vector", str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["search", m, "red", "--example-weight", "0.3"]) == 2
    assert "applies to a query by example" in capsys.readouterr().err
