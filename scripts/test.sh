#!/usr/bin/env bash
# Installs what the tests need (redis-server, a virtualenv with the test extra, Node.js from PyPI
# for the third-party OpenID provider) and runs every check: lint, format, types, layers, the
# documentation site, tests.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh" test
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports
# The documentation site, built into a throw-away directory. --strict turns mkdocs' warnings (a
# broken link or anchor, a page left out of the navigation) into a failure; the grep catches a
# warning logged outside mkdocs' own loggers, which --strict does not count. The variable only
# silences Material's end-of-life notice, which is about the theme's future, not this build.
site=$(mktemp -d)
trap 'rm -rf "$site"' EXIT
docs_log=$(NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --site-dir "$site" 2>&1) \
  || { echo "$docs_log"; exit 1; }
if grep -q WARNING <<<"$docs_log"; then echo "$docs_log"; exit 1; fi
# The suite includes the quick form of the recipe tests (tests/e2e/recipes): they install JupyterLab
# and Datasette from their locks in requirements/recipes/ into cached virtualenvs on first use.
# MSAL_GATEWAY_RECIPES=all runs every recipe, =none none.
.venv/bin/pytest "$@"
