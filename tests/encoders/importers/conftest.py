"""Fixtures for importer tests: encoder specs over the tiny random-weight models that
tests/encoders/conftest.py builds once per session (it also provides ``git_dir``, makes
``media_fixtures`` importable and silences the tiny CLAP's mel-filter warning here)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def clip_spec(clip_dir: Path) -> str:
    return f"hf-clip:{clip_dir}"


@pytest.fixture(scope="session")
def clap_spec(clap_dir: Path) -> str:
    return f"hf-clap:{clap_dir}"
