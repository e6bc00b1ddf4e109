"""Session fixtures for encoder tests: tiny random-weight models saved to disk once."""

from __future__ import annotations

from pathlib import Path

import media_fixtures as mf
import pytest


def pytest_collection_modifyitems(items):
    # the tiny CLAP feature extractor (16 mel bins) makes transformers warn about empty mel
    # filters; harmless for a random-weight test model
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.filterwarnings("ignore:At least one mel filter"))


@pytest.fixture(scope="session")
def clip_dir(tmp_path_factory) -> Path:
    return mf.tiny_clip_dir(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def siglip_dir(tmp_path_factory) -> Path:
    return mf.tiny_siglip_dir(tmp_path_factory.mktemp("tiny-siglip"))


@pytest.fixture(scope="session")
def clap_dir(tmp_path_factory) -> Path:
    return mf.tiny_clap_dir(tmp_path_factory.mktemp("tiny-clap"))


@pytest.fixture(scope="session")
def open_clip_files(tmp_path_factory) -> tuple[Path, Path]:
    return mf.tiny_open_clip(tmp_path_factory.mktemp("tiny-open-clip"))


@pytest.fixture(scope="session")
def git_dir(tmp_path_factory) -> Path:
    return mf.tiny_git_dir(tmp_path_factory.mktemp("tiny-git"))


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory) -> Path:
    return mf.tiny_blip_dir(tmp_path_factory.mktemp("tiny-blip"))


@pytest.fixture(scope="session")
def images(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("images")
    return [mf.write_image(d / f"img{i}.png", seed=i) for i in range(5)]
