#!/usr/bin/env bash
# Re-resolves the lock files in requirements/ from pyproject.toml, then runs every check.
#
#   ./scripts/lock.sh             keep every pin that pyproject still allows; add what is new
#   ./scripts/lock.sh --upgrade   move every package to the newest release pyproject allows
#
# The locks are universal (one file for every platform and Python 3.11+) and hash-pinned:
#   requirements/runtime.txt  what the gateway needs to run (the image and the demo install it)
#   requirements/build.txt    the build backend (setuptools), so that no build reaches the network
#   requirements/dev.txt      runtime + build + the test extra: what ./scripts/test.sh installs
# dev.txt is resolved under runtime.txt as a constraint, so a package both need has one version.
# The recipe tests' applications have locks of their own (requirements/recipes/), re-resolved by
# ./scripts/lock_recipes.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

upgrade=()
case "${1:-}" in
  "") ;;
  --upgrade) upgrade=(--upgrade) ;;
  *) echo "usage: scripts/lock.sh [--upgrade]" >&2; exit 2 ;;
esac

# uv is part of the locked test toolchain; a first run (no virtualenv yet) installs it.
source scripts/bootstrap.sh test
uv=.venv/bin/uv

common=(--quiet --universal --python-version 3.11 --generate-hashes --no-strip-markers
        --custom-compile-command "./scripts/lock.sh" "${upgrade[@]}")
build_in=$(mktemp --suffix=.in)
trap 'rm -f "$build_in"' EXIT
.venv/bin/python - "$build_in" <<'PY'
import sys, tomllib
with open("pyproject.toml", "rb") as source:
    requires = tomllib.load(source)["build-system"]["requires"]
with open(sys.argv[1], "w", encoding="utf-8") as target:
    target.write("".join(f"{line}\n" for line in requires))
PY

"$uv" pip compile "${common[@]}" pyproject.toml -o requirements/runtime.txt
"$uv" pip compile "${common[@]}" "$build_in" -o requirements/build.txt
"$uv" pip compile "${common[@]}" pyproject.toml "$build_in" --extra test \
  --constraint requirements/runtime.txt --constraint requirements/build.txt -o requirements/dev.txt
# The temporary file's name is noise in the "via" comments.
sed -i "s|${build_in}|build-system.requires|g" requirements/build.txt requirements/dev.txt

echo "Locks written; running every check against them."
exec ./scripts/test.sh
