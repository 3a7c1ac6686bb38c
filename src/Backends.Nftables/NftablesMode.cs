using System.Diagnostics;
using System.Runtime;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>--mode=nftables, as the daemon, cleanup, the demo and the benchmark see it.</summary>
public sealed partial class NftablesMode : IProxyMode
{
    public static NftablesMode Instance { get; } = new();

    private NftablesMode()
    {
    }

    public string Name => "nftables";

    /// <summary>Every kernel the proxy runs on has nf_tables; a missing nft is reported by the first sync.</summary>
    public Task<string?> KernelProblemAsync(CancellationToken cancellationToken) => Task.FromResult<string?>(null);

    public async Task<ProxyModeBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken)
    {
        var nft = new NftCommandApplier();
        var families = new List<IpFamily> { IpFamily.IPv4 };
        if (await nft.IsAvailableAsync(IpFamily.IPv6, cancellationToken)) families.Add(IpFamily.IPv6);
        // Every transaction goes over netlink as one batch unless PROXYPLANES_NFT_APPLIER=nft (nft -f for rule text the encoder does not know).
        var useNetlink = !string.Equals(Environment.GetEnvironmentVariable(NftNetlinkApplier.ApplierVariable), "nft", StringComparison.OrdinalIgnoreCase);
        INftablesApplier applier = useNetlink ? new NftNetlinkApplier(nft, logger) : nft;
        logger.LogInformation("Using nftables tables {Families} proxyplanes ({Applier})", string.Join(" and ", families.Select(f => f == IpFamily.IPv4 ? "ip" : "ip6")),
            useNetlink ? "transactions over netlink; nft for listings and as the fallback" : "every transaction through nft");
        var backend = new NftablesBackend(families, applier, metrics, logger);
        return new ProxyModeBackend(backend, new Probe(backend, applier));
    }

    public IKernelExplainer Explainer { get; } = new NftablesExplainer();

    /// <summary>Our own tables only: no other mode uses them, so what runs beside does not matter.</summary>
    public Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CleanupScope scope, CancellationToken cancellationToken) =>
        NftablesBackend.RemoveTablesAsync(new NftCommandApplier(), [IpFamily.IPv4, IpFamily.IPv6], logger, cancellationToken: cancellationToken);

    /// <summary>Counts what the last transactions left in the tables; the floor is nft loading the cold transaction.</summary>
    private sealed class Probe(NftablesBackend backend, INftablesApplier applier) : IKernelProbe
    {
        public Task<IReadOnlyDictionary<string, long>> CountKernelObjectsAsync(CancellationToken cancellationToken)
        {
            var counts = backend.Counts;
            return Task.FromResult<IReadOnlyDictionary<string, long>>(new Dictionary<string, long>
            {
                ["chains"] = counts.Chains, ["rules"] = counts.Rules, ["sets and maps"] = counts.Sets, ["map elements"] = counts.Elements,
            });
        }

        public async Task<TimeSpan?> FloorAsync(CancellationToken cancellationToken)
        {
            // The cold transaction (planned again: the backend does not keep it) was made for an empty table:
            // its script goes to a file, the table is emptied again, then nft alone is timed loading the file.
            var script = Path.Combine(Path.GetTempPath(), $"proxyplanes-floor-{Environment.ProcessId}.nft");
            try
            {
                if (!await WriteLastFullSyncAsync(script, cancellationToken)) return null;
                // The transaction and the work of planning it again are the benchmark's, not the proxy's: given back
                // now, as after a full sync, instead of lying in the heap under the next full sync (at 50,000 × 5 the
                // heap reached 828 MiB, 249 of them live, before the resync's plan: the run's peak RSS).
                GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
                GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                await ExternalCommand.RunCheckedAsync("nft", ["delete", "table", "ip", backend.Table], null, cancellationToken);
                var stopwatch = Stopwatch.StartNew();
                await ExternalCommand.RunCheckedAsync("nft", ["-f", script], null, cancellationToken);
                return stopwatch.Elapsed;
            }
            finally
            {
                File.Delete(script);
            }
        }

        /// <summary>The last full sync's transaction, planned again and written as nft's script; false before the first full sync.</summary>
        private async Task<bool> WriteLastFullSyncAsync(string path, CancellationToken cancellationToken)
        {
            if (backend.PlanLastFullSync(IpFamily.IPv4, NftKernelState.Empty) is not { } transaction) return false;
            await using var writer = new StreamWriter(path);
            await transaction.WriteToAsync(writer, cancellationToken);
            return true;
        }

        /// <summary>
        /// The mode's applier (a netlink batch, or <c>nft -f</c> under PROXYPLANES_NFT_APPLIER=nft) adding one element
        /// to a scratch set in the proxy's table, then deleting it: a transaction with no verdict, so no loop check.
        /// </summary>
        public async Task<IReadOnlyList<TimeSpan>?> ChangeFloorAsync(CancellationToken cancellationToken)
        {
            var set = new NftSet("proxyplanes-floor") { Type = new EquatableArray<string>(["ipv4_addr"]) };
            var element = new NftElement(set.Name, "192.0.2.1") { Types = NftElementTypes.Of(set) };
            NftTransaction Transaction() => new(IpFamily.IPv4, backend.Table);
            await applier.ApplyAsync(Transaction().Add(set), cancellationToken);
            try
            {
                var add = Stopwatch.StartNew();
                await applier.ApplyAsync(Transaction().Add(element), cancellationToken);
                add.Stop();
                var delete = Stopwatch.StartNew();
                await applier.ApplyAsync(Transaction().Delete(element), cancellationToken);
                delete.Stop();
                return [add.Elapsed, delete.Elapsed];
            }
            finally
            {
                await applier.ApplyAsync(Transaction().Delete(set), CancellationToken.None);
            }
        }

        /// <summary>The <c>dnat to</c> targets of the IPv4 table, as <c>nft</c> lists them.</summary>
        public async Task<IReadOnlySet<string>> EndpointsInKernelAsync(CancellationToken cancellationToken)
        {
            var listing = (await ExternalCommand.RunCheckedAsync("nft", ["list", "table", "ip", backend.Table], null, cancellationToken)).StandardOutput;
            // Endpoints are elements of the endpoint-slots maps (`LOW-HIGH : 10.244.1.2 . 8080`); pools
            // with ClientIP affinity still dnat in a rule per endpoint.
            var inMaps = SlotTarget().Matches(listing).Select(m => $"{m.Groups[1].Value}:{m.Groups[2].Value}");
            return DnatTarget().Matches(listing).Select(m => m.Groups[1].Value).Concat(inMaps).ToHashSet();
        }
    }

    [GeneratedRegex(@"\bdnat (?:ip )?to (\d[\d.]*:\d+)")]
    private static partial Regex DnatTarget();

    [GeneratedRegex(@":\s*(\d{1,3}(?:\.\d{1,3}){3}) \. (\d+)\b")]
    private static partial Regex SlotTarget();
}
