#!/usr/bin/env bash
# Runs the demo: development identity provider + sample app + gateway, all on loopback.
set -euo pipefail
source "$(dirname "$0")/bootstrap.sh"
exec .venv/bin/msal-gateway demo "$@"
