#!/usr/bin/env bash
# Set up (idempotent) and train: ./scripts/run.sh [overrides...]   e.g. ./scripts/run.sh model=cnn trainer.epochs=5
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec .venv/bin/trainrun "$@"
