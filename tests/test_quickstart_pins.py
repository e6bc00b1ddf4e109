"""The two Quickstart lines pin the same torch (and torchvision), so running both in one
virtualenv never swaps torch under the installed package."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[1] / "README.md"


def _pins(line: str) -> dict[str, str]:
    return dict(re.findall(r'"?(torch|torchvision)==([0-9.]+)"?', line))


def test_both_quickstart_lines_pin_the_same_torch() -> None:
    section = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    demo, tests = re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL)
    assert _pins(demo) == _pins(tests) and "torch" in _pins(demo)
