#!/usr/bin/env bash
# The Python package's tests: build the wheel, install it in a fresh virtual environment,
# run pytest against the CLI on the embedded default. Needs python3 >= 3.9 and PyPI (for
# maturin, numpy and pytest); the wheel itself depends on numpy alone.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/python-test-venv
python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check maturin numpy pytest
rm -rf target/wheels-test
"$venv/bin/maturin" build --release --quiet -m python/Cargo.toml -o target/wheels-test
"$venv/bin/pip" install --quiet --disable-pip-version-check target/wheels-test/memprune-*.whl
PATH="$PWD/$venv/bin:$PATH" "$venv/bin/python" -m pytest -q python/tests
