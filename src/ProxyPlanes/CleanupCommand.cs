using Microsoft.Extensions.Logging;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Ipvs;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Core.Metrics;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Iptables;

namespace ProxyPlanes;

/// <summary>`proxyplanes cleanup --mode=M`: removes everything mode M installed.</summary>
public static class CleanupCommand
{
    public static async Task<int> RunAsync(string mode, int verbosity, CancellationToken cancellationToken)
    {
        if (Modes.Problem(mode) is { } problem) throw new UsageException(problem);
        using var loggers = LoggerFactory.Create(b => Logging.Configure(b, verbosity));
        await CleanAsync(mode, loggers.CreateLogger("proxyplanes"), cancellationToken);
        return 0;
    }

    /// <summary>Removes a mode's state from this node's kernel (both IP families).</summary>
    public static async Task CleanAsync(string mode, ILogger logger, CancellationToken cancellationToken)
    {
        using var metrics = new ProxyMetrics();
        switch (mode)
        {
            case "iptables":
                // Rules may sit in either iptables flavour (a node may have switched): clean both.
                foreach (var variant in new[] { IptablesVariant.Nft, IptablesVariant.Legacy })
                {
                    var families = new List<(IpFamily, IIptablesApplier)>();
                    foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
                        if (await IptablesCommandApplier.IsAvailableAsync(family, variant, cancellationToken))
                            families.Add((family, new IptablesCommandApplier(variant, family)));
                    if (families.Count > 0) await new IptablesBackend(families, metrics, logger).CleanupAsync(cancellationToken);
                }
                break;
            case "nftables":
                await NftablesBackend.RemoveTablesAsync(new NftCommandApplier(), [IpFamily.IPv4, IpFamily.IPv6], logger, cancellationToken: cancellationToken);
                break;
            case "ipvs":
                // Works on a kernel without IPVS too (then only the helper rules and ipsets can be there).
                await (await IpvsBackend.CreateAsync(null, metrics, logger, cancellationToken)).CleanupAsync(cancellationToken);
                break;
        }
    }

    /// <summary>
    /// Starting in one mode removes what the other modes left (as kube-proxy does), so a node that
    /// switched modes does not run two sets of rules. Best effort: a failure is logged.
    /// </summary>
    public static async Task CleanOtherModesAsync(string mode, ILogger logger, CancellationToken cancellationToken)
    {
        foreach (var other in Modes.Built.Where(m => m != mode))
        {
            try
            {
                await CleanAsync(other, logger, cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Could not remove what --mode={Other} left: {Error}", other, e.Message);
            }
        }
    }
}
