#!/usr/bin/env bash
# Sourced by the other scripts: installs the system packages and the virtualenv the project needs.
# Usage: source scripts/bootstrap.sh [test]   ("test" adds redis-server, nginx, chromium and
# chromedriver, and the test toolchain)
#
# Python packages come only from the hash-pinned locks in requirements/ (scripts/lock.sh writes
# them): exactly those versions, then the project itself without dependencies or build isolation,
# so nothing unpinned is fetched. A virtualenv already installed from the same locks is left as it
# is (the project is installed editable, so source changes need no reinstall).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=runtime
[ "${1:-}" = "test" ] && mode=test

want=()
python3 -c 'import ensurepip, venv' 2>/dev/null || want+=(python3-venv)
if [ "$mode" = "test" ]; then
  command -v redis-server >/dev/null || want+=(redis-server)
  { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || want+=(nginx)
  # The browser end-to-end test drives Debian's Chromium through Debian's matching chromedriver.
  command -v chromium >/dev/null || want+=(chromium)
  command -v chromedriver >/dev/null || want+=(chromium-driver)
fi
if [ ${#want[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "Installing system packages: ${want[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
  # The tests start their own nginx; a system one that apt may have started is not wanted.
  if [[ " ${want[*]} " == *" nginx "* ]] && command -v systemctl >/dev/null; then
    $sudo systemctl disable --now nginx >/dev/null 2>&1 || true
  fi
fi

if [ "$mode" = "test" ]; then
  locks=(requirements/dev.txt)
else
  locks=(requirements/runtime.txt requirements/build.txt)
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
if [ "$mode" = "test" ]; then
  # The test kit (tests/support) serves the tests and the bench scripts, which run as
  # `.venv/bin/python bench/x.py`: a path file puts its folder on this virtualenv's sys.path, so
  # neither has to change sys.path itself. Written every time: it names this checkout's path.
  site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  printf '%s\n' "$PWD/tests" > "$site/msal_gateway_test_kit.pth"
fi
stamp_of() {  # what a virtualenv installed for mode $1 was installed from
  local files=()
  if [ "$1" = "test" ]; then files+=(requirements/dev.txt)
  else files+=(requirements/runtime.txt requirements/build.txt); fi
  # Of pyproject.toml, only what installing the project reads (not the other tools' settings):
  # the editable install maps the packages setuptools finds, so a new package needs a reinstall.
  { .venv/bin/python -VV; cat "${files[@]}"
    .venv/bin/python -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb"))
print(t["project"], t["build-system"], t["tool"]["setuptools"])'; } | sha256sum | cut -d' ' -f1
}
installed_for() { [ -f ".venv/.locked-$1" ] && [ "$(cat ".venv/.locked-$1")" = "$(stamp_of "$1")" ]; }
# A test virtualenv holds everything the runtime needs as well.
if installed_for "$mode" || { [ "$mode" = "runtime" ] && installed_for test; }; then
  return 0 2>/dev/null || exit 0
fi

echo "Installing the locked Python packages (${locks[*]})"
rm -f .venv/.locked-*
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --require-hashes --only-binary :all: $(printf -- '-r %s ' "${locks[@]}")
"${pip[@]}" install -q --no-deps --no-build-isolation -e .
if [ "$mode" = "test" ]; then
  # Exactly the lock: packages left over from an older lock are removed.
  .venv/bin/python scripts/check_lock.py --prune requirements/dev.txt
fi
stamp_of "$mode" > ".venv/.locked-$mode"
