#!/usr/bin/env bash
# Build dist/edge-runner-linux-aarch64 (one file) and dist/edge-runner-linux-aarch64.d/ (one folder) on an x86_64
# Debian 12 host, as root, under qemu user emulation:
#
#   build/build_binary_aarch64.sh [backend,backend,...]   default: onnxruntime,openvino,tflite,llama_cpp
#   build/build_binary_aarch64.sh --smoke [backends]      also run build/smoke_binary.sh on the one file under qemu
#   build/build_binary_aarch64.sh --llama-wheel           only steps 1 and 3: the cross-compiled llama-cpp-python wheel
#                                                         (build/work/aarch64/llama/out/; build/build_images.sh uses it)
#
# 1. qemu-user-static from bookworm-backports (qemu 10; Debian 12's qemu 7.2 segfaults on `import onnxruntime`
#    >= 1.28 under emulation), binfmt_misc registration of qemu-aarch64 (flag F: works inside a chroot).
# 2. An arm64 Debian bookworm rootfs (debootstrap --variant=minbase, second stage through binfmt) in
#    build/work/aarch64/rootfs with python3.11, venv, dev headers and libpython3.11 (PyInstaller needs it).
# 3. llama-cpp-python cross-compiled on the host with Debian's aarch64 toolchain (compiling it under emulation takes
#    well over 45 min): baseline armv8-a (-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a: NEON only, no
#    dotprod/i8mm/SVE), no OpenMP (ggml's own thread pool: no libgomp to ship); the wheel is retagged linux_aarch64.
# 4. build/build_binary.sh inside the chroot, on a copy of this working tree (build/work/aarch64/rootfs/src), with
#    the cross-built wheel placed in the chroot's edge-runner wheel cache so the script installs it instead of
#    compiling; the binaries are copied back into dist/.
# The host's pip configuration and CA bundle are copied into the rootfs (pip needs them to reach the index here);
# nothing host-specific is written into the repository.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
ROOT="$PWD"
SMOKE=0
WHEEL_ONLY=0
if [ "${1:-}" = "--smoke" ]; then
  SMOKE=1
  shift
elif [ "${1:-}" = "--llama-wheel" ]; then
  WHEEL_ONLY=1
  shift
fi
BACKENDS="${1:-onnxruntime,openvino,tflite,llama_cpp}"
WORK="$ROOT/build/work/aarch64"
ROOTFS="$WORK/rootfs"
LLAMA_VERSION=0.3.36
# what the chroot's build_binary.sh is told (the key of its wheel cache hashes this string)
LLAMA_ARGS="-DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a -DGGML_OPENMP=OFF -DLLAVA_BUILD=OFF"
HOST_PY="${PYTHON:-python3}"
if [ -x "$ROOT/.venv/bin/python" ]; then HOST_PY="$ROOT/.venv/bin/python"; fi

log() { echo "aarch64: $*" >&2; }
t0=$(date +%s)
since() { echo "$(($(date +%s) - $1))s"; }

[ "$(id -u)" = 0 ] || { log "run as root (apt, debootstrap, chroot, mount)"; exit 2; }
[ "$(uname -m)" = x86_64 ] || { log "this script cross-builds on an x86_64 host"; exit 2; }

# --- 1. qemu 10 + binfmt ---------------------------------------------------------------------------------------------
qemu_major() { qemu-aarch64-static --version 2>/dev/null | sed -n 's/.*version \([0-9]*\).*/\1/p' | head -n 1; }
if [ "$(qemu_major || true)" = "" ] || [ "$(qemu_major)" -lt 8 ] || ! command -v debootstrap >/dev/null ||
  ! command -v aarch64-linux-gnu-g++ >/dev/null; then
  if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      /usr/share/keyrings/debian-archive-keyring.gpg >/etc/apt/sources.list.d/bookworm-backports.sources
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -t bookworm-backports qemu-user-static
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q binfmt-support debootstrap file \
    gcc-aarch64-linux-gnu g++-aarch64-linux-gnu
fi
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  # qemu 10's package ships systemd binfmt.d files; without systemd, register the entry by hand
  grep -v '^#' /usr/lib/binfmt.d/qemu-aarch64.conf >/proc/sys/fs/binfmt_misc/register
fi
grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || { log "binfmt qemu-aarch64 not enabled"; exit 1; }
log "$(qemu-aarch64-static --version | head -n 1); binfmt: $(tr '\n' ' ' </proc/sys/fs/binfmt_misc/qemu-aarch64 | cut -c1-80)"

# --- 2. arm64 rootfs -----------------------------------------------------------------------------------------------
if [ "$WHEEL_ONLY" = 0 ] && [ ! -e "$ROOTFS/.edge-runner-rootfs" ]; then
  start=$(date +%s)
  rm -rf "$ROOTFS"
  mkdir -p "$WORK"
  debootstrap --arch=arm64 --variant=minbase \
    --include=python3,python3-venv,python3-dev,libpython3.11,python3-pip,ca-certificates,binutils,file \
    bookworm "$ROOTFS" http://deb.debian.org/debian >"$WORK/debootstrap.log"
  touch "$ROOTFS/.edge-runner-rootfs"
  log "rootfs bootstrapped in $(since "$start")"
fi
# the host's resolver, pip settings and CA bundle (pip reaches the index only with them)
[ "$WHEEL_ONLY" = 1 ] || cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
if [ "$WHEEL_ONLY" = 0 ] && [ -f /etc/pip.conf ]; then cp /etc/pip.conf "$ROOTFS/etc/pip.conf"; fi
for conf in "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf"; do
  if [ "$WHEEL_ONLY" = 0 ] && [ -f "$conf" ]; then
    mkdir -p "$(dirname "$ROOTFS/root/${conf#"$HOME"/}")"
    cp "$conf" "$ROOTFS/root/${conf#"$HOME"/}"
  fi
done
CA="${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
if [ "$WHEEL_ONLY" = 0 ] && [ -f "$CA" ]; then mkdir -p "$ROOTFS/$(dirname "$CA")" && cp "$CA" "$ROOTFS/$CA"; fi

# --- 3. llama-cpp-python wheel, cross-compiled -------------------------------------------------------------------------
LLAMA_DIR="$WORK/llama"
find_wheel() { find "$1" -maxdepth 1 -name "llama_cpp_python-$LLAMA_VERSION-*aarch64*.whl" 2>/dev/null | head -n 1 || true; }
[ "$WHEEL_ONLY" = 0 ] || BACKENDS=llama_cpp
case ",$BACKENDS," in
  *,llama_cpp,*)
    if [ -z "$(find_wheel "$LLAMA_DIR/out")" ]; then
      start=$(date +%s)
      mkdir -p "$LLAMA_DIR/out"
      cat >"$LLAMA_DIR/aarch64-toolchain.cmake" <<'EOF'
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
EOF
      [ -f "$LLAMA_DIR/llama_cpp_python-$LLAMA_VERSION.tar.gz" ] ||
        "$HOST_PY" -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_VERSION" -d "$LLAMA_DIR"
      log "cross-compiling llama-cpp-python $LLAMA_VERSION for aarch64 ($LLAMA_ARGS)"
      rm -f "$LLAMA_DIR"/out/llama_cpp_python-*.whl
      CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
        CMAKE_ARGS="-DCMAKE_TOOLCHAIN_FILE=$LLAMA_DIR/aarch64-toolchain.cmake $LLAMA_ARGS" \
        "$HOST_PY" -m pip wheel -q --no-cache-dir --no-deps "$LLAMA_DIR/llama_cpp_python-$LLAMA_VERSION.tar.gz" \
        -w "$LLAMA_DIR/out"
      # the wheel holds pure Python + llama_cpp/lib/*.so; if pip tagged it for the host, retag it linux_aarch64
      "$HOST_PY" - "$LLAMA_DIR/out" <<'EOF'
import base64, hashlib, sys, zipfile
from pathlib import Path

for whl in Path(sys.argv[1]).glob("llama_cpp_python-*.whl"):
    if "aarch64" in whl.name:
        continue
    stem = whl.name[: -len(".whl")]
    name, version, py, abi, plat = stem.split("-")
    target = whl.with_name(f"{name}-{version}-{py}-{abi}-linux_aarch64.whl")
    with zipfile.ZipFile(whl) as src, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as dst:
        files = {i.filename: src.read(i) for i in src.infolist()}
        wheel_file = next(f for f in files if f.endswith(".dist-info/WHEEL"))
        files[wheel_file] = files[wheel_file].replace(f"-{plat}".encode(), b"-linux_aarch64")
        record = next(f for f in files if f.endswith(".dist-info/RECORD"))
        digest = base64.urlsafe_b64encode(hashlib.sha256(files[wheel_file]).digest()).rstrip(b"=").decode()
        lines = [
            f"{wheel_file},sha256={digest},{len(files[wheel_file])}" if line.startswith(wheel_file + ",") else line
            for line in files[record].decode().splitlines()
        ]
        files[record] = ("\n".join(lines) + "\n").encode()
        for filename, data in files.items():
            dst.writestr(filename, data)
    whl.unlink()
    print(f"retagged {whl.name} -> {target.name}")
EOF
      log "llama-cpp-python cross-compiled in $(since "$start")"
    fi
    WHEEL="$(find_wheel "$LLAMA_DIR/out")"
    [ -n "$WHEEL" ] || { log "no aarch64 llama-cpp-python wheel in $LLAMA_DIR/out"; exit 1; }
    tmp="$(mktemp -d)"
    (cd "$tmp" && "$HOST_PY" -m zipfile -e "$WHEEL" . && file llama_cpp/lib/*.so*) | sed 's|^|aarch64: |' >&2
    rm -rf "$tmp"
    if [ "$WHEEL_ONLY" = 1 ]; then
      log "wheel: $WHEEL ($(since "$t0"))"
      exit 0
    fi
    # where build_binary.sh (in the chroot, HOME=/root) looks for a cached wheel: the key hashes its CMake arguments
    key="llama-cpp-python-$LLAMA_VERSION-aarch64-$(printf '%s' "$LLAMA_ARGS" | sha256sum | cut -c1-12)"
    cache="$ROOTFS/root/.cache/edge-runner/wheels/$key"
    mkdir -p "$cache"
    cp "$WHEEL" "$cache/"
    printf '%s\n' "$LLAMA_ARGS" >"$cache/cmake-args.txt"
    ;;
esac

# --- 4. build_binary.sh in the chroot, on a copy of the working tree ----------------------------------------------------
SRC="$ROOTFS/src"
mkdir -p "$SRC"
# keep the chroot's build venv and build/work between runs; everything else is a fresh copy of this checkout
find "$SRC" -mindepth 1 -maxdepth 1 ! -name .venv-build ! -name build -exec rm -rf {} +
find "$SRC/build" -mindepth 1 -maxdepth 1 ! -name work -exec rm -rf {} + 2>/dev/null || true
git ls-files -z -c -o --exclude-standard | tar --null -T - -cf - | tar -C "$SRC" -xf -
# OpenVINO's CPU plugin is libopenvino_arm_cpu_plugin.so on aarch64 (intel_cpu on x86_64): if the spec keeps only
# intel_cpu, the aarch64 binary has no OpenVINO CPU device. Add it in the copy until build/edge-runner.spec does.
if ! grep -q '"arm_cpu"' "$SRC/build/edge-runner.spec"; then
  sed -i 's/OPENVINO_PLUGINS = ("intel_cpu", /OPENVINO_PLUGINS = ("intel_cpu", "arm_cpu", /' "$SRC/build/edge-runner.spec"
  grep -q '"arm_cpu"' "$SRC/build/edge-runner.spec" || { log "could not add arm_cpu to OPENVINO_PLUGINS"; exit 1; }
  log "build/edge-runner.spec (copy in the rootfs): OpenVINO plugin arm_cpu added"
fi

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[$i]}" || umount -l "${mounted[$i]}" || true; done
}
trap cleanup EXIT
mountpoint -q "$ROOTFS/proc" || { mount -t proc proc "$ROOTFS/proc" && mounted+=("$ROOTFS/proc"); }
mountpoint -q "$ROOTFS/dev" || { mount --bind /dev "$ROOTFS/dev" && mounted+=("$ROOTFS/dev"); }

start=$(date +%s)
log "build_binary.sh $BACKENDS inside the arm64 chroot (emulated)"
chroot "$ROOTFS" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  LANG=C.UTF-8 PIP_CERT="$CA" SSL_CERT_FILE="$CA" REQUESTS_CA_BUNDLE="$CA" PIP_DEFAULT_TIMEOUT=180 \
  PIP_DISABLE_PIP_VERSION_CHECK=1 EDGE_RUNNER_LLAMA_CMAKE_ARGS="$LLAMA_ARGS" \
  bash -c "cd /src && uname -m && python3 --version && bash build/build_binary.sh '$BACKENDS'"
build_s=$(since "$start")
cleanup
mounted=()

NAME=edge-runner-linux-aarch64
mkdir -p dist
rm -rf "dist/$NAME" "dist/$NAME.d"
cp "$SRC/dist/$NAME" "dist/$NAME"
cp -a "$SRC/dist/$NAME.d" "dist/$NAME.d"
log "build_binary.sh under emulation: $build_s; total $(since "$t0")"
file "dist/$NAME" "dist/$NAME.d/edge-runner"
du -h "dist/$NAME" | cut -f1
du -sh "dist/$NAME.d" | cut -f1

if [ "$SMOKE" = 1 ]; then
  # The aarch64 binary runs on this host through binfmt; its loader and libc come from the rootfs (QEMU_LD_PREFIX).
  # The reference is this checkout's x86_64 .venv (python -m edge_runner): real answers, compared across machines.
  start=$(date +%s)
  QEMU_LD_PREFIX="$ROOTFS" EDGE_RUNNER_SMOKE_TIMEOUT_SCALE="${EDGE_RUNNER_SMOKE_TIMEOUT_SCALE:-4}" \
    bash build/smoke_binary.sh "dist/$NAME"
  log "smoke test under qemu passed in $(since "$start")"
fi
