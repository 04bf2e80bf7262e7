"""The README's plain-PyTorch DNI loop runs as written, and each of its moves does what it says."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_loop() -> str:
    section = README.read_text().split("## Using the DNI mathematics without Lightning", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run(code: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    return scope


def test_the_readme_loop_trains_m_and_injects_it():
    code = readme_loop()
    ran = run(code)
    last = ran["sg"].sg.net[-1]
    assert last.weight.abs().sum() > 0  # M starts at zero: it learned from its bootstrapped targets
    # Without the injection the core's parameters come out different: M's output reached the core.
    cut = run(code.replace("(loss + sg.inject(h, sg.predict(h), n)).backward()", "loss.backward()"))
    assert any(not torch.equal(a, b) for a, b in zip(ran["core"].parameters(), cut["core"].parameters()))
