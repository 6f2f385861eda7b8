#!/usr/bin/env bash
# Build dist/edge-runner from a minimal runtime venv (.venv-build), never from the fat dev venv:
# a dev venv drags torch/TensorFlow into the binary. Usage: build/build_binary.sh [backend,backend]
set -euo pipefail
cd "$(dirname "$0")/.."
BACKENDS="${1:-${EDGE_RUNNER_BINARY_BACKENDS:-onnxruntime}}"
VENV=.venv-build
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip
fi
# cryptography: signed bundles (models keygen, export --sign, import --verify) work from the binary too
pkgs="falcon==4.4.0 waitress==3.0.2 numpy==2.4.6 psutil==7.2.2 prometheus-client==0.26.0 cryptography==50.0.2 pyinstaller==6.22.3"
case ",$BACKENDS," in *,onnxruntime,*) pkgs="$pkgs onnxruntime==1.32.0";; esac
case ",$BACKENDS," in *,openvino,*) pkgs="$pkgs openvino==2026.4.1";; esac
case ",$BACKENDS," in *,tflite,*) pkgs="$pkgs ai-edge-litert==2.3.0";; esac
case ",$BACKENDS," in *,llama_cpp,*) pkgs="$pkgs llama-cpp-python==0.3.36";; esac
echo "build: installing into $VENV: $pkgs"
# shellcheck disable=SC2086
"$VENV/bin/pip" install --disable-pip-version-check -q -c requirements/constraints.txt $pkgs
"$VENV/bin/pip" install --disable-pip-version-check -q --no-deps -e .
start=$(date +%s)
EDGE_RUNNER_BINARY_BACKENDS="$BACKENDS" "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/work build/edge-runner.spec
echo "build: dist/edge-runner $(du -h dist/edge-runner | cut -f1) in $(( $(date +%s) - start ))s (backends: $BACKENDS)"
