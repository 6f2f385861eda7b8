#!/usr/bin/env bash
# Build the edge-runner binary from a minimal runtime venv (.venv-build), never from the fat dev venv: a dev venv
# drags torch/TensorFlow into the binary.
#
#   build/build_binary.sh [backend,backend,...]   default: onnxruntime,openvino,tflite,llama_cpp
#   build/build_binary.sh --llama-wheel           only build (or find) the portable llama-cpp-python wheel
#
# Writes dist/edge-runner-linux-<arch> (one file) and dist/edge-runner-linux-<arch>.d/edge-runner (one folder).
#
# llama.cpp is portable: llama-cpp-python is an sdist whose default build is -march=native, so we compile our own
# wheel with LLAMA_CMAKE_ARGS (below; override with EDGE_RUNNER_LLAMA_CMAKE_ARGS). pip's wheel cache does not
# key on CMAKE_ARGS, so the wheel is built with --no-cache-dir into build/work/wheels/<key>/ and kept in
# ${EDGE_RUNNER_WHEEL_CACHE:-~/.cache/edge-runner/wheels}/<key>/ as well, so that a fresh clone on the same
# machine (CI) reuses it; <key> hashes the version and the CMake arguments.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ALL_BACKENDS=onnxruntime,openvino,tflite,llama_cpp
WHEEL_ONLY=0
if [ "${1:-}" = "--llama-wheel" ]; then
  WHEEL_ONLY=1
  shift
fi
BACKENDS="${1:-${EDGE_RUNNER_BINARY_BACKENDS:-$ALL_BACKENDS}}"
VENV=.venv-build
PY="${PYTHON:-python3}"
ARCH="$(uname -m)"
NAME="edge-runner-linux-$ARCH"
LLAMA_VERSION=0.3.36
case "$ARCH" in
  # Baseline x86-64 (SSE2 only): GGML_NATIVE=OFF alone still turns on SSE4.2/AVX/AVX2/BMI2/FMA/F16C (ggml's
  # INS_ENB default), so each is switched off. Runs on any x86-64 CPU; slower matmuls than an AVX2 build.
  x86_64) LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_SSE42=OFF -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF" ;;
  *) LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF" ;;
esac
# The multimodal (mtmd/llava) library is not used by edge-runner: skip building it.
LLAMA_CMAKE_ARGS="${EDGE_RUNNER_LLAMA_CMAKE_ARGS:-$LLAMA_CMAKE_ARGS -DLLAVA_BUILD=OFF}"
LLAMA_KEY="llama-cpp-python-$LLAMA_VERSION-$ARCH-$(printf '%s' "$LLAMA_CMAKE_ARGS" | sha256sum | cut -c1-12)"
WHEEL_DIR="build/work/wheels/$LLAMA_KEY"
WHEEL_CACHE="${EDGE_RUNNER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/wheels}/$LLAMA_KEY"
PIP=("$VENV/bin/pip" install --disable-pip-version-check -q -c requirements/constraints.txt)

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check -q --upgrade pip
fi

find_wheel() { find "$1" -maxdepth 1 -name 'llama_cpp_python-*.whl' 2>/dev/null | head -n 1 || true; }

# Prints the path of the portable wheel, building it when neither build/work/wheels nor the machine cache has it.
llama_wheel() {
  local wheel
  wheel="$(find_wheel "$WHEEL_DIR")"
  if [ -z "$wheel" ] && [ -n "$(find_wheel "$WHEEL_CACHE")" ]; then
    mkdir -p "$WHEEL_DIR"
    cp "$(find_wheel "$WHEEL_CACHE")" "$WHEEL_CACHE/cmake-args.txt" "$WHEEL_DIR/" 2>/dev/null || true
    wheel="$(find_wheel "$WHEEL_DIR")"
    echo "build: reusing the portable llama.cpp wheel from $WHEEL_CACHE" >&2
  fi
  if [ -z "$wheel" ]; then
    echo "build: compiling llama-cpp-python $LLAMA_VERSION (CMAKE_ARGS=\"$LLAMA_CMAKE_ARGS\"); 7-11 min on 2 cores" >&2
    local start tmp
    start=$(date +%s)
    tmp="$WHEEL_DIR.tmp"
    rm -rf "$tmp" && mkdir -p "$tmp"
    CMAKE_ARGS="$LLAMA_CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      "$VENV/bin/pip" wheel --disable-pip-version-check -q --no-cache-dir --no-deps \
      "llama-cpp-python==$LLAMA_VERSION" -w "$tmp" >&2
    printf '%s\n' "$LLAMA_CMAKE_ARGS" >"$tmp/cmake-args.txt"
    rm -rf "$WHEEL_DIR" && mv "$tmp" "$WHEEL_DIR"
    wheel="$(find_wheel "$WHEEL_DIR")"
    # into the machine cache atomically (another build may be looking for it at the same time)
    (mkdir -p "$WHEEL_CACHE" && cp "$WHEEL_DIR/cmake-args.txt" "$WHEEL_CACHE/" && cp "$wheel" "$WHEEL_CACHE/.partial.$$" &&
      mv "$WHEEL_CACHE/.partial.$$" "$WHEEL_CACHE/$(basename "$wheel")") || echo "build: could not cache the wheel in $WHEEL_CACHE" >&2
    echo "build: llama.cpp wheel built in $(($(date +%s) - start))s: $wheel" >&2
  fi
  printf '%s\n' "$wheel"
}

# A baseline x86-64 build must contain no instruction beyond SSE2: no VEX/EVEX-encoded ones (AVX, AVX2, FMA, F16C,
# AVX-512: mnemonics v*), no BMI1/BMI2, POPCNT, SSSE3 (pshufb, pmaddubsw) or SSE4 (ptest, pblendvb, crc32).
check_portability() {
  command -v objdump >/dev/null 2>&1 || { echo "build: objdump not found, portability not checked"; return 0; }
  local lib_dir count total=0
  lib_dir="$("$VENV/bin/python" -c 'import importlib.util,pathlib;print(pathlib.Path(importlib.util.find_spec("llama_cpp").origin).parent/"lib")')"
  for lib in "$lib_dir"/libggml*.so "$lib_dir"/libllama*.so; do
    [ -f "$lib" ] || continue
    count=$(objdump -d --no-show-raw-insn "$lib" | awk -F'\t' 'NF >= 2 {split($2, a, " "); print a[1]}' |
      grep -c -E '^(v[a-z0-9]+|shlx|shrx|sarx|pdep|pext|rorx|mulx|andn|bextr|blsi|blsr|blsmsk|popcnt|pshufb|pmaddubsw|ptest|pblendvb|crc32[bwlq]?)$' || true)
    total=$((total + count))
    echo "build: $(basename "$lib"): $count instructions beyond baseline x86-64 (AVX*, FMA, F16C, BMI, SSSE3, SSE4)"
  done
  case "$ARCH:$LLAMA_CMAKE_ARGS" in
    x86_64:*-DGGML_AVX2=OFF*)
      if [ "$total" -ne 0 ]; then
        echo "build: the baseline llama.cpp build uses instructions beyond x86-64; not portable" >&2
        exit 1
      fi
      ;;
  esac
}

if [ "$WHEEL_ONLY" = 1 ]; then
  llama_wheel
  exit 0
fi

# The runtime's pins (requirements/runtime.txt, as `make serve` installs them) without the runtimes this build leaves
# out; llama-cpp-python itself comes from the portable wheel below, its pure-Python dependencies from the index.
RUNTIMES_RE='^(onnxruntime|openvino|ai-edge-litert|llama-cpp-python)=='
pin() { grep -i -E "^$1==" requirements/runtime.txt; }
pkgs="$(grep -v -E '^[[:space:]]*(#|$)' requirements/runtime.txt | grep -v -i -E "$RUNTIMES_RE" | tr '\n' ' ')"
pkgs="$pkgs pyinstaller==6.22.3"
case ",$BACKENDS," in *,onnxruntime,*) pkgs="$pkgs $(pin onnxruntime)" ;; esac
case ",$BACKENDS," in *,openvino,*) pkgs="$pkgs $(pin openvino)" ;; esac
case ",$BACKENDS," in *,tflite,*) pkgs="$pkgs $(pin ai-edge-litert)" ;; esac
case ",$BACKENDS," in *,llama_cpp,*) pkgs="$pkgs typing-extensions diskcache" ;; esac
echo "build: installing into $VENV: $pkgs"
# shellcheck disable=SC2086
"${PIP[@]}" $pkgs
"${PIP[@]}" --no-deps -e .
case ",$BACKENDS," in
  *,llama_cpp,*)
    wheel="$(llama_wheel)"
    stamp="$VENV/.llama-wheel"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$(sha256sum "$wheel" | cut -d' ' -f1)" ]; then
      # --force-reinstall: the same version may already be there, built -march=native from pip's cache
      "${PIP[@]}" --no-deps --force-reinstall "$wheel"
      sha256sum "$wheel" | cut -d' ' -f1 >"$stamp"
    fi
    echo "build: llama.cpp from $wheel (CMAKE_ARGS: $LLAMA_CMAKE_ARGS)"
    check_portability
    ;;
esac

start=$(date +%s)
rm -rf "dist/$NAME" "dist/$NAME.d"
EDGE_RUNNER_BINARY_BACKENDS="$BACKENDS" "$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --distpath dist --workpath build/work build/edge-runner.spec
echo "build: dist/$NAME (one file) $(du -h "dist/$NAME" | cut -f1), dist/$NAME.d/edge-runner (one folder)" \
  "$(du -sh "dist/$NAME.d" | cut -f1), in $(($(date +%s) - start))s (backends: $BACKENDS)"
