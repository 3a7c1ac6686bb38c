#!/usr/bin/env bash
# Runs a command (or `dotnet test` of a built test assembly) inside the VM lane: Debian's stock
# kernel under qemu TCG, with the host's filesystem visible. See vm/README.md.
#   vm/run.sh -- 'modprobe ip_vs && ipvsadm -Ln'
#   vm/run.sh --timeout 1800 test tests/Kernel.Tests/bin/Debug/net10.0/ProxyPlanes.Kernel.Tests.dll --filter 'FullyQualifiedName~Ipvs'
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dotnet build "$root/src/VmLane" --verbosity quiet --nologo -clp:NoSummary >&2
exec dotnet "$root/src/VmLane/bin/Debug/net10.0/ProxyPlanes.VmLane.dll" "$@"
