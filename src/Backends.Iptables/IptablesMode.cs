using System.Diagnostics;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>--mode=iptables, as the daemon, cleanup, the demo and the benchmark see it.</summary>
public sealed partial class IptablesMode : IProxyMode
{
    public static IptablesMode Instance { get; } = new();

    private IptablesMode()
    {
    }

    public string Name => "iptables";

    /// <summary>Every kernel the proxy runs on has netfilter; a missing tool is reported by the first sync.</summary>
    public Task<string?> KernelProblemAsync(CancellationToken cancellationToken) => Task.FromResult<string?>(null);

    public async Task<ProxyModeBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken)
    {
        var variant = options.IptablesVariant switch
        {
            "nft" => IptablesVariant.Nft,
            "legacy" => IptablesVariant.Legacy,
            _ => await IptablesCommandApplier.DetectAsync(IpFamily.IPv4, cancellationToken),
        };
        var families = new List<(IpFamily, IIptablesApplier)> { (IpFamily.IPv4, new IptablesCommandApplier(variant, IpFamily.IPv4)) };
        // Dual-stack where the node can: IPv6 services get ip6tables rules.
        if (await IptablesCommandApplier.IsAvailableAsync(IpFamily.IPv6, variant, cancellationToken))
            families.Add((IpFamily.IPv6, new IptablesCommandApplier(variant, IpFamily.IPv6)));
        else
            logger.LogWarning("ip6tables is not usable on this node: IPv6 services are not proxied");
        logger.LogInformation("Using iptables-{Variant}{How} for {Families}", variant.ToString().ToLowerInvariant(),
            options.IptablesVariant == "auto" ? " (detected)" : "", string.Join(" and ", families.Select(f => f.Item1)));
        var backend = new IptablesBackend(families, metrics, logger);
        return new ProxyModeBackend(backend, new Probe(backend));
    }

    public bool OwnsIptablesChain(string table, string chain) => IptablesBackend.Owns(table, chain);

    public IKernelExplainer Explainer { get; } = new IptablesExplainer();

    public async Task CleanupAsync(ProxyMetrics metrics, ILogger logger, CleanupScope scope, CancellationToken cancellationToken)
    {
        // Rules may sit in either iptables flavour (a node may have switched): clean both.
        foreach (var variant in new[] { IptablesVariant.Nft, IptablesVariant.Legacy })
        {
            var families = new List<(IpFamily, IIptablesApplier)>();
            foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
                if (await IptablesCommandApplier.IsAvailableAsync(family, variant, cancellationToken))
                    families.Add((family, new IptablesCommandApplier(variant, family)));
            if (families.Count > 0) await new IptablesBackend(families, metrics, logger).CleanupAsync(cancellationToken, scope.Running is null ? null : scope.Running.OwnsIptablesChain);
        }
    }

    /// <summary>Counts rules and chains with iptables-save; the floor is iptables-restore loading the cold sync's script.</summary>
    private sealed class Probe(IptablesBackend backend) : IKernelProbe
    {
        public async Task<IReadOnlyDictionary<string, long>> CountKernelObjectsAsync(CancellationToken cancellationToken)
        {
            var counts = new Dictionary<string, long>();
            foreach (var table in new[] { "nat", "filter" })
            {
                // Counted as the tool prints the table, never held whole: the count runs in the measured process.
                long rules = 0, chains = 0;
                await new IptablesCommandApplier(backend.Variant, IpFamily.IPv4).SaveAsync(table, line =>
                {
                    if (line.StartsWith("-A ", StringComparison.Ordinal)) rules++;
                    else if (line.StartsWith(':')) chains++;
                }, cancellationToken);
                counts[$"{table} rules"] = rules;
                counts[$"{table} chains"] = chains;
            }
            return counts;
        }

        public async Task<TimeSpan?> FloorAsync(CancellationToken cancellationToken)
        {
            if (backend.LastPlan(IpFamily.IPv4) is not { } plan) return null;
            // The cold sync's own script loaded by the tool alone, from the same empty start: the
            // proxy's chains removed first, so the load is the same work minus the proxy.
            await backend.CleanupAsync(cancellationToken);
            var stopwatch = Stopwatch.StartNew();
            await ExternalCommand.RunCheckedWithInputAsync(Tool("restore"), ["-w", "5", "--noflush"], plan.Script.WriteToAsync, cancellationToken);
            return stopwatch.Elapsed;
        }

        /// <summary>
        /// <c>iptables-restore --noflush</c> appending one rule to a scratch nat chain, then deleting it: what any
        /// partial sync pays for the tool reading the table before its commit.
        /// </summary>
        public async Task<IReadOnlyList<TimeSpan>?> ChangeFloorAsync(CancellationToken cancellationToken)
        {
            const string chain = "PROXYPLANES-FLOOR";
            var restore = Tool("restore");
            Task Restore(string script, CancellationToken token) => ExternalCommand.RunCheckedAsync(restore, ["-w", "5", "--noflush"], script, token);
            await Restore($"*nat\n:{chain} - [0:0]\nCOMMIT\n", cancellationToken);
            try
            {
                var add = Stopwatch.StartNew();
                await Restore($"*nat\n-A {chain} -j RETURN\nCOMMIT\n", cancellationToken);
                add.Stop();
                var delete = Stopwatch.StartNew();
                await Restore($"*nat\n-D {chain} -j RETURN\nCOMMIT\n", cancellationToken);
                delete.Stop();
                return [add.Elapsed, delete.Elapsed];
            }
            finally
            {
                await Restore($"*nat\n-X {chain}\nCOMMIT\n", CancellationToken.None);
            }
        }

        /// <summary>The <c>DNAT --to-destination</c> targets of the IPv4 nat table, as <c>iptables-save</c> prints them.</summary>
        public async Task<IReadOnlySet<string>> EndpointsInKernelAsync(CancellationToken cancellationToken)
        {
            var save = (await ExternalCommand.RunCheckedAsync(Tool("save"), ["-t", "nat"], null, cancellationToken)).StandardOutput;
            return DnatTarget().Matches(save).Select(m => m.Groups[1].Value).ToHashSet();
        }

        private string Tool(string suffix) => $"iptables-{(backend.Variant == IptablesVariant.Legacy ? "legacy" : "nft")}-{suffix}";
    }

    [GeneratedRegex(@"--to-destination (\S+)")]
    private static partial Regex DnatTarget();
}
