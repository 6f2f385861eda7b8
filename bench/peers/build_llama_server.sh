#!/usr/bin/env bash
# Build llama.cpp's own C++ `llama-server` (web UI off) and `llama-bench` from the llama.cpp sources vendored in
# the pinned llama-cpp-python sdist, so the LLM bench compares our server with the same engine version.
#   bash bench/peers/build_llama_server.sh [OUT_DIR]     (default: build/work/llama-server; ~6 min on 2 cores)
# Prints the path of llama-server (llama-bench lies beside it). Uses only the package registry (pip download of the sdist) and cmake.
set -euo pipefail
cd "$(dirname "$0")/../.."
out="${1:-build/work/llama-server}"
version="$(sed -n 's/^llama-cpp-python==//p' requirements/runtime.txt)"
work="$out/src"
mkdir -p "$work"
if [ ! -x "$out/bin/llama-server" ] || [ ! -x "$out/bin/llama-bench" ]; then
  [ -d "$work/llama_cpp_python-$version" ] || python3 -m pip download --disable-pip-version-check -q --no-deps --no-binary :all: \
    "llama-cpp-python==$version" -d "$work" >&2
  [ -d "$work/llama_cpp_python-$version" ] || tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
  src="$work/llama_cpp_python-$version/vendor/llama.cpp"
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF >&2
  cmake --build "$work/build" --target llama-server llama-bench -j "$(nproc)" >&2
  mkdir -p "$out/bin"
  cp "$work/build/bin/llama-server" "$work/build/bin/llama-bench" "$out/bin/"
fi
echo "$out/bin/llama-server"
