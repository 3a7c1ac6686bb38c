using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;

namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>
/// After a sync, deletes the conntrack entries it left stale (see <see cref="StaleConntrackPlanner"/>). Best effort:
/// a failed cleanup is logged and counted in <see cref="Failures"/>, never thrown, so it cannot fail the sync; the
/// stale flows then age out by the conntrack UDP timeout, as they would without cleanup.
/// </summary>
public sealed class ConntrackCleaner(IConntrack conntrack, ILogger logger)
{
    private long _failures;
    private long _deletions;

    /// <summary>Cleanups that failed (in whole or in part) since start: a counter for metrics.</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>Deletions handed to the kernel tool since start (including ones that matched nothing).</summary>
    public long Deletions => Interlocked.Read(ref _deletions);

    /// <summary>
    /// Plans the deletions from <paramref name="previous"/> (the state the kernel had) to <paramref name="current"/>
    /// (the state it has now) and applies them. Throws only <see cref="OperationCanceledException"/>, when
    /// <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public async Task CleanAsync(DesiredState previous, DesiredState current, CancellationToken cancellationToken)
    {
        IReadOnlyList<ConntrackDeletion> deletions;
        try
        {
            deletions = StaleConntrackPlanner.Plan(previous, current);
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _failures);
            logger.LogError(e, "Could not plan the conntrack cleanup");
            return;
        }
        if (deletions.Count == 0) return;

        if (logger.IsEnabled(LogLevel.Debug))
        {
            foreach (var deletion in deletions)
                logger.LogDebug("Deleting stale conntrack entries: {Deletion}", deletion);
        }
        Interlocked.Add(ref _deletions, deletions.Count);
        try
        {
            await conntrack.DeleteAsync(deletions, cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            throw;
        }
        catch (Exception e)
        {
            Interlocked.Increment(ref _failures);
            logger.LogWarning(e, "Stale conntrack cleanup failed ({Count} deletions planned); stale flows will time out instead", deletions.Count);
        }
    }
}
