#!/usr/bin/env bash
# Installs what bench/compare.py needs on top of the project's own bootstrap: Apache 2.4 with
# mod_auth_openidc (the system the gateway is measured against), wrk (the load generator), nginx
# and redis-server (the upstream and the session store), and uvloop in the project's virtualenv
# (for the bare aiohttp proxy). Kept apart from scripts/bootstrap.sh so the test script never
# pays for Apache. Usage: bench/bootstrap.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

want=()
{ command -v apache2 >/dev/null || [ -x /usr/sbin/apache2 ]; } || want+=(apache2)
[ -e /usr/lib/apache2/modules/mod_auth_openidc.so ] || want+=(libapache2-mod-auth-openidc)
command -v wrk >/dev/null || want+=(wrk)
{ command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || want+=(nginx)
command -v redis-server >/dev/null || want+=(redis-server)

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
if [ ${#want[@]} -gt 0 ]; then
  echo "Installing system packages: ${want[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${want[@]}" >/dev/null
fi
# The harness starts its own Apache and nginx from private configurations on free ports. A system
# service the packages may have started (on port 80) is not wanted; stop it with whatever init
# system this machine has, and never fail because there is none.
for service in apache2 nginx; do
  if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    $sudo systemctl disable --now "$service" >/dev/null 2>&1 || true
  elif command -v service >/dev/null; then
    $sudo service "$service" stop >/dev/null 2>&1 || true
  fi
done

# The harness reuses the test kit (tests/support), so it needs the test extra and the kit on the
# virtualenv's path, which scripts/bootstrap.sh in test mode provides.
if ! { [ -x .venv/bin/python ] && .venv/bin/python -c 'import gateway, pytest, trustme, support' 2>/dev/null; }; then
  ./scripts/bootstrap.sh test
fi
.venv/bin/python -c 'import uvloop' 2>/dev/null || .venv/bin/python -m pip install -q uvloop
echo "bench: ready; run .venv/bin/python bench/compare.py"
