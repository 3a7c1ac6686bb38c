#!/usr/bin/env bash
# Runs every test: unit, golden-file, and kernel tests with real packets in network namespaces.
# Usage (root, on Debian 12): scripts/test.sh [extra dotnet test arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

# The daemon as it ships: one native AOT executable (src/ProxyPlanes publishes with PublishAot; docs/design.md).
# Every test that starts the daemon as a process (conformance, daemon, config, explain, end-to-end, the demo)
# runs this binary through PROXYPLANES_DAEMON_DIR; tests that drive the controller in-process, and the VM lane,
# run the JIT build. Intermediates go under artifacts/, so the Debug build's obj/ and bin/ are left alone.
dotnet publish src/ProxyPlanes -c Release -o artifacts/daemon --artifacts-path artifacts/daemon-build --nologo -v quiet
export PROXYPLANES_DAEMON_DIR="$PWD/artifacts/daemon"
# The benchmark's worker, published the same way (src/BenchWorker): the bench and soak tests measure in the native
# worker, as the benchmark's numbers do; BenchTests checks the wiring. Its own intermediates: the daemon's and the
# worker's publishes share none of their ILC output.
dotnet publish src/BenchWorker -c Release -o artifacts/bench-worker --artifacts-path artifacts/bench-worker-build --nologo -v quiet
export PROXYPLANES_BENCH_WORKER="$PWD/artifacts/bench-worker"

log=$(mktemp)
# Every VM lane run (src/VmLane) appends its wall time here, for the share reported below.
export PROXYPLANES_VM_TIME_LOG=$(mktemp)
trap 'rm -f "$log" "$PROXYPLANES_VM_TIME_LOG"' EXIT
status=0
started=$SECONDS
# --blame-hang-timeout turns a hung test into a named failure instead of a silent CI timeout; it is
# per test, and the IPVS conformance run in the VM lane alone takes 13-18 minutes under emulation on a
# busy 2-core machine (and over 40 when the machine is overloaded).
timeout 80m dotnet test ProxyPlanes.sln --no-restore --blame-hang-timeout 35m "$@" 2>&1 | tee "$log" || status=$?
elapsed=$((SECONDS - started))

# One summary line over all test assemblies. A test host that crashed or was killed by the hang
# timeout prints no "Failed!" line for the tests it did not finish: count each such run as aborted,
# and an aborted run fails the script even if every counted test passed.
awk '/(Passed|Failed)! +-/ {
       for (i = 1; i <= NF; i++) { gsub(",", "", $(i+1)); if ($i == "Failed:") f += $(i+1); if ($i == "Passed:") p += $(i+1); if ($i == "Skipped:") s += $(i+1) }
     }
     /Test Run Aborted|The active test run was aborted|Test host process crashed/ { a++ }
     END { printf "%d passed, %d failed, %d skipped, %d test runs aborted\n", p, f, s, a }' "$log"
# The VM lane (IPVS under qemu TCG) runs beside the other assemblies: its runs' summed wall time
# against the whole test run's says how much of the CI budget it holds.
awk -F'\t' -v total="$elapsed" '{ n++; t += $1; if ($1 > m) m = $1 }
     END { printf "VM lane: %d runs, %.0f s summed (longest %.0f s); the whole test run took %d s\n", n, t, m, total }' "$PROXYPLANES_VM_TIME_LOG"
if grep -qE 'Test Run Aborted|The active test run was aborted|Test host process crashed' "$log"; then
  echo "test: a test run was aborted (a crashed test host or a hang timeout): see 'aborted' above" >&2
  status=1
fi

leftover=$(ip netns list 2>/dev/null | grep -c '^pp[0-9a-f]\{5\}-' || true)
if [ "$leftover" -gt 0 ]; then
  echo "test: $leftover sandbox network namespaces were left behind" >&2
  status=1
fi
# The eBPF socket-hook tests make cgroup v2 directories named pp-ebpf-test-* and remove them.
# (find, not ls: ls fails when nothing matches, which pipefail and set -e would turn into exit 2.)
leftover=$(find /sys/fs/cgroup/unified /sys/fs/cgroup -maxdepth 1 -name 'pp-ebpf-test-*' 2>/dev/null | wc -l || true)
if [ "$leftover" -gt 0 ]; then
  echo "test: $leftover eBPF test cgroups were left behind" >&2
  status=1
fi
exit "$status"
