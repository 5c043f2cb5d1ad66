#!/usr/bin/env bash
# Sourced by the other scripts: installs the system packages and the virtualenv the project needs.
# Usage: source scripts/bootstrap.sh [test]   ("test" adds redis-server, nginx, chromium and
# chromedriver, and the test extra)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

want=()
python3 -c 'import ensurepip, venv' 2>/dev/null || want+=(python3-venv)
if [ "${1:-}" = "test" ]; then
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

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
if [ "${1:-}" = "test" ]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
