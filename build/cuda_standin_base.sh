# shellcheck shell=bash
# Stand-ins for nvidia/cuda:<CUDA>-cudnn-{devel,runtime}-<UBUNTU>, sourced by build/build_images.sh (it uses that
# script's log, since, ROOT, WORK and PIP_MOUNTS) when those images are not present locally.
#
# The stand-ins are the local Debian 12 base (localhost/edge-runner-base:bookworm-py3.11-amd64) plus NVIDIA's
# CUDA 13.0 (Update 2, 13.0.2) userland from NVIDIA's wheels on the Python package index, laid out as /usr/local/cuda-13.0
# (bin, include, lib64, nvvm; /usr/local/cuda links to it, its lib64 is in ld.so.conf.d):
#   localhost/edge-runner-cuda-standin:13.0.2-devel-bookworm    nvcc (+ crt headers, cicc/libdevice), CCCL
#       (thrust, cub, libcu++), cudart, cuBLAS/cuBLASLt, cuFFT, cuRAND, NVRTC, nvJitLink, cuDNN 9, with headers
#   localhost/edge-runner-cuda-standin:13.0.2-runtime-bookworm  the same shared libraries only
# No wheel carries libcuda's link stub (NVIDIA's devel image has lib64/stubs/libcuda.so): llama.cpp links
# libcuda only for its VMM memory pool, so the CUDA wheel made here is built with -DGGML_CUDA_NO_VMM=ON
# (cudaMalloc pool instead). libcuda.so.1 itself always comes from the host's driver at run time.
#
# cuda_llama_wheel DEVEL_IMAGE compiles llama-cpp-python with CUDA once, in a container of that image, outside the
# image build (niced, 2 jobs), and keeps it in ~/.cache/edge-runner/wheels/<key>/ with the CUDA version and
# architectures in the wheel's build tag (llama_cpp_python-0.3.36-1cuda13.0.sm90-py3-none-linux_x86_64.whl).

CUDA_STANDIN_VERSION=13.0.2
CUDA_STANDIN_PYTHON=python3.11
CUDA_STANDIN_PREFIX=localhost/edge-runner-cuda-standin
# CUDA 13.0 Update 2's component versions (the newest 13.0.x wheels; the 13.0.0 nvcc wheel lacks bin/crt/link.stub,
# which nvcc needs to link device code) + the first cuDNN release for CUDA 13.
# onnxruntime-gpu 1.31.1 asks for cudart, NVRTC, cuFFT, cuRAND (its `cuda` extra) and cuDNN 9 (`cudnn`); its CUDA
# provider links cuBLAS/cuBLASLt, which need nvJitLink.
CUDA_STANDIN_RUNTIME_WHEELS=(nvidia-cuda-runtime==13.0.96 nvidia-cublas==13.1.0.3 nvidia-nvjitlink==13.0.88
  nvidia-cuda-nvrtc==13.0.88 nvidia-cufft==12.0.0.61 nvidia-curand==10.4.0.35 nvidia-cudnn-cu13==9.12.0.46)
CUDA_STANDIN_DEVEL_WHEELS=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-cccl==13.0.85)
# The here-build of the llama.cpp CUDA wheel: one architecture (Hopper, sm_90 code + compute_90 PTX) so that it
# compiles on 2 cores in well under an hour; CPU code as Dockerfile.cuda's (x86-64-v3). Override for other GPUs.
CUDA_STANDIN_ARCHITECTURES="${EDGE_RUNNER_CUDA_ARCHITECTURES:-90}"
CUDA_STANDIN_LLAMA_CMAKE_ARGS="-DGGML_CUDA=ON -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
-DGGML_CUDA_NO_VMM=ON -DLLAVA_BUILD=OFF ${EDGE_RUNNER_CUDA_EXTRA_CMAKE_ARGS:-}"
CUDA_STANDIN_LLAMA_VERSION=0.3.36

# $1 = devel | runtime: lays out the CUDA tree in $WORK/cuda-standin/$1/cuda from the (cached) wheels
cuda_standin_tree() {
  local flavour="$1" dir="$WORK/cuda-standin/$1" wheels="$WORK/cuda-wheels" unpack lib so
  local specs=("${CUDA_STANDIN_RUNTIME_WHEELS[@]}")
  [ "$flavour" = devel ] && specs+=("${CUDA_STANDIN_DEVEL_WHEELS[@]}")
  mkdir -p "$wheels"
  nice -n 19 pip download -q --no-deps -d "$wheels" "${specs[@]}" 2>&1 | grep -v '^WARNING: Location' >&2 || true
  rm -rf "$dir"
  mkdir -p "$dir/cuda/lib"
  unpack="$dir/unpack"
  for spec in "${specs[@]}"; do
    local name="${spec%%==*}" version="${spec#*==}" whl
    whl="$(find "$wheels" -maxdepth 1 -name "${name//-/_}-$version-*.whl" | head -n 1)"
    [ -f "$whl" ] || {
      log "CUDA stand-in: no wheel for $spec in $wheels"
      return 1
    }
    rm -rf "$unpack"
    unzip -q -o "$whl" -d "$unpack"
    # CUDA wheels hold nvidia/cu13/{bin,include,lib,nvvm}, cuDNN's nvidia/cudnn/{include,lib}
    cp -a "$unpack"/nvidia/*/. "$dir/cuda/"
  done
  rm -rf "$unpack"
  lib="$dir/cuda/lib"
  if [ "$flavour" = runtime ]; then
    rm -rf "$dir/cuda/include" "$dir/cuda/bin" "$dir/cuda/nvvm"
    find "$lib" -name '*.a' -delete
  else
    # nvcc.profile runs cicc from nvvm/bin (the toolkit's layout); the nvvm wheel puts it in bin/
    mkdir -p "$dir/cuda/nvvm/bin" "$dir/cuda/nvvm/lib64"
    mv "$dir/cuda/bin/cicc" "$dir/cuda/nvvm/bin/cicc"
    ln -s ../../lib/libnvvm.so.4 "$dir/cuda/nvvm/lib64/libnvvm.so.4"
    # the toolkit's unversioned link names (libcudart.so -> libcudart.so.13, ...)
    for so in "$lib"/lib*.so.*; do
      case "$so" in *.so.*.*) continue ;; esac
      [ -e "${so%.so.*}.so" ] || ln -s "$(basename "$so")" "${so%.so.*}.so"
    done
  fi
  ln -s lib "$dir/cuda/lib64"
  find "$dir/cuda" -name '__init__.py' -delete
  find "$dir/cuda" -name '__pycache__' -prune -exec rm -rf {} +
  chmod -R a+rX,go-w "$dir/cuda"
  echo "$dir"
}

# prints the two image names (devel, runtime), building the stand-ins when they are not there yet
cuda_standin_bases() {
  local base="$1" flavour name dir start
  for flavour in devel runtime; do
    name="$CUDA_STANDIN_PREFIX:$CUDA_STANDIN_VERSION-$flavour-bookworm"
    if ! podman image exists "$name"; then
      start=$(date +%s)
      dir="$(cuda_standin_tree "$flavour")" || return 1
      cat >"$dir/Containerfile" <<EOF
# written by build/cuda_standin_base.sh: a stand-in for nvidia/cuda:$CUDA_STANDIN_VERSION-cudnn-$flavour (see there)
FROM $base
COPY cuda /usr/local/cuda-${CUDA_STANDIN_VERSION%.*}
RUN ln -s cuda-${CUDA_STANDIN_VERSION%.*} /usr/local/cuda \\
    && echo /usr/local/cuda/lib64 > /etc/ld.so.conf.d/000-cuda.conf && ldconfig
ENV CUDA_VERSION=$CUDA_STANDIN_VERSION \\
    CUDA_HOME=/usr/local/cuda \\
    PATH=/usr/local/nvidia/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    LD_LIBRARY_PATH=/usr/local/nvidia/lib:/usr/local/nvidia/lib64 \\
    NVIDIA_VISIBLE_DEVICES=all \\
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \\
    NVIDIA_REQUIRE_CUDA="cuda>=${CUDA_STANDIN_VERSION%.*}"
LABEL org.opencontainers.image.description="Stand-in for nvidia/cuda:$CUDA_STANDIN_VERSION-cudnn-$flavour: Debian 12 + CUDA from NVIDIA's Python wheels"
EOF
      podman build --format docker --pull=never -q -t "$name" "$dir" >/dev/null || return 1
      rm -rf "$dir"
      log "CUDA stand-in $name built in $(since "$start") ($(podman image inspect "$name" --format '{{.Size}}') bytes)"
    fi
    echo "$name"
  done
}

# $1 = devel image: prints the path of the cached CUDA llama-cpp-python wheel, compiling it when not cached
cuda_llama_wheel() {
  local devel="$1" key cache tag start sdist wheel out args
  args="$CUDA_STANDIN_LLAMA_CMAKE_ARGS -DCMAKE_CUDA_ARCHITECTURES=$CUDA_STANDIN_ARCHITECTURES"
  tag="1cuda${CUDA_STANDIN_VERSION%.*}.sm$(printf '%s' "$CUDA_STANDIN_ARCHITECTURES" | tr ';' '.')"
  key="llama-cpp-python-$CUDA_STANDIN_LLAMA_VERSION-$tag-$(printf '%s %s' "$devel" "$args" | sha256sum | cut -c1-12)"
  cache="${EDGE_RUNNER_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runner/wheels}/$key"
  wheel="$(find "$cache" -maxdepth 1 -name "llama_cpp_python-*-$tag-*.whl" 2>/dev/null | head -n 1 || true)"
  if [ -n "$wheel" ]; then
    log "CUDA llama-cpp-python wheel from $cache"
    echo "$wheel"
    return
  fi
  sdist="$ROOT/build/work/wheels/src/llama_cpp_python-$CUDA_STANDIN_LLAMA_VERSION.tar.gz"
  if [ ! -f "$sdist" ]; then
    mkdir -p "$(dirname "$sdist")"
    pip download -q --no-deps --no-binary :all: -d "$(dirname "$sdist")" \
      "llama-cpp-python==$CUDA_STANDIN_LLAMA_VERSION" >&2 || return 1
  fi
  out="$WORK/cuda-llama-wheel"
  rm -rf "$out"
  mkdir -p "$out"
  start=$(date +%s)
  log "compiling llama-cpp-python $CUDA_STANDIN_LLAMA_VERSION with CUDA in $devel (CMAKE_ARGS=\"$args\"," \
    "nice 19, 2 jobs; log: $out/build.log)"
  # compilers from Debian, cmake/ninja/scikit-build-core from the package index (pip's build isolation)
  if ! nice -n 19 podman run --rm --init "${PIP_MOUNTS[@]}" -v "$sdist:/src/sdist.tar.gz:ro" -v "$out:/out" \
    -e CMAKE_ARGS="$args" -e CMAKE_BUILD_PARALLEL_LEVEL=2 -e PIP_DISABLE_PIP_VERSION_CHECK=1 "$devel" bash -euc "
      apt-get update -q >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends build-essential \
        $CUDA_STANDIN_PYTHON-dev $CUDA_STANDIN_PYTHON-venv >/dev/null
      $CUDA_STANDIN_PYTHON -m venv /tmp/venv
      nvcc --version | tail -n 2
      cd /tmp && nice -n 19 /tmp/venv/bin/pip wheel -v --no-deps --no-cache-dir -w /out/dist /src/sdist.tar.gz
      chown -R $(id -u):$(id -g) /out/dist" >"$out/build.log" 2>&1; then
    tail -n 30 "$out/build.log" >&2
    log "CUDA llama-cpp-python wheel: compile failed after $(since "$start") (log: $out/build.log)"
    return 1
  fi
  wheel="$(find "$out/dist" -maxdepth 1 -name 'llama_cpp_python-*.whl' | head -n 1)"
  mkdir -p "$cache"
  # the build tag (a digit first) names CUDA version and architectures without changing what pip installs
  cp "$wheel" "$cache/$(basename "$wheel" | sed "s/^\(llama_cpp_python-[^-]*\)-/\1-$tag-/")"
  printf '%s\n' "$args" >"$cache/cmake-args.txt"
  log "CUDA llama-cpp-python wheel compiled in $(since "$start"): $cache"
  find "$cache" -maxdepth 1 -name "llama_cpp_python-*-$tag-*.whl" | head -n 1
}
