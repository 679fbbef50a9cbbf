#!/usr/bin/env bash
# Install cvat-sdk 2.17.0 (the SDK for CVAT 2.17 servers) into .cache/sdk-2.17 without touching
# the venv; the bridge tests then run with PYTHONPATH=.cache/sdk-2.17 (see tests/sdk217/__init__.py).
set -euo pipefail
cd "$(dirname "$0")/../.."
PY="${PYTHON:-.venv/bin/python}"
TARGET=.cache/sdk-2.17
if [ -f "$TARGET/cvat_sdk/version.py" ] && grep -q '"2.17.0"' "$TARGET/cvat_sdk/version.py"; then
  exit 0
fi
"$PY" -m pip install --quiet --no-deps --target "$TARGET" \
  cvat-sdk==2.17.0 tuspy==0.2.5 requests six certifi idna charset_normalizer tinydb
