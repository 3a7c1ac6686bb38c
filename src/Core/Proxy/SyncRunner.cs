using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

public sealed record SyncRunnerOptions
{
    /// <summary>--min-sync-period: changes arriving faster than this are coalesced into one sync.</summary>
    public TimeSpan MinSyncPeriod { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>
    /// --sync-period: a sync runs at least this often. As in kube-proxy it is a partial sync (a
    /// no-op when nothing changed) that also checks the data plane's canary; it is full only when
    /// the canary is gone or something else asks for a full sync.
    /// </summary>
    public TimeSpan SyncPeriod { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A full resync runs at most this often when nothing else asks for one (kube-proxy: one hour).</summary>
    public TimeSpan FullSyncPeriod { get; init; } = TimeSpan.FromHours(1);

    /// <summary>
    /// Above this many endpoints there is no periodic full resync at all (kube-proxy 1.37's
    /// large-cluster rule): on such a cluster a full sync is expensive and the canary catches flushes.
    /// </summary>
    public int LargeClusterEndpoints { get; init; } = 1000;

    /// <summary>First retry delay after a failed sync; doubles per failure up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>Why a full sync runs; the label of <c>proxyplanes_sync_full_reason_total</c>.</summary>
public enum FullSyncReason
{
    /// <summary>The first sync after the proxy started.</summary>
    Start,
    /// <summary>The previous sync failed: the kernel may hold anything, so it is read and repaired.</summary>
    Failure,
    /// <summary>The data plane's canary was gone: the rules were flushed behind our back.</summary>
    Flush,
    /// <summary>A node-level setting changed (node IPs, zone, pod CIDRs, local-traffic detection).</summary>
    NodeChanged,
    /// <summary>The hourly resync (never above <see cref="SyncRunnerOptions.LargeClusterEndpoints"/>).</summary>
    Hourly,
}

public static class FullSyncReasons
{
    public static string Label(this FullSyncReason reason) => reason switch
    {
        FullSyncReason.Start => "start",
        FullSyncReason.Failure => "failure",
        FullSyncReason.Flush => "flush",
        FullSyncReason.NodeChanged => "node-changed",
        _ => "hourly",
    };
}

/// <summary>
/// What the runner asks of one sync: full (and why) or partial, and whether the sync period has
/// elapsed, in which case the data plane's canary is checked (its absence makes the sync full).
/// </summary>
public readonly record struct SyncDecision(FullSyncReason? FullReason, bool CheckCanary)
{
    public bool Full => FullReason is not null;

    public static SyncDecision Partial { get; } = new(null, false);
}

/// <summary>
/// Owns time for the control loop: coalesces bursts of changes, honours the minimum interval
/// between syncs, runs a sync at least every <see cref="SyncRunnerOptions.SyncPeriod"/> (partial, with
/// a canary check), retries a failed sync with exponential backoff, and decides when a sync must be
/// full: at start, after a failure, hourly on small clusters. The sync function returns whether it
/// ran full (it may upgrade a partial sync itself: a missing canary, a changed node).
/// </summary>
/// <remarks>
/// The periodic deadline counts from the end of the previous sync, so a full sync that outlasts
/// the period is followed by a (cheap) partial one, never by another full one; a change arriving
/// during any sync goes into the next sync as soon as the minimum interval allows.
/// </remarks>
public sealed class SyncRunner(Func<SyncDecision, CancellationToken, Task<bool>> sync, SyncRunnerOptions options, TimeProvider time, ILogger logger)
{
    private readonly object _lock = new();
    private readonly SemaphoreSlim _wake = new(0);
    private bool _pending;
    private FullSyncReason? _forcedFull = FullSyncReason.Start;
    private DateTimeOffset _lastStart = DateTimeOffset.MinValue;
    private DateTimeOffset? _lastEnd;
    /// <summary>When the hourly window started: the last full sync, or the last time the cluster was counted as large.</summary>
    private DateTimeOffset _lastFull = DateTimeOffset.MinValue;
    private DateTimeOffset? _retryAt;
    private int _failures;

    /// <summary>How many endpoints the cluster has (for the large-cluster rule); null means small.</summary>
    public Func<int>? EndpointCount { get; init; }

    /// <summary>Number of syncs that failed in a row (0 after a success).</summary>
    public int ConsecutiveFailures { get { lock (_lock) return _failures; } }

    /// <summary>Asks for a sync as soon as the minimum interval allows.</summary>
    public void Trigger()
    {
        lock (_lock) _pending = true;
        _wake.Release();
    }

    public async Task RunAsync(CancellationToken cancellationToken)
    {
        while (!cancellationToken.IsCancellationRequested)
        {
            DateTimeOffset due;
            lock (_lock) due = NextDue();
            // Decide "wait forever" from due itself: an overdue sync can give due - now of exactly
            // -1 ms, which equals Timeout.InfiniteTimeSpan and must not be read as "no deadline".
            var forever = due == DateTimeOffset.MaxValue;
            var wait = forever ? Timeout.InfiniteTimeSpan : due - time.GetUtcNow();
            if (forever || wait > TimeSpan.Zero)
            {
                using var waitCancellation = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
                var woken = _wake.WaitAsync(waitCancellation.Token);
                var timedOut = forever ? Task.Delay(Timeout.Infinite, waitCancellation.Token) : Task.Delay(wait, time, waitCancellation.Token);
                await Task.WhenAny(woken, timedOut).ConfigureAwait(false);
                waitCancellation.Cancel(); // a cancelled semaphore wait takes no count
                if (cancellationToken.IsCancellationRequested) return;
                continue; // woken or timed out: recompute what is due
            }
            await RunOnceAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private DateTimeOffset PeriodicDue => _lastEnd is { } end ? end + options.SyncPeriod : DateTimeOffset.MaxValue;

    private DateTimeOffset NextDue()
    {
        if (_retryAt is { } retry) return retry < PeriodicDue ? retry : PeriodicDue;
        var due = PeriodicDue;
        if (_pending)
        {
            var earliest = _lastStart == DateTimeOffset.MinValue ? DateTimeOffset.MinValue : _lastStart + options.MinSyncPeriod;
            if (earliest < due) due = earliest;
        }
        return due;
    }

    /// <summary>The full-sync reason the runner itself imposes now, if any.</summary>
    private FullSyncReason? FullReasonAt(DateTimeOffset now)
    {
        if (_forcedFull is { } forced) return forced;
        if (now - _lastFull < options.FullSyncPeriod) return null;
        // kube-proxy 1.37: never a periodic full resync on a large cluster. Counting walks every
        // service port, so a large cluster is counted again an hour later, not on every sync.
        if (EndpointCount is { } count && count() > options.LargeClusterEndpoints)
        {
            _lastFull = now;
            return null;
        }
        return FullSyncReason.Hourly;
    }

    private async Task RunOnceAsync(CancellationToken cancellationToken)
    {
        SyncDecision decision;
        var now = time.GetUtcNow();
        lock (_lock)
        {
            decision = new SyncDecision(FullReasonAt(now), CheckCanary: now >= PeriodicDue);
            _pending = false;
            _retryAt = null;
            _lastStart = now;
        }
        try
        {
            var ranFull = await sync(decision, cancellationToken).ConfigureAwait(false);
            lock (_lock)
            {
                _forcedFull = null;
                _failures = 0;
                if (ranFull) _lastFull = now;
                _lastEnd = time.GetUtcNow();
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            TimeSpan delay;
            int failures;
            lock (_lock)
            {
                _forcedFull = _forcedFull == FullSyncReason.Start ? FullSyncReason.Start : FullSyncReason.Failure;
                failures = ++_failures;
                var factor = Math.Pow(2, Math.Min(failures - 1, 16));
                delay = TimeSpan.FromTicks((long)Math.Min(options.RetryDelay.Ticks * factor, options.MaxRetryDelay.Ticks));
                var end = time.GetUtcNow();
                _retryAt = end + delay;
                _lastEnd = end;
            }
            logger.LogError("Sync failed (attempt {Failures}), retrying as a full sync in {Delay}s: {Error}", failures, delay.TotalSeconds, e.Message);
        }
    }
}
