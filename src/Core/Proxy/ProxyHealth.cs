using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// kube-proxy's health rule: healthy once the first sync has programmed the kernel, and for as
/// long as no queued change has waited longer than the health timeout (2 × --sync-period).
/// </summary>
public sealed class ProxyHealth(TimeProvider time, TimeSpan healthTimeout)
{
    private readonly object _lock = new();
    private DateTimeOffset? _lastUpdated;
    private DateTimeOffset? _oldestQueued;

    public TimeSpan HealthTimeout => healthTimeout;

    public void Queued()
    {
        lock (_lock) _oldestQueued ??= time.GetUtcNow();
    }

    /// <summary>A sync that started at <paramref name="syncStart"/> succeeded: changes queued before it are in the kernel.</summary>
    public void Updated(DateTimeOffset syncStart)
    {
        lock (_lock)
        {
            _lastUpdated = time.GetUtcNow();
            if (_oldestQueued <= syncStart) _oldestQueued = null;
        }
    }

    public HealthStatus Status()
    {
        lock (_lock)
        {
            var now = time.GetUtcNow();
            var healthy = _lastUpdated is not null && (_oldestQueued is null || now - _oldestQueued < healthTimeout);
            return new HealthStatus(healthy, _lastUpdated, now);
        }
    }
}

public readonly record struct HealthStatus(bool Healthy, DateTimeOffset? LastUpdated, DateTimeOffset CurrentTime);
