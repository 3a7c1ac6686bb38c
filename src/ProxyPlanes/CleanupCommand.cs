using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes;

/// <summary>`proxyplanes cleanup --mode=M`: removes everything mode M installed.</summary>
public static class CleanupCommand
{
    public static async Task<int> RunAsync(string mode, CleanupScope scope, int verbosity, CancellationToken cancellationToken)
    {
        if (Modes.Problem(mode) is { } problem) throw new UsageException(problem);
        using var loggers = LoggerFactory.Create(b => Logging.Configure(b, verbosity));
        await CleanAsync(mode, scope, loggers.CreateLogger("proxyplanes"), cancellationToken);
        return 0;
    }

    /// <summary>Removes a built mode's state from this node's kernel (both IP families), except what <paramref name="scope"/> leaves alone.</summary>
    public static async Task CleanAsync(string mode, CleanupScope scope, ILogger logger, CancellationToken cancellationToken)
    {
        using var metrics = new ProxyMetrics();
        await Modes.Require(mode).CleanupAsync(metrics, logger, scope, cancellationToken);
    }

    /// <summary>
    /// Starting in one mode removes what the other modes left (as kube-proxy does), so a node that
    /// switched modes does not run two sets of rules. Best effort: a failure is logged.
    /// </summary>
    public static async Task CleanOtherModesAsync(string mode, EquatableArray<IpPrefix> ipvsExcludeCidrs, string? bpfFs, ILogger logger, CancellationToken cancellationToken)
    {
        var scope = new CleanupScope(Modes.Require(mode)) { IpvsExcludeCidrs = ipvsExcludeCidrs, BpfFs = bpfFs };
        foreach (var other in Modes.Built.Where(m => m != mode))
        {
            try
            {
                await CleanAsync(other, scope, logger, cancellationToken);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Could not remove what --mode={Other} left: {Error}", other, e.Message);
            }
        }
    }
}
