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
            var backend = new IptablesBackend(new IptablesCommandApplier(variant, IpFamily.IPv4), metrics, logger);
            await backend.CleanupAsync(cancellationToken);
        }
        return 0;
    }
}
