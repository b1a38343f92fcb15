#!/usr/bin/env bash
# Builds the Python package from this checkout into a fresh virtual environment and runs
# its tests. Needs only the Rust toolchain (cargo) and Python 3 with venv; pip fetches
# maturin, numpy, POT and pytest from PyPI.
#
#   python/ci.sh              # venv in $WASSDL_VENV or target/python-ci-venv
#   python/ci.sh -k dtype     # extra arguments go to pytest
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
py="${PYTHON:-python3}"
venv="${WASSDL_VENV:-$root/target/python-ci-venv}"

say() { printf '[python/ci.sh] %s\n' "$*"; }

command -v cargo >/dev/null || { say "cargo not found: install the Rust toolchain (https://rustup.rs)"; exit 1; }
command -v "$py" >/dev/null || { say "$py not found: install Python 3 or set PYTHON"; exit 1; }
say "python: $("$py" --version 2>&1), cargo: $(cargo --version)"

say "creating a fresh venv in $venv"
rm -rf "$venv"
"$py" -m venv "$venv"
pip=("$venv/bin/python" -m pip)
say "pip install --upgrade pip"
"${pip[@]}" install --quiet --upgrade pip
say "pip install numpy pot pytest scikit-learn (scikit-learn only for the clone() check)"
"${pip[@]}" install --quiet numpy pot pytest scikit-learn
say "pip install $here (builds the Rust extension with maturin, release profile)"
log="$venv/pip-install-wassdl.log"
if ! "${pip[@]}" install --verbose "$here" >"$log" 2>&1; then
    tail -n 60 "$log"
    say "pip install failed (full log: $log)"
    exit 1
fi
grep -E "Compiling wassdl|Finished|Built wheel|Successfully installed" "$log" || true
"$venv/bin/python" -c "import wassdl, numpy; print('[python/ci.sh] wassdl', wassdl.__version__, 'from', wassdl.__file__, '| numpy', numpy.__version__)"

# Run from the repository root (not python/) so that `import wassdl` finds the installed
# package, not the source folder without its compiled extension.
cd "$root"
say "pytest python/tests $*"
"$venv/bin/python" -m pytest -q python/tests "$@"
