#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv.
#
# Without a ComfyUI host: torch 2.13.0 (a CPU build where the machine has one) + the pack + test extras.
# With a ComfyUI host (COMFYUI_PATH, the root above custom_nodes/, or ~/comfy/ComfyUI): a matching
# torch/torchvision/torchaudio trio (ComfyUI imports all three at start-up) and the host's own
# requirements, pinned so that nothing swaps torch for another build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="${COGNIEDIT_VENV:-$here/.venv}"
python="${PYTHON:-python3}"

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)

host="$("$venv/bin/python" -c 'import sys; sys.path.insert(0, "."); from cogniedit.host import find_comfyui; print(find_comfyui().root or "")')"
if [ -n "$host" ]; then
    echo "setup_env: ComfyUI host at $host: installing torch ${TORCH_TRIO:-2.9.1/0.24.1/2.9.1} and the host requirements"
    IFS=/ read -r tv vv av <<<"${TORCH_TRIO:-2.9.1/0.24.1/2.9.1}"
    pins="$venv/torch-pins.txt"
    printf 'torch==%s\ntorchvision==%s\ntorchaudio==%s\n' "$tv" "$vv" "$av" >"$pins"
    "${pip[@]}" -c "$pins" torch torchvision torchaudio
    grep -viE '^\s*(torch|torchvision|torchaudio)\s*$' "$host/requirements.txt" >"$venv/host-requirements.txt"
    "${pip[@]}" -c "$pins" -r "$venv/host-requirements.txt"
    "${pip[@]}" -c "$pins" -e ".[shapes,test,train]"
    # The browser test drives the real ComfyUI front end with Debian's chromium (never `playwright install`).
    "${pip[@]}" -c "$pins" "playwright==1.65.2"
else
    echo "setup_env: no ComfyUI host found: core environment only (host tests will skip)"
    "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
    "${pip[@]}" -c <(echo "torch==${TORCH_VERSION:-2.13.0}") -e ".[shapes,test,train]"
fi
echo "setup_env: ready: $venv"
