# Sourced by scripts/demo and scripts/test: make .venv and install apeewee into it.
# Reinstalls only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
STAMP=.venv/.apeewee-installed
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1) ${APEEWEE_EXTRAS:-dev}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "installing apeewee[${APEEWEE_EXTRAS:-dev}] into .venv" >&2
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e ".[${APEEWEE_EXTRAS:-dev}]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c "import apeewee, aiosqlite, asyncpg, aiomysql" \
    || { echo "installation failed" >&2; exit 1; }
  echo "$WANT" > "$STAMP"
fi
