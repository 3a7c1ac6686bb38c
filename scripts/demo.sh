#!/usr/bin/env bash
# Runs the demo: a sandbox of network namespaces, the real proxy, real requests.
# Usage (root, on Debian 12): scripts/demo.sh [--mode=iptables]
# The demo lives in the lab (proxyplanes-lab, src/Lab); it runs the daemon (proxyplanes), which the
# build puts in the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
dotnet build src/Lab --no-restore --verbosity quiet -o artifacts/lab
exec artifacts/lab/proxyplanes-lab demo "$@"
