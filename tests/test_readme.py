"""The README's quickstart and the demo command run as documented."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MY, PG

ROOT = Path(__file__).resolve().parent.parent


def readme_python_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "error"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_readme_quickstart_runs(tmp_path):
    blocks = readme_python_blocks()
    assert blocks, "README has no python example"
    script = tmp_path / "quickstart.py"
    script.write_text(blocks[0])
    proc = run([sys.executable, str(script)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "{'name': 'alice', 'age': 31}" in proc.stdout


def test_readme_names_the_two_setup_commands():
    text = (ROOT / "README.md").read_text()
    assert "./scripts/demo" in text and "./scripts/test" in text
    assert "python -m apeewee demo" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert "./scripts/test" in ci


@pytest.mark.parametrize("target", ["sqlite", "postgres", "mysql"])
def test_demo_runs_and_keeps_the_total(tmp_path, target):
    url = {
        "sqlite": None,
        "postgres": f"postgresql://{PG['user']}@{PG['host']}:{PG['port']}/{PG['database']}",
        "mysql": f"mysql://{MY['user']}:{MY['password']}@{MY['host']}:{MY['port']}/{MY['database']}",
    }[target]
    args = [sys.executable, "-m", "apeewee", "demo", "--tasks", "120", "--pool", "3"]
    if url:
        args += ["--url", url]
    proc = run(args, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result:     OK" in proc.stdout
    assert "120/120" in proc.stderr  # the progress display reached the end
    assert "(unchanged)" in proc.stdout
