"""The configs, and the CLI's help, load without torch (help texts read the real defaults)."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_config_modules_import_without_torch() -> None:
    _run("import gcmr.model.config, gcmr.train.config, gcmr.ids.config, sys; "
         "assert 'torch' not in sys.modules, 'torch was imported'")


def test_configs_and_presets_work_without_torch() -> None:
    _run("import sys\n"
         "from gcmr.model.config import DenseTowerConfig, ModelConfig\n"
         "from gcmr.train.config import TrainConfig, load_preset\n"
         "from gcmr.ids.config import IndexConfig\n"
         "TrainConfig(); IndexConfig(scheme='avg').check_options(['voken_length'])\n"
         "ModelConfig(vocab_size=10, level_sizes=[4]); DenseTowerConfig(vocab_size=10, item_dim=4)\n"
         "load_preset('demo'); load_preset('cuda')\n"
         "assert 'torch' not in sys.modules, 'torch was imported'")


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["train-dense", "--help"],
                                  ["index", "--help"], ["demo", "--help"]])
def test_help_does_not_import_torch(argv: list[str]) -> None:
    _run("import sys\n"
         "from gcmr.cli import main\n"
         "try:\n"
         f"    main({argv!r})\n"
         "except SystemExit as exc:\n"
         "    assert exc.code == 0, exc.code\n"
         "assert 'torch' not in sys.modules, 'torch was imported'")


def test_lazy_packages_keep_their_public_names() -> None:
    import gcmr.ids
    import gcmr.model
    import gcmr.train

    for module in (gcmr.ids, gcmr.model, gcmr.train):
        for name in module.__all__:
            assert getattr(module, name) is not None, (module.__name__, name)
        assert set(module.__all__) <= set(dir(module))
        with pytest.raises(AttributeError):
            module.no_such_name  # noqa: B018
    from gcmr.ids import SCHEMES
    from gcmr.model.config import DenseTowerConfig as Home
    from gcmr.model.dense import DenseTowerConfig

    assert "avg" in SCHEMES  # gcmr.ids still registers the avg scheme
    assert DenseTowerConfig is Home is gcmr.model.DenseTowerConfig
