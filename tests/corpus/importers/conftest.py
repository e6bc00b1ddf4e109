"""Fixtures for importer tests: the media/model builders of tests/encoders, tiny models."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_HELPERS = Path(__file__).resolve().parents[2] / "encoders" / "media_fixtures.py"
if "media_fixtures" not in sys.modules:
    _spec = importlib.util.spec_from_file_location("media_fixtures", _HELPERS)
    assert _spec is not None and _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["media_fixtures"] = _module
    _spec.loader.exec_module(_module)
mf = sys.modules["media_fixtures"]


def pytest_collection_modifyitems(items):
    # the tiny CLAP feature extractor makes transformers warn about empty mel filters
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:At least one mel filter"))


@pytest.fixture(scope="session")
def clip_spec(tmp_path_factory) -> str:
    return f"hf-clip:{mf.tiny_clip_dir(tmp_path_factory.mktemp('imp-clip'))}"


@pytest.fixture(scope="session")
def clap_spec(tmp_path_factory) -> str:
    return f"hf-clap:{mf.tiny_clap_dir(tmp_path_factory.mktemp('imp-clap'))}"


@pytest.fixture(scope="session")
def git_dir(tmp_path_factory) -> Path:
    return mf.tiny_git_dir(tmp_path_factory.mktemp("imp-git"))
