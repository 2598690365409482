#!/usr/bin/env bash
# Installs the cluster package and its pinned Ray (ray[serve]==2.60.0, PyPI) into a virtual
# environment, by default ~/.cache/engine-cluster-venv (ENGINE_CLUSTER_VENV), and prints its
# python. Not needed for single-machine use. Ray is installed once; the package itself is
# reinstalled every time (Ray workers import it from the environment, so it must match the sources).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${ENGINE_CLUSTER_VENV:-$HOME/.cache/engine-cluster-venv}
if ! "$venv/bin/python" -c "import ray, numpy; assert ray.__version__ == '2.60.0'" 2>/dev/null; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ray[serve]==2.60.0" numpy >&2
fi
# from a copy: setuptools writes build/ and *.egg-info next to the sources it installs
src=$(mktemp -d)
trap 'rm -rf "$src"' EXIT
cp -r "$here/pyproject.toml" "$here/engine_cluster" "$src/"
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall "$src" >&2
echo "$venv/bin/python"
