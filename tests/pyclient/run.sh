#!/usr/bin/env bash
# Runs tests/pyclient/exec.py in a venv with the Kubernetes Python client
# (from PyPI, pinned; made once under /var/cache, or $BERTH_PYCLIENT_VENV).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${BERTH_PYCLIENT_VENV:-/var/cache/berth-pyclient-venv}
version=37.0.2
if ! "$venv/bin/python" -c "import kubernetes, sys; sys.exit(kubernetes.__version__ != '$version')" 2>/dev/null; then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "kubernetes==$version" >&2
fi
exec "$venv/bin/python" "$here/exec.py" "$@"
