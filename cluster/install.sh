#!/usr/bin/env bash
# Installs the cluster package and its pinned Ray (ray[serve]==2.60.0, PyPI) into a virtual
# environment, by default ~/.cache/engine-cluster-venv (ENGINE_CLUSTER_VENV), and prints its
# python. Not needed for single-machine use. Idempotent.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${ENGINE_CLUSTER_VENV:-$HOME/.cache/engine-cluster-venv}
if ! "$venv/bin/python" -c "import ray, engine_cluster; assert ray.__version__ == '2.60.0'" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$here" >&2
fi
echo "$venv/bin/python"
