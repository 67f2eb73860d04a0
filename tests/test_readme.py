"""The README's Python example runs as written and writes its overlay PNG."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    assert blocks, "the README has no python example"
    monkeypatch.chdir(tmp_path)
    exec(compile(blocks[0], str(README), "exec"), {})  # noqa: S102 (the README's own example)
    picture = np.asarray(Image.open(tmp_path / "overlay.png"))
    assert picture.shape == (512, 512, 3)
    from skimage import data

    assert not np.array_equal(picture, data.astronaut())  # the prompt masks were drawn
