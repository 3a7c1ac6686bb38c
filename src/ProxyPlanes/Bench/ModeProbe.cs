using System.Diagnostics;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Util;
using ProxyPlanes.Iptables;

namespace ProxyPlanes.Bench;

/// <summary>What the benchmark needs from each mode beyond the shared path: kernel object counts and the floor.</summary>
public interface IModeProbe
{
    /// <summary>Rules, chains, map elements, virtual servers: whatever the mode puts in the kernel.</summary>
    Task<Dictionary<string, long>> CountKernelObjectsAsync(IProxyBackend backend, CancellationToken cancellationToken);

    /// <summary>
    /// Time for the kernel tool alone to load what the cold sync just sent (null when not measurable).
    /// Called right after the cold sync; afterwards the kernel holds the same state again.
    /// </summary>
    Task<TimeSpan?> FloorAsync(IProxyBackend backend, CancellationToken cancellationToken);
}

public static class ModeProbes
{
    public static IModeProbe For(string mode) => mode switch
    {
        "iptables" => new IptablesProbe(),
        "nftables" => new NftablesProbe(),
        _ => throw new ArgumentException($"no benchmark probe for mode {mode}"),
    };

    private sealed class IptablesProbe : IModeProbe
    {
        public async Task<Dictionary<string, long>> CountKernelObjectsAsync(IProxyBackend backend, CancellationToken cancellationToken)
        {
            var counts = new Dictionary<string, long>();
            foreach (var table in new[] { "nat", "filter" })
            {
                var save = (await ExternalCommand.RunCheckedAsync(Tool(backend, "save"), ["-t", table], null, cancellationToken)).StandardOutput.Split('\n');
                counts[$"{table} rules"] = save.Count(l => l.StartsWith("-A ", StringComparison.Ordinal));
                counts[$"{table} chains"] = save.Count(l => l.StartsWith(':'));
            }
            return counts;
        }

        public async Task<TimeSpan?> FloorAsync(IProxyBackend backend, CancellationToken cancellationToken)
        {
            if (backend is not IptablesBackend iptables || iptables.LastPlan(IpFamily.IPv4) is not { } plan) return null;
            // The cold sync's own script loaded by the tool alone, from the same empty start: the
            // proxy's chains removed first, so the load is the same work minus the proxy.
            await backend.CleanupAsync(cancellationToken);
            var stopwatch = Stopwatch.StartNew();
            await ExternalCommand.RunCheckedAsync(Tool(backend, "restore"), ["-w", "5", "--noflush"], plan.Script, cancellationToken);
            return stopwatch.Elapsed;
        }

        private static string Tool(IProxyBackend backend, string suffix) =>
            $"iptables-{(((IptablesBackend)backend).Variant == IptablesVariant.Legacy ? "legacy" : "nft")}-{suffix}";
    }

    private sealed class NftablesProbe : IModeProbe
    {
        public Task<Dictionary<string, long>> CountKernelObjectsAsync(IProxyBackend backend, CancellationToken cancellationToken)
        {
            var counts = ((NftablesBackend)backend).Counts;
            return Task.FromResult(new Dictionary<string, long>
            {
                ["chains"] = counts.Chains, ["rules"] = counts.Rules, ["sets and maps"] = counts.Sets, ["map elements"] = counts.Elements,
            });
        }

        public async Task<TimeSpan?> FloorAsync(IProxyBackend backend, CancellationToken cancellationToken)
        {
            var nftables = (NftablesBackend)backend;
            if (nftables.LastPlan(IpFamily.IPv4) is not { Full: true } plan) return null;
            // The cold transaction was made for an empty table: empty it again, then time nft alone.
            await ExternalCommand.RunCheckedAsync("nft", ["delete", "table", "ip", nftables.Table], null, cancellationToken);
            var stopwatch = Stopwatch.StartNew();
            await ExternalCommand.RunCheckedAsync("nft", ["-f", "-"], plan.Transaction.ToString(), cancellationToken);
            return stopwatch.Elapsed;
        }
    }
}
