using Microsoft.Extensions.Logging;
using ProxyPlanes.Metrics;

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

    /// <summary>Removes a built mode's state from this node's kernel (both IP families).</summary>
    public static async Task CleanAsync(string mode, ILogger logger, CancellationToken cancellationToken, string? running = null)
    {
        using var metrics = new ProxyMetrics();
        await Modes.Require(mode).CleanupAsync(metrics, logger, running is null ? null : Modes.Require(running), cancellationToken);
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
                await CleanAsync(other, logger, cancellationToken, running: mode);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                logger.LogWarning("Could not remove what --mode={Other} left: {Error}", other, e.Message);
            }
        }
    }
}
