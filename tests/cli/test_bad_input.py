"""Bad input to `gcmr search` / `gcmr eval` / `gcmr serve` is a one-line error and exit 2,
never a traceback: a file where a directory is expected, query text that is not UTF-8 (in an
argument, a --file or standard input), and -k / --beam beyond their documented bound."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gcmr.cli import main
from gcmr.search.base import MAX_BEAM, MAX_K

TOWER = ["--vocab-size", "200", "--d-model", "32", "--heads", "2", "--ffn", "64",
         "--encoder-layers", "1", "--batch-size", "16", "--quiet", "--no-val"]


def _error(capsys, argv: list[str]) -> str:
    """Run the CLI in-process; it must exit 2 with one `gcmr VERB: error:` message."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gcmr {argv[0]}: error:") and "Traceback" not in err
    return err


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a model\n")
    return path


@pytest.mark.parametrize("argv", [
    ["search", "{f}", "red dog"],
    ["search", "{f}/below/it", "red dog"],
    ["eval", "{f}"],
    ["serve", "{f}"],
])
def test_a_file_given_for_the_model_directory(capsys, a_file: Path, argv: list[str]) -> None:
    err = _error(capsys, [a.format(f=a_file) for a in argv])
    assert f"{a_file} is a file, not a model directory" in err


@pytest.mark.parametrize(("flag", "what"), [("--index", "index"), ("--corpus", "corpus")])
def test_a_file_given_for_the_index_or_corpus(capsys, tmp_path: Path, a_file: Path,
                                              flag: str, what: str) -> None:
    err = _error(capsys, ["search", str(tmp_path), "red dog", flag, str(a_file)])
    assert f"is a file, not a {what} directory" in err


def test_a_query_argument_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    # what Python makes of the argv bytes b"ca\xfft" on a UTF-8 system (surrogateescape)
    err = _error(capsys, ["search", str(tmp_path / "model"), "ok", "ca\udcfft"])
    assert "query argument 2 is not valid UTF-8 (byte 0xff at byte 3)" in err


def test_real_undecodable_argv_bytes_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "gcmr", "search", str(tmp_path / "model"),
                           b"ca\xfft \xc3(dog"], capture_output=True, timeout=120, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "query argument 1 is not valid UTF-8" in err


def test_a_query_file_that_is_not_utf8(capsys, tmp_path: Path) -> None:
    path = tmp_path / "queries.txt"
    path.write_bytes(b"red dog\ncaf\xc3\xa9\nb\xfeue cat\n")  # line 2 is UTF-8, line 3 not
    err = _error(capsys, ["search", str(tmp_path / "model"), "--file", str(path)])
    assert f"{path} line 3: not valid UTF-8 (byte 0xfe at byte 2 of the line)" in err
    path.write_bytes(b"red dog\n\xff\xfer\x00e\x00d\x00")  # UTF-16 is not UTF-8 either
    assert f"{path} line 2: not valid UTF-8" in _error(capsys, ["search", str(tmp_path),
                                                                "--file", str(path)])


def test_standard_input_that_is_not_utf8(capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"red dog\n\x80 cat\n")))
    err = _error(capsys, ["search", str(tmp_path / "model")])
    assert "standard input line 2: not valid UTF-8 (byte 0x80 at byte 1 of the line)" in err
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"\xc3\n")))
    err = _error(capsys, ["search", str(tmp_path / "model"), "--file", "-"])
    assert "standard input line 1: not valid UTF-8" in err


def test_query_file_problems(capsys, tmp_path: Path) -> None:
    err = _error(capsys, ["search", str(tmp_path), "--file", str(tmp_path)])
    assert f"{tmp_path}: is a directory, not a query file" in err
    err = _error(capsys, ["search", str(tmp_path), "--file", str(tmp_path / "none.txt")])
    assert "no such query file" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["search", "M", "q", "-k", "1000000000"],
     f"argument -k: expected a number in [1, {MAX_K}], got 1000000000"),
    (["search", "M", "q", "-k", str(MAX_K + 1)], f"expected a number in [1, {MAX_K}]"),
    (["search", "M", "q", "--beam", str(MAX_BEAM + 1)],
     f"argument --beam: expected a number in [1, {MAX_BEAM}], got {MAX_BEAM + 1}"),
    (["search", "M", "q", "--beam", "0"], "argument --beam: expected a number >= 1, got 0"),
    (["search", "M", "q", "-k", "2.5"], "argument -k: expected a whole number, got '2.5'"),
    (["eval", "M", "-k", "99999999999999999999"], f"expected a number in [1, {MAX_K}]"),
    (["eval", "M", "--beam", "5000"], f"expected a number in [1, {MAX_BEAM}]"),
])
def test_k_and_beam_are_bounded_at_parse_time(capsys, argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and message in err and "Traceback" not in err
    assert "MemoryError" not in err


def test_eval_out_that_is_a_directory(capsys, tmp_path: Path) -> None:
    err = _error(capsys, ["eval", str(tmp_path), "--out", str(tmp_path)])
    assert "--out" in err and "is a directory" in err


def test_good_utf8_files_and_the_largest_k_still_search(capsys, tiny_corpus: Path,
                                                        tmp_path: Path) -> None:
    dense = tmp_path / "dense"
    assert main(["train-dense", str(tiny_corpus), str(dense), "--epochs", "1", "--max-steps",
                 "20", *TOWER]) == 0
    path = tmp_path / "queries.txt"
    path.write_bytes("\ufeffred item 3\r\n\r\ncafé bleu 2\n".encode("utf-8"))  # BOM, CRLF
    capsys.readouterr()
    assert main(["search", str(dense), "--file", str(path), "-k", str(MAX_K), "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in lines] == ["red item 3", "café bleu 2"]
    assert all(len(x["results"]) == 40 for x in lines)  # every item: k beyond the corpus
