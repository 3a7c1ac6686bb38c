using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>
/// A clock the test moves by hand. Timers fire (on the calling thread) when <see cref="Advance"/>
/// passes their due time, so schedules can be checked to the tick without sleeping.
/// </summary>
internal sealed class ManualTimeProvider(DateTimeOffset start) : TimeProvider
{
    private readonly object _lock = new();
    private readonly List<ManualTimer> _timers = [];
    private DateTimeOffset _now = start;

    public override DateTimeOffset GetUtcNow()
    {
        lock (_lock) return _now;
    }

    public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
    {
        var timer = new ManualTimer(this, callback, state);
        timer.Change(dueTime, period);
        return timer;
    }

    /// <summary>Due times of the timers now armed.</summary>
    public IReadOnlyList<DateTimeOffset> ArmedTimers()
    {
        lock (_lock) return [.. _timers.Where(t => t.Due is not null).Select(t => t.Due!.Value)];
    }

    /// <summary>Waits (real time, bounded) until a timer is armed for exactly <paramref name="due"/>.</summary>
    public async Task WaitForTimerAsync(DateTimeOffset due, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!ArmedTimers().Contains(due))
        {
            if (DateTime.UtcNow > deadline)
                throw new TimeoutException($"no timer armed for {due:O}; armed: {string.Join(", ", ArmedTimers().Select(d => d.ToString("O")))}");
            await Task.Delay(5);
        }
    }

    public void Advance(TimeSpan by)
    {
        List<ManualTimer> due;
        lock (_lock)
        {
            _now += by;
            due = [.. _timers.Where(t => t.Due <= _now)];
            foreach (var timer in due)
            {
                timer.Due = timer.Period is { } p ? _now + p : null;
            }
        }
        foreach (var timer in due) timer.Fire();
    }

    private sealed class ManualTimer(ManualTimeProvider owner, TimerCallback callback, object? state) : ITimer
    {
        public DateTimeOffset? Due { get; set; }
        public TimeSpan? Period { get; private set; }

        public bool Change(TimeSpan dueTime, TimeSpan period)
        {
            lock (owner._lock)
            {
                Due = dueTime == Timeout.InfiniteTimeSpan ? null : owner._now + dueTime;
                Period = period == Timeout.InfiniteTimeSpan || period == TimeSpan.Zero ? null : period;
                if (!owner._timers.Contains(this)) owner._timers.Add(this);
            }
            return true;
        }

        public void Fire() => callback(state);

        public void Dispose()
        {
            lock (owner._lock) owner._timers.Remove(this);
        }

        public ValueTask DisposeAsync()
        {
            Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
