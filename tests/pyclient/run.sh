#!/usr/bin/env bash
# Runs a Python client of tests/pyclient (exec.py by default, or the script
# named by --script NAME) in a venv with the Kubernetes Python client, gRPC's
# Python package (C-core inside) and prometheus_client (from PyPI, pinned;
# made once under /var/cache, or $BERTH_PYCLIENT_VENV).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${BERTH_PYCLIENT_VENV:-/var/cache/berth-pyclient-venv}
script=exec.py
if [ "${1:-}" = --script ]; then
  script=$2
  shift 2
fi
pins=(kubernetes==37.0.2 grpcio==1.85.3 grpcio-tools==1.85.1 prometheus-client==0.21.1)
if ! "$venv/bin/python" - "${pins[@]}" 2>/dev/null <<'PY'
import sys
from importlib.metadata import version
sys.exit(any(version(p.split("==")[0]) != p.split("==")[1] for p in sys.argv[1:]))
PY
then
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "${pins[@]}" >&2
fi
exec "$venv/bin/python" "$here/$script" "$@"
