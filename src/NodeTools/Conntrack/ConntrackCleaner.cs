using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;

namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>
/// After a sync, deletes the conntrack entries it left stale (see <see cref="StaleConntrackPlanner"/>). Best effort:
/// a failed cleanup is logged and counted in <see cref="Failures"/>, never thrown, so it cannot fail the sync; the
/// stale flows then age out by the conntrack UDP timeout, as they would without cleanup.
/// </summary>
/// <param name="reconciled">
/// Called once per IP family a cleanup worked on, as kube-proxy's conntrack reconciler reports per family: the
/// family, how long its deletions took, and how many flows the kernel deleted (0 when the tool failed).
/// </param>
public sealed class ConntrackCleaner(IConntrack conntrack, ILogger logger, Action<IpFamily, TimeSpan, long>? reconciled = null)
{
    private long _failures;
    private long _deletions;
    private long _flowsDeleted;

    /// <summary>Cleanups that failed (in whole or in part) since start: a counter for metrics.</summary>
    public long Failures => Interlocked.Read(ref _failures);

    /// <summary>Deletions handed to the kernel tool since start (including ones that matched nothing).</summary>
    public long Deletions => Interlocked.Read(ref _deletions);

    /// <summary>Flows the kernel deleted since start, as the tool reported them.</summary>
    public long FlowsDeleted => Interlocked.Read(ref _flowsDeleted);

    /// <summary>
    /// Plans the deletions from <paramref name="previous"/> (the state the kernel had) to <paramref name="current"/>
    /// (the state it has now) and applies them. Throws only <see cref="OperationCanceledException"/>, when
    /// <paramref name="cancellationToken"/> is cancelled.
    /// </summary>
    public Task CleanAsync(DesiredState previous, DesiredState current, CancellationToken cancellationToken) =>
        CleanAsync(previous, current, null, cancellationToken);

    /// <summary>
    /// As <see cref="CleanAsync(DesiredState, DesiredState, CancellationToken)"/>; when <paramref name="changed"/> is
    /// given, every service port outside it is the same in both states, and only its ports are planned.
    /// </summary>
    public async Task CleanAsync(DesiredState previous, DesiredState current, IReadOnlySet<ServicePortName>? changed, CancellationToken cancellationToken)
    {
        IReadOnlyList<ConntrackDeletion> deletions;
        try
        {
            deletions = changed is null ? StaleConntrackPlanner.Plan(previous, current) : StaleConntrackPlanner.Plan(previous, current, changed);
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
        foreach (var family in deletions.GroupBy(d => d.Family).OrderBy(g => g.Key))
        {
            var started = Stopwatch.GetTimestamp();
            long deleted = 0;
            try
            {
                deleted = await conntrack.DeleteAsync([.. family], cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
            catch (Exception e)
            {
                Interlocked.Increment(ref _failures);
                logger.LogWarning(e, "Stale {Family} conntrack cleanup failed ({Count} deletions planned); stale flows will time out instead",
                    family.Key, family.Count());
            }
            Interlocked.Add(ref _flowsDeleted, deleted);
            reconciled?.Invoke(family.Key, Stopwatch.GetElapsedTime(started), deleted);
        }
    }
}
