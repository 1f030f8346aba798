"""The separate virtual environment for peewee-async (it pins peewee<4.4, while the
project needs peewee>=4.5). Made on demand by `--with-peewee-async`; reused when its
imports already work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

VENV_DIR = ".bench-venv-peewee-async"
REQUIREMENTS = ["peewee-async[postgresql,mysql,sqlite]", "uvloop"]
CHECK = "import peewee_async, aiopg, aiomysql, aiosqlite"


def python_path(root: Path) -> Path:
    sub = "Scripts/python.exe" if sys.platform == "win32" else "bin/python"
    return root / VENV_DIR / sub


def ensure(root: Path, log) -> tuple[Path | None, str]:
    """Return (python of the venv, "") or (None, why it is unavailable)."""
    python = python_path(root)
    if python.exists() and _works(python):
        return python, ""
    log(f"creating {VENV_DIR}/ for peewee-async (one-off, about a minute) ...")
    try:
        if not python.exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(root / VENV_DIR)],
                check=True,
                capture_output=True,
                timeout=300,
            )
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS],
            check=True,
            capture_output=True,
            timeout=600,
        )
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        return None, f"could not build {VENV_DIR}: {' / '.join(tail) or exc}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"could not build {VENV_DIR}: {exc}"
    if not _works(python):
        return None, f"{VENV_DIR} was built but `{CHECK}` fails in it"
    return python, ""


def _works(python: Path) -> bool:
    try:
        return (
            subprocess.run([str(python), "-c", CHECK], capture_output=True, timeout=60).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
