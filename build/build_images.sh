#!/usr/bin/env bash
# Build the container images with podman on an x86_64 Debian 12 host, as root, with no registry reachable:
#
#   build/build_images.sh [--smoke] [--smoke-only] [ARCH,...]    ARCH: amd64 (default), arm64, cuda; or all
#
#   amd64  Dockerfile.arm64 for linux/amd64 -> localhost/edge-runner:amd64 (profile cpu)
#   arm64  Dockerfile.arm64 for linux/arm64 -> localhost/edge-runner:arm64 (under qemu through binfmt)
#   cuda   Dockerfile.cuda                  -> localhost/edge-runner:cuda (profile cuda; stand-in bases, see 6.)
#   --smoke       also run the seed's `docker run` line with podman against each built image (see smoke();
#                 the cuda image without a GPU: its profile falls back to the CPU)
#   --smoke-only  only the smoke test, on images built before
#
# 1. podman + Debian's runc (crun refuses this host's hybrid cgroups), configured through a containers.conf in
#    build/work/images/ passed with CONTAINERS_CONF: runc, cgroupfs, default ulimits within the hard limits here.
# 2. Base images bootstrapped locally (no registry): debootstrap --variant=minbase bookworm with python3.11 + venv
#    (a python:3.11-slim-like image), `podman import`ed as localhost/edge-runner-base:bookworm-py3.11-<arch>;
#    the rootfs tarballs are cached in build/work/images/. The Dockerfiles keep their public FROM lines as build
#    arguments; the local base is passed in (PYTHON_IMAGE).
# 3. llama-cpp-python from a prebuilt wheel, never compiled in the build: the portable x86-64 wheel of
#    `build/build_binary.sh --llama-wheel` (machine cache ~/.cache/edge-runner/wheels/), the aarch64 wheel
#    cross-compiled by `build/build_binary_aarch64.sh --llama-wheel`. The build context is a staged copy of the
#    working tree (build/work/images/context-<arch>/) with that wheel in build/image-wheels/.
# 4. The machine's pip settings and CA bundle are bind-mounted into the build's RUN steps (pip reaches the index
#    here only with them); nothing of them is written into the Dockerfiles or left in the images.
# 5. `podman build --format docker` (the OCI format drops HEALTHCHECK).
# 6. cuda: against nvidia/cuda:<CUDA_VERSION>-cudnn-{devel,runtime}-<UBUNTU> when those are present locally
#    (`podman load`ed), llama.cpp then compiled in the build as Dockerfile.cuda says. Otherwise against stand-ins
#    made by build/cuda_standin_base.sh (Debian 12 + NVIDIA's CUDA 13.0 wheels, no registry needed) with a
#    llama-cpp-python CUDA wheel compiled once in the devel stand-in, for EDGE_RUNNER_CUDA_ARCHITECTURES (90).
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$ROOT/build/work/images"
SMOKE=0
BUILD=1
while [ $# -gt 0 ]; do
  case "$1" in
    --smoke) SMOKE=1 ;;
    --smoke-only) SMOKE=1 BUILD=0 ;;
    -h | --help)
      sed -n '2,29p' "$0"
      exit 0
      ;;
    -*)
      echo "images: unknown option $1" >&2
      exit 2
      ;;
    *) break ;;
  esac
  shift
done
ARCHES="${1:-amd64}"
[ "$ARCHES" = all ] && ARCHES=amd64,arm64,cuda
HOST_PY="${PYTHON:-python3}"
if [ -x "$ROOT/.venv/bin/python" ]; then HOST_PY="$ROOT/.venv/bin/python"; fi
PORT="${EDGE_RUNNER_SMOKE_PORT:-8000}"

log() { echo "images: $*" >&2; }
since() { echo "$(($(date +%s) - $1))s"; }
t0=$(date +%s)

[ "$(id -u)" = 0 ] || {
  log "run as root (apt, debootstrap, podman)"
  exit 2
}
[ "$(uname -m)" = x86_64 ] || {
  log "this script builds on an x86_64 host"
  exit 2
}

# --- 1. podman -------------------------------------------------------------------------------------------------------
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap
fi
mkdir -p "$WORK"
nofile="$(ulimit -Hn)"
[ "$nofile" = unlimited ] && nofile=1048576
nproc_limit="$(ulimit -Hu)"
[ "$nproc_limit" = unlimited ] || [ "$nproc_limit" -gt 4096 ] && nproc_limit=4096
cat >"$WORK/containers.conf" <<EOF
# written by build/build_images.sh: crun refuses hybrid cgroups here, and the default ulimits exceed the hard limits
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc_limit:$nproc_limit"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
export CONTAINERS_CONF="$WORK/containers.conf"
log "$(podman --version), $(runc --version | head -n 1); CONTAINERS_CONF=$CONTAINERS_CONF"

# --- 2. base images --------------------------------------------------------------------------------------------------
# localhost/edge-runner-base:bookworm-py3.11-<arch>: Debian 12 minbase + python3.11, venv and pip's bootstrap wheels
base_image() {
  local arch="$1" name="localhost/edge-runner-base:bookworm-py3.11-$1" tarball="$WORK/base-bookworm-py3.11-$1.tar"
  local rootfs="$WORK/rootfs-$1" start
  if podman image exists "$name"; then
    echo "$name"
    return
  fi
  if [ ! -f "$tarball" ]; then
    start=$(date +%s)
    rm -rf "$rootfs"
    # no mirror argument: debootstrap's default Debian mirror (set DEBIAN_MIRROR to use another)
    debootstrap --arch="$arch" --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
      bookworm "$rootfs" ${DEBIAN_MIRROR:+"$DEBIAN_MIRROR"} >"$WORK/debootstrap-$arch.log" 2>&1 ||
      {
        tail -n 20 "$WORK/debootstrap-$arch.log" >&2
        return 1
      }
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
      "$rootfs"/var/log/* "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
    log "base rootfs $arch bootstrapped in $(since "$start") ($(du -h "$tarball" | cut -f1))"
  fi
  podman import -q --arch "$arch" --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' "$tarball" "$name" >/dev/null
  log "imported $name"
  echo "$name"
}

# --- 3. llama-cpp-python wheels --------------------------------------------------------------------------------------
llama_wheel() {
  local wheel
  case "$1" in
    amd64) wheel="$(bash build/build_binary.sh --llama-wheel | tail -n 1)" ;;
    arm64)
      wheel="$(find build/work/aarch64/llama/out -maxdepth 1 -name 'llama_cpp_python-*-linux_aarch64.whl' 2>/dev/null |
        head -n 1 || true)"
      if [ -z "$wheel" ]; then
        bash build/build_binary_aarch64.sh --llama-wheel >&2
        wheel="$(find build/work/aarch64/llama/out -maxdepth 1 -name 'llama_cpp_python-*-linux_aarch64.whl' | head -n 1)"
      fi
      ;;
  esac
  [ -f "$wheel" ] || {
    log "no llama-cpp-python wheel for $1"
    return 1
  }
  echo "$wheel"
}

# a copy of the working tree (tracked + untracked, not ignored files) with the wheel in build/image-wheels/
stage_context() {
  local ctx="$WORK/context-$1" wheel="${2:-}"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  git ls-files -z -c -o --exclude-standard | tar --null -T - -cf - | tar -C "$ctx" -xf -
  mkdir -p "$ctx/build/image-wheels"
  if [ -n "$wheel" ]; then cp "$wheel" "$ctx/build/image-wheels/"; fi
  echo "$ctx"
}

# --- 4. the machine's pip settings, for RUN steps only ---------------------------------------------------------------
PIP_MOUNTS=()
for conf in /etc/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
  if [ -f "$conf" ]; then
    case "$conf" in
      /etc/*) PIP_MOUNTS+=(-v "$conf:$conf:ro") ;;
      *) PIP_MOUNTS+=(-v "$conf:/root/${conf#"$HOME"/}:ro") ;;
    esac
  fi
done
CA="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
if [ -f "$CA" ]; then PIP_MOUNTS+=(-v "$CA:/etc/ssl/certs/ca-certificates.crt:ro"); fi
# a find-links folder named in the pip settings (a local wheel store), when there is one
for links in ${PIP_FIND_LINKS:-}; do
  if [ -d "$links" ]; then PIP_MOUNTS+=(-v "$links:$links:ro"); fi
done

build_one() {
  local arch="$1" base wheel="" ctx start platform dockerfile extra=()
  start=$(date +%s)
  case "$arch" in
    amd64 | arm64)
      base="$(base_image "$arch")" || return 1
      wheel="$(llama_wheel "$arch")" || return 1
      platform="linux/$arch"
      dockerfile=Dockerfile.arm64
      extra=(--build-arg "PYTHON_IMAGE=$base")
      # the amd64 image of the same Dockerfile runs the generic CPU profile, not the aarch64 one
      if [ "$arch" = amd64 ]; then extra+=(--env EDGE_RUNNER_PROFILE=cpu); fi
      ;;
    cuda)
      platform=linux/amd64
      dockerfile=Dockerfile.cuda
      if ! nvidia_cuda_bases; then
        log "nvidia/cuda bases not present locally: building against STAND-INS made from Debian 12 and NVIDIA's" \
          "CUDA wheels (build/cuda_standin_base.sh; no libcuda stub, llama.cpp without VMM, see docs/deployment.md)"
        local standins
        base="$(base_image amd64)" || return 1
        standins="$(cuda_standin_bases "$base")" || return 1
        wheel="$(cuda_llama_wheel "$(sed -n 1p <<<"$standins")")" || return 1
        extra=(--build-arg "CUDA_DEVEL_IMAGE=$(sed -n 1p <<<"$standins")"
          --build-arg "CUDA_RUNTIME_IMAGE=$(sed -n 2p <<<"$standins")" --build-arg "PYTHON=$CUDA_STANDIN_PYTHON")
      fi
      ;;
    *)
      log "unknown arch $arch (amd64, arm64, cuda)"
      return 2
      ;;
  esac
  ctx="$(stage_context "$arch" "$wheel")" || return 1
  log "building localhost/edge-runner:$arch ($platform, $dockerfile${wheel:+, $(basename "$wheel")})"
  # (this function runs under `||`, where set -e does not apply: every step checks its own status)
  if ! podman build --format docker --pull=never --platform "$platform" "${PIP_MOUNTS[@]}" "${extra[@]}" \
    -f "$ctx/$dockerfile" -t "localhost/edge-runner:$arch" "$ctx" 2>&1 | tee "$WORK/build-$arch.log"; then
    log "localhost/edge-runner:$arch: build failed after $(since "$start") (log: $WORK/build-$arch.log)"
    return 1
  fi
  log "localhost/edge-runner:$arch built in $(since "$start")"
  rm -rf "$ctx"
}

# CUDA: Dockerfile.cuda builds FROM nvidia/cuda:<CUDA_VERSION>-cudnn-{devel,runtime}-<UBUNTU> by default. Those
# cannot be pulled here; bring them in as files from a machine that can pull them
# (`docker save nvidia/cuda:13.0.0-cudnn-devel-ubuntu24.04 nvidia/cuda:13.0.0-cudnn-runtime-ubuntu24.04 -o cuda.tar`,
# then `podman load -i cuda.tar` here) and the build runs against them with --pull=never; without them the
# stand-ins of build/cuda_standin_base.sh are used.
. build/cuda_standin_base.sh
nvidia_cuda_bases() {
  local version ubuntu missing=0 flavour
  version="$(sed -n 's/^ARG CUDA_VERSION=//p' Dockerfile.cuda)"
  ubuntu="$(sed -n 's/^ARG UBUNTU=//p' Dockerfile.cuda)"
  for flavour in devel runtime; do
    if ! podman image exists "docker.io/nvidia/cuda:$version-cudnn-$flavour-$ubuntu"; then
      log "no base image nvidia/cuda:$version-cudnn-$flavour-$ubuntu here (podman load it to build on it)"
      missing=1
    fi
  done
  return "$missing"
}

# --- 5. the seed's `docker run` line against the image -----------------------------------------------------------------
# Model volume `models` (the seed's name) holding tiny-llm (GGUF Q8_0) and digits (ONNX), readable by the image's
# user (uid 10001). Run 1 is the seed's line verbatim with the LLM; run 2 the same line with digits (v2 tensors).
smoke() {
  local arch="$1" image="localhost/edge-runner:$1" scale=1 vol name rc=0 emulated=()
  # arm64 runs under qemu here: generation is many times slower, so the server's request deadline (30 s by default,
  # HTTP 504 past it) is raised for that run only; otherwise the line is the seed's, unchanged
  if [ "$arch" = arm64 ] && [ "$(uname -m)" != aarch64 ]; then
    scale=6
    emulated=(-e EDGE_RUNNER_REQUEST_TIMEOUT_MS=$((30000 * scale)))
  fi
  podman image exists "$image" || {
    log "$image does not exist: build it first"
    return 1
  }
  podman volume exists models || podman volume create models >/dev/null
  vol="$(podman volume inspect models --format '{{.Mountpoint}}')"
  rm -rf "$vol/tiny-llm" "$vol/digits"
  mkdir -p "$vol/tiny-llm" "$vol/digits"
  cp edge_runner/defaults/tiny-llm/1/model.gguf "$vol/tiny-llm/model.gguf"
  cp -r edge_runner/defaults/digits/1 "$vol/digits/1"
  chown -R 10001:10001 "$vol"
  for model in tiny-llm digits; do
    name="edge-runner-smoke-$arch-$model"
    podman rm -f -v "$name" >/dev/null 2>&1 || true
    local start
    start=$(date +%s)
    echo "+ podman run --init -d -p $PORT:8000 -v models:/models -e MAX_BATCH_SIZE=8 -e DYNAMIC_BATCHING=true" \
      "-e QUANTIZATION=Q8_0 -e MAX_CONCURRENT_REQUESTS=16 ${emulated[*]} --read-only $image --model-name $model" \
      "--model-path /models/$model --max-seq-len 2048 --enable-metrics"
    timeout -k 10 120 podman run --init -d --name "$name" -p "$PORT:8000" -v models:/models -e MAX_BATCH_SIZE=8 \
      -e DYNAMIC_BATCHING=true -e QUANTIZATION=Q8_0 -e MAX_CONCURRENT_REQUESTS=16 "${emulated[@]}" --read-only "$image" \
      --model-name "$model" --model-path "/models/$model" --max-seq-len 2048 --enable-metrics >/dev/null || {
      rc=1
      continue
    }
    if timeout -k 10 $((900 * scale)) "$HOST_PY" build/smoke_image.py --port "$PORT" --model "$model" \
      --timeout $((120 * scale)) --digits-onnx edge_runner/defaults/digits/1/model.onnx; then
      log "$model: HTTP checks passed ($(since "$start") from run to done)"
    else
      rc=1
      podman logs --tail 40 "$name" >&2 || true
    fi
    echo "+ podman healthcheck run $name"
    if timeout -k 10 $((60 * scale)) podman healthcheck run "$name"; then
      echo "healthcheck: healthy"
    else
      log "$model: HEALTHCHECK failed"
      rc=1
    fi
    echo "+ podman exec $name id; podman inspect (user, read-only root)"
    timeout -k 10 $((60 * scale)) podman exec "$name" id
    podman inspect "$name" --format 'user={{.Config.User}} read-only={{.HostConfig.ReadonlyRootfs}} init={{.HostConfig.Init}}'
    if [ "$(podman exec "$name" id -u)" = 0 ]; then
      log "$model: the server runs as root"
      rc=1
    fi
    timeout -k 10 60 podman stop -t 30 "$name" >/dev/null || rc=1
    podman logs --tail 3 "$name" 2>&1 | sed 's/^/  log: /'
    podman rm -f -v "$name" >/dev/null
  done
  return "$rc"
}

IFS=, read -r -a arch_list <<<"$ARCHES"
status=0
for arch in "${arch_list[@]}"; do
  if [ "$BUILD" = 1 ]; then build_one "$arch" || status=1; fi
done
podman images --filter reference='localhost/edge-runner*' --format '{{.Repository}}:{{.Tag}} {{.Size}}'
if [ "$SMOKE" = 1 ]; then
  for arch in "${arch_list[@]}"; do
    # cuda too: with no GPU (and no --gpus) its `cuda` profile must fall back to the CPU and still answer
    smoke "$arch" || status=1
  done
fi
log "done in $(since "$t0") (status $status)"
exit "$status"
