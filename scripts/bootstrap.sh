#!/usr/bin/env bash
# Installs the system packages Engine needs (Debian) and fetches the real models into
# ENGINE_MODEL_DIR (default ~/.cache/engine-models). Idempotent; run as root or with sudo.
set -euo pipefail
need=(libopenblas-dev liblapacke-dev wordnet-base dataset-fashion-mnist)
missing=()
for p in "${need[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
echo "bootstrap: system packages present (${need[*]})"
# The official OpenAI client, for the server's compatibility test (ServerTests).
python3 -c "import openai" 2>/dev/null || python3 -m pip install --quiet --disable-pip-version-check openai==3.63.0
# Real models for the equivalence tests and the demo (cached outside the repository).
bash "$(dirname "$0")/fetch_models.sh"
