"""Per-scheme index options: IndexConfig stays flat, but each scheme declares the fields it
reads; `gcmr index --help` groups the flags by scheme and an option the chosen scheme
ignores is refused (library: gcmr.ids.config.check_scheme_options)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gcmr.cli import build_parser, main
from gcmr.errors import ConfigError
from gcmr.ids.config import (
    COMMON_FIELDS,
    SCHEME_FIELDS,
    IndexConfig,
    check_scheme_options,
    schemes_using,
)


def test_every_field_belongs_to_a_scheme_or_all() -> None:
    fields = {f.name for f in dataclasses.fields(IndexConfig)}
    declared = set(COMMON_FIELDS).union(*SCHEME_FIELDS.values())
    assert declared == fields
    assert set(SCHEME_FIELDS) == {"cart", "rq", "hkmeans", "atomic", "random", "avg"}
    assert schemes_using("voken_length") == ["avg"]
    assert schemes_using("num_clusters") == ["cart", "hkmeans"]  # avg has no coarse clusters
    assert schemes_using("seed") == list(SCHEME_FIELDS)


def test_check_scheme_options() -> None:
    check_scheme_options("cart", ["num_clusters", "codebook_size", "epochs", "seed"])
    check_scheme_options("avg", ["voken_length", "shared_codebook", "max_steps"])
    check_scheme_options("my-extension", ["voken_length", "num_clusters"])  # not declared
    with pytest.raises(ConfigError, match=r"--vokens does not apply to --scheme cart "
                                          r"\(used by avg\)"):
        IndexConfig(scheme="cart").check_options(["voken_length"],
                                                 names={"voken_length": "--vokens"})
    with pytest.raises(ConfigError, match=r"num_clusters .*--scheme avg \(used by cart, "
                                          r"hkmeans\)"):
        check_scheme_options("avg", ["num_clusters"])
    with pytest.raises(ConfigError, match="codebook_size .*--scheme hkmeans"):
        check_scheme_options("hkmeans", ["num_clusters", "codebook_size"])


def test_index_help_has_one_group_per_scheme() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    index = sub.choices["index"]
    groups = {g.title.split(":")[0]: [a.option_strings[0] for a in g._group_actions
                                     if a.option_strings]
              for g in index._action_groups}
    assert {"every scheme", "cart", "rq", "hkmeans", "atomic", "random", "avg"} <= set(groups)
    assert groups["avg"] == ["--vokens", "--voken-codebook-size", "--shared-codebook",
                             "--align-weight"]
    # shared by several schemes: listed once, in the first group that reads them
    assert groups["cart"][-2:] == ["--fit-view", "--text-encoder"]
    assert "--scheme" in groups["every scheme"] and "--clusters" in groups["cart"]
    text = index.format_help()
    assert "also reads --codebook-size, --levels" in text  # rq's group
    helps = {a.option_strings[0]: a.help for a in index._actions if a.option_strings}
    assert helps["--clusters"].endswith("[cart, hkmeans]")  # which schemes read it


@pytest.mark.parametrize("argv, flag, users", [
    (["--vokens", "4", "--scheme", "cart"], "--vokens", "avg"),
    (["--clusters", "8", "--scheme", "avg"], "--clusters", "cart, hkmeans"),
    (["--shared-codebook"], "--shared-codebook", "avg"),  # default scheme: cart
    (["--scheme", "atomic", "--levels", "2"], "--levels", "cart, rq, hkmeans, random"),
    (["--scheme", "rq", "--branching", "4"], "--branching", "hkmeans"),
])
def test_index_refuses_options_the_scheme_ignores(tiny_corpus: Path, tmp_path: Path, capsys,
                                                 argv, flag: str, users: str) -> None:
    out = tmp_path / "idx"
    assert main(["index", str(tiny_corpus), str(out), "--quiet", *argv]) == 2
    err = capsys.readouterr().err
    assert f"{flag} does not apply" in err and f"(used by {users})" in err
    assert "Traceback" not in err and not out.exists()


def test_the_scheme_of_the_config_file_decides(tiny_corpus: Path, tmp_path: Path,
                                               capsys) -> None:
    cfg = tmp_path / "avg.json"
    cfg.write_text(json.dumps({"scheme": "avg", "num_clusters": 4}))  # a file may hold any field
    assert main(["index", str(tiny_corpus), str(tmp_path / "a"), "--config", str(cfg),
                 "--clusters", "8"]) == 2
    assert "--clusters does not apply to --scheme avg" in capsys.readouterr().err
    cfg.write_text(json.dumps({"scheme": "random"}))
    assert main(["index", str(tiny_corpus), str(tmp_path / "r"), "--config", str(cfg),
                 "--codebook-size", "8", "--random-code-size", "4", "--levels", "1",
                 "--quiet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["scheme"] == "random" and data["level_sizes"][:2] == [4, 4]
