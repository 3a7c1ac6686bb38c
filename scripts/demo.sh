#!/usr/bin/env bash
# Runs the demo: a sandbox of network namespaces, the real proxy, real requests.
# Usage (root, on Debian 12): scripts/demo.sh [--mode=iptables]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
dotnet build src/ProxyPlanes --no-restore --verbosity quiet -o artifacts/proxyplanes
exec artifacts/proxyplanes/proxyplanes demo "$@"
