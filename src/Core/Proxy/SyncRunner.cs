using Microsoft.Extensions.Logging;

namespace ProxyPlanes.Core.Proxy;

public sealed record SyncRunnerOptions
{
    /// <summary>--min-sync-period: changes arriving faster than this are coalesced into one sync.</summary>
    public TimeSpan MinSyncPeriod { get; init; } = TimeSpan.FromSeconds(1);

    /// <summary>--sync-period: a full sync runs at least this often, repairing anything changed behind our back.</summary>
    public TimeSpan SyncPeriod { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>First retry delay after a failed sync; doubles per failure up to <see cref="MaxRetryDelay"/>.</summary>
    public TimeSpan RetryDelay { get; init; } = TimeSpan.FromSeconds(1);

    public TimeSpan MaxRetryDelay { get; init; } = TimeSpan.FromSeconds(30);
}

/// <summary>
/// Owns time for the control loop: coalesces bursts of changes, honours the minimum interval
/// between syncs, runs a periodic full sync, and retries a failed sync with exponential backoff
/// (the retry, and the sync after any failure, are full syncs).
/// </summary>
public sealed class SyncRunner(Func<bool, CancellationToken, Task> sync, SyncRunnerOptions options, TimeProvider time, ILogger logger)
{
    private readonly object _lock = new();
    private readonly SemaphoreSlim _wake = new(0);
    private bool _pending;
    private bool _needFull = true;
    private DateTimeOffset _lastRun = DateTimeOffset.MinValue;
    private DateTimeOffset _nextFull = DateTimeOffset.MaxValue;
    private DateTimeOffset? _retryAt;
    private int _failures;

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

    private DateTimeOffset NextDue()
    {
        var due = _nextFull;
        if (_retryAt is { } retry) return retry < due ? retry : due;
        if (_pending)
        {
            var earliest = _lastRun == DateTimeOffset.MinValue ? DateTimeOffset.MinValue : _lastRun + options.MinSyncPeriod;
            if (earliest < due) due = earliest;
        }
        return due;
    }

    private async Task RunOnceAsync(CancellationToken cancellationToken)
    {
        bool full;
        var now = time.GetUtcNow();
        lock (_lock)
        {
            full = _needFull || now >= _nextFull;
            _pending = false;
            _retryAt = null;
            _lastRun = now;
        }
        try
        {
            await sync(full, cancellationToken).ConfigureAwait(false);
            lock (_lock)
            {
                _needFull = false;
                _failures = 0;
                if (full) _nextFull = now + options.SyncPeriod;
            }
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception e)
        {
            TimeSpan delay;
            lock (_lock)
            {
                _needFull = true;
                _failures++;
                var factor = Math.Pow(2, Math.Min(_failures - 1, 16));
                delay = TimeSpan.FromTicks((long)Math.Min(options.RetryDelay.Ticks * factor, options.MaxRetryDelay.Ticks));
                _retryAt = time.GetUtcNow() + delay;
            }
            logger.LogError("Sync failed (attempt {Failures}), retrying as a full sync in {Delay}s: {Error}", _failures, delay.TotalSeconds, e.Message);
        }
    }
}
