using Microsoft.Extensions.Logging;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Core.Metrics;
using ProxyPlanes.Core.Proxy;

namespace ProxyPlanes;

/// <summary>`proxyplanes cleanup --mode=M`: removes everything mode M installed.</summary>
public static class CleanupCommand
{
    public static async Task<int> RunAsync(string mode, int verbosity, CancellationToken cancellationToken)
    {
        if (Modes.Problem(mode) is { } problem) throw new UsageException(problem);
        using var loggers = LoggerFactory.Create(b => Logging.Configure(b, verbosity));
        var logger = loggers.CreateLogger("proxyplanes");
        using var metrics = new ProxyMetrics();
        // Rules may sit in either iptables flavour (a node may have switched): clean both.
        foreach (var variant in new[] { IptablesVariant.Nft, IptablesVariant.Legacy })
        {
            var families = new List<(IpFamily, IIptablesApplier)>();
            foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
                if (await IptablesCommandApplier.IsAvailableAsync(family, variant, cancellationToken))
                    families.Add((family, new IptablesCommandApplier(variant, family)));
            if (families.Count > 0) await new IptablesBackend(families, metrics, logger).CleanupAsync(cancellationToken);
        }
        return 0;
    }
}
