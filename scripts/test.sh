#!/usr/bin/env bash
# Installs what the tests need (redis-server, a virtualenv with the test extra, Node.js from PyPI
# for the third-party OpenID provider) and runs every check: lint, format, types, layers, tests.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
.venv/bin/pytest "$@"
