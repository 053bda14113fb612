#!/usr/bin/env bash
# Set up a virtual environment with crystalforge, its plugins and the test tools.
# torch is installed as the local CPU wheel (torch==2.13.0) first, so pip never
# resolves a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip"
$PIP install -q --upgrade pip setuptools wheel
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    $PIP install -q "torch==2.13.0"
fi
$PIP install -q -e ".[test,docs]"
for plugin in plugins/*/; do
    [ -f "$plugin/pyproject.toml" ] && $PIP install -q -e "$plugin"
done
# the browser tests of the web page drive Debian's headless Chromium (tests/test_web_browser.py)
if ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "note: chromium and chromium-driver are not installed; the browser tests will be skipped" >&2
    fi
fi
"$VENV/bin/crystalforge" --version
