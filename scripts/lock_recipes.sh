#!/usr/bin/env bash
# Re-resolves the recipe tests' locks (requirements/recipes/*.txt) from their inputs (*.in), the
# way scripts/lock.sh resolves the project's own. Each input pins one application at the version
# its recipe test names (tests/e2e/recipes); the lock pins everything that version pulls in, with
# hashes, so every run installs the same files into the application's throw-away virtualenv.
#
#   ./scripts/lock_recipes.sh                 every recipe, keeping what each input still allows
#   ./scripts/lock_recipes.sh --upgrade       dependencies to their newest allowed releases
#
# To move an application to a new release: change its version in requirements/recipes/APP.in and
# in its test (a test whose version and lock disagree fails, saying so), then run this.
set -euo pipefail
cd "$(dirname "$0")/.."

upgrade=()
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=(--upgrade) ;;
  *) echo "usage: scripts/lock_recipes.sh [--upgrade]" >&2; exit 2 ;;
esac

source scripts/bootstrap.sh test
for input in requirements/recipes/*.in; do
  .venv/bin/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
    --custom-compile-command "./scripts/lock_recipes.sh" "${upgrade[@]}" \
    "$input" -o "${input%.in}.txt"
done
echo "Recipe locks written; the recipe tests install them: MSAL_GATEWAY_RECIPES=all .venv/bin/pytest tests/e2e/recipes"
