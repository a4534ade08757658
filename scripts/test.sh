#!/usr/bin/env bash
# Set up (idempotent) and run the tests: ./scripts/test.sh [pytest arguments...]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
