#!/usr/bin/env bash
# Installs what BitFleet needs on a fresh Debian 12 machine (as root), skipping what is already there:
# libpq and libcurl headers, the PostgreSQL 15 server (for the throwaway cluster), Fashion-MNIST, Python packages.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(libpq-dev libcurl4-openssl-dev postgresql-15 postgresql-client-15 dataset-fashion-mnist python3 python3-pip pkg-config openssl iproute2)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "Ops/setup.sh: missing packages (${missing[*]}); run as root or install them" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Python tools: numpy and safetensors for the model tools and the reference forward pass used by the tests.
if ! python3 -c 'import numpy, safetensors' 2>/dev/null; then
  python3 -m pip install -q -r Ops/requirements.txt
fi

# Model tools for users' own data and PyTorch models (Ops/models/fit.py, bitfleet_torch.py; Ops/models/test_models.py
# runs them in Ops/test.sh): PyTorch pinned to the CPU wheel, so CI never downloads the CUDA build.
if ! python3 -c 'import PIL, onnx, onnxruntime' 2>/dev/null; then
  python3 -m pip install -q -r Ops/models/requirements.txt
fi
# PyPI has no +cpu builds: a local wheel directory (pip's find-links, as on the build machines) first, quietly, and only
# if it lacks the wheel PyTorch's CPU index (asking that index first would cost minutes of retries where it is
# unreachable).
if ! python3 -c 'import torch' 2>/dev/null; then
  python3 -m pip install -q "torch==2.13.0+cpu" 2>/dev/null \
    || python3 -m pip install -q --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0+cpu"
fi

if ! command -v swift >/dev/null 2>&1; then
  [ -x /opt/swift/usr/bin/swift ] || { echo "Ops/setup.sh: Swift 6 toolchain not found (expected /opt/swift)" >&2; exit 1; }
fi
