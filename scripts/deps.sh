#!/usr/bin/env bash
# Installs the Debian 12 packages meshtrain needs, if any is missing (as root, or with sudo).
# Prints what it installs; does nothing when all are present.
set -euo pipefail
PKGS=(build-essential cmake openmpi-bin libopenmpi-dev libhdf5-dev hdf5-tools libyaml-cpp-dev
      libgtest-dev libopenblas-dev libcli11-dev nlohmann-json3-dev libfmt-dev libspdlog-dev
      libbenchmark-dev libpcre2-dev python3)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "meshtrain: installing missing packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "meshtrain: not root and no sudo; please install: ${missing[*]}" >&2; exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
