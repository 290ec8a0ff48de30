#!/usr/bin/env bash
# Builds, on this (GPU-less) machine, everything scripts/gpu_check.sh needs on a lent GPU
# machine, and packs it into .gpu-bundle/ (ignored by git; name it in the device call's carry).
#
# Why: a lent GPU gives 15 minutes of device time in all, starts included. Compiling meshtrain
# there costs minutes of it, and the GPU image is not ours: it has nvcc, cuBLAS and PyTorch's
# NCCL/cuDNN wheels but (as far as anyone has seen) not Open MPI, HDF5, yaml-cpp, GoogleTest or
# OpenBLAS, and nothing can be installed there. So the CUDA build (sm_90 only) is compiled here
# and travels with the shared libraries it needs from this Debian machine:
#   bin/       meshtrain and the CUDA test binaries, stripped
#   lib/       every shared library they load, except glibc's own, libstdc++/libgcc_s (the GPU
#              image's are newer, hence compatible) and the CUDA/cuDNN/NCCL libraries (hundreds
#              of MB; gpu_check.sh finds the GPU machine's own)
#   ompi/usr/  Open MPI's plugins and help texts laid out under a prefix, used through
#              OPAL_PREFIX (a one-process job needs no mpirun: singleton, ess_singleton_isolated)
#   tests/     the shell test and its helper library, examples/ the configs the checks use
# compressed into bundle.tar.xz (OpenBLAS alone is 35 MB; the device call carries 64 MiB).
#
# Usage: scripts/gpu_bundle.sh [--arch 90] [--build-dir build-gpu]
# Then: check it here (scripts/gpu_check.sh runs it with the GPU steps skipped) and carry it:
#   device run: carry [".gpu-bundle"], command "bash scripts/gpu_check.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH=90
BUILD_DIR=build-gpu
while [[ $# -gt 0 ]]; do
  case "$1" in
    --arch) ARCH=$2; shift 2 ;;
    --build-dir) BUILD_DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "gpu_bundle.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
NVCC=${NVCC:-/usr/local/cuda/bin/nvcc}
[[ -x "$NVCC" ]] || { echo "gpu_bundle.sh: no CUDA compiler at $NVCC (set NVCC)" >&2; exit 1; }

# The binaries gpu_check.sh runs: keep in step with its test list.
TARGETS=(meshtrain cuda_device_test cuda_ops_test cuda_llama_ops_test cuda_train_test
         nccl_bootstrap_test nccl_communicator_test)

echo "== configure $BUILD_DIR (MT_WITH_CUDA=ON, sm_$ARCH)"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DMT_WITH_CUDA=ON \
  -DCMAKE_CUDA_COMPILER="$NVCC" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" "${launcher[@]}" >/dev/null
echo "== build ${TARGETS[*]}"
cmake --build "$BUILD_DIR" -j"$(nproc)" --target "${TARGETS[@]}"

STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,lib,ompi/usr/lib,ompi/usr/share,tests/cuda,tests/e2e,examples}
for t in "${TARGETS[@]}"; do
  f=$(find "$BUILD_DIR" -type f -name "$t" -perm -u+x | head -1)
  [[ -n "$f" ]] || { echo "gpu_bundle.sh: built target $t not found under $BUILD_DIR" >&2; exit 1; }
  cp "$f" "$STAGE/bin/"
  strip --strip-unneeded "$STAGE/bin/$t"
done

# Libraries not to carry: the C library family (the GPU image has its own, newer), the C++
# runtime (same), the driver and the CUDA libraries (found on the GPU machine).
skip='^(linux-vdso|ld-linux|libc\.so|libm\.so|libdl\.so|libpthread\.so|librt\.so|libutil\.so|libresolv\.so|libstdc\+\+|libgcc_s|libcuda\.so|libcudart|libcublas|libcublasLt|libcudnn|libnccl|libnvrtc|libnvJitLink)'
copy_deps() {  # copy_deps FILE...: every library ldd resolves for FILE, bar the skipped ones
  ldd "$@" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $1, $3 }' | sort -u |
  while read -r name path; do
    [[ "$name" =~ $skip ]] && continue
    [[ -e "$STAGE/lib/$name" ]] || cp -L "$path" "$STAGE/lib/$name"
  done
}
copy_deps "$STAGE"/bin/*

# Open MPI's plugins, minus those for networks a one-GPU machine does not have (UCX, OFI, PSM,
# verbs) and the external PMIx (they would drag in their libraries or warn at start).
ompi_lib=$(dirname "$(readlink -f "$(ldconfig -p | awk '/libmpi\.so\.40 /{print $NF; exit}')")")
pkglib=$(ompi_info --path pkglibdir --parsable 2>/dev/null | awk -F: '{print $NF}')
libdir=$(ompi_info --path libdir --parsable 2>/dev/null | awk -F: '{print $NF}')
pkgdata=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | awk -F: '{print $NF}')
[[ -d "$pkglib" ]] || { echo "gpu_bundle.sh: Open MPI's plugin folder not found (ompi_info --path pkglibdir)" >&2; exit 1; }
rel_pkglib=${pkglib#/usr/}
mkdir -p "$STAGE/ompi/usr/$rel_pkglib" "$STAGE/ompi/usr/${libdir#/usr/}"
for f in "$pkglib"/*.so; do
  case "$(basename "$f")" in
    *ucx*|*ofi*|*psm*|*openib*|mca_pmix_ext*|mca_pmix_flux*) continue ;;
  esac
  cp -L "$f" "$STAGE/ompi/usr/$rel_pkglib/"
done
copy_deps "$STAGE/ompi/usr/$rel_pkglib"/*.so
cp -r "$pkgdata" "$STAGE/ompi/usr/share/"
echo "   Open MPI: libmpi from $ompi_lib, plugins from $pkglib"

cp tests/cuda/train_gpu_test.sh "$STAGE/tests/cuda/"
cp tests/e2e/lib.sh "$STAGE/tests/e2e/"
cp examples/tiny.yaml examples/gpt2-124m.yaml examples/llama-tiny.yaml "$STAGE/examples/"
{
  echo "commit $(git rev-parse HEAD)$(git diff --quiet HEAD -- . ':!.gpu-bundle' || echo ' (+ uncommitted changes)')"
  echo "built $(date -u +%FT%TZ) on $(hostname), $(. /etc/os-release && echo "$PRETTY_NAME"), glibc $(ldd --version | head -1 | awk '{print $NF}')"
  echo "cuda $("$NVCC" --version | tail -1), sm_$ARCH"
  echo "targets ${TARGETS[*]}"
} > "$STAGE/BUNDLE_INFO"

mkdir -p .gpu-bundle
tar -C "$STAGE" -cJf .gpu-bundle/bundle.tar.xz .
cp "$STAGE/BUNDLE_INFO" .gpu-bundle/
echo "== .gpu-bundle/bundle.tar.xz: $(du -h .gpu-bundle/bundle.tar.xz | cut -f1) packed, $(du -sh "$STAGE" | cut -f1) unpacked"
echo "   $(ls "$STAGE/lib" | wc -l) libraries, $(ls "$STAGE/ompi/usr/$rel_pkglib" | wc -l) Open MPI plugins"
cat .gpu-bundle/BUNDLE_INFO
