#!/usr/bin/env bash
# Installs what ProxyPlanes needs on a fresh Debian 12 machine (run as root), then restores NuGet packages.
# Called by demo.sh and test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "setup: run as root (the proxy programs kernel rules and the tests build network namespaces)" >&2
  exit 1
fi

# iptables (nft and legacy), nftables, iproute2 (ip netns), busybox (the sandbox's HTTP servers),
# conntrack, and prometheus (for promtool, which checks /metrics).
# The eBPF data plane (bpf/README.md): clang-14 compiles bpf/*.c during the build, with libbpf-dev's
# headers (bpf_helpers.h); the loader calls libbpf.so.1 (libbpf1, which libbpf-dev pulls in).
# The VM lane (vm/README.md), for IPVS, which this kernel lacks: Debian's stock kernel and its modules
# (linux-image-amd64: files under /boot and /lib/modules, nothing is booted on the host), qemu,
# cpio and xz-utils (to build the initramfs and unpack the kernel), and ipvsadm and ipset.
# The daemon's native AOT publish (test.sh, deploy/Dockerfile) links with gcc against zlib (gcc, zlib1g-dev).
packages=(iptables nftables iproute2 busybox conntrack prometheus clang-14 libbpf-dev
          linux-image-amd64 qemu-system-x86 cpio xz-utils ipvsadm ipset gcc zlib1g-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v dotnet >/dev/null; then
  echo "setup: the .NET 10 SDK is required (dotnet on PATH)" >&2
  exit 1
fi
dotnet restore ProxyPlanes.sln --verbosity quiet
