using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// kube-proxy's health rule: healthy once the first sync has programmed the kernel, and for as
/// long as no queued change has waited longer than the health timeout (2 × --sync-period). Apart
/// from that, whether this node should take load-balancer traffic at all: not while it is being
/// deleted or the cluster autoscaler has tainted it for deletion (kube-proxy's
/// KubeProxyDrainingTerminatingNodes): /healthz says so, /livez does not.
/// </summary>
public sealed class ProxyHealth(TimeProvider time, TimeSpan healthTimeout)
{
    private readonly object _lock = new();
    private DateTimeOffset? _lastUpdated;
    private DateTimeOffset? _oldestQueued;
    private bool _nodeEligible = true;

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

    /// <summary>This node's own object changed: eligible unless it is being deleted or tainted for deletion.</summary>
    public void NodeEligible(bool eligible)
    {
        lock (_lock) _nodeEligible = eligible;
    }

    public HealthStatus Status()
    {
        lock (_lock)
        {
            var now = time.GetUtcNow();
            var healthy = _lastUpdated is not null && (_oldestQueued is null || now - _oldestQueued < healthTimeout);
            return new HealthStatus(healthy, _lastUpdated, now, _nodeEligible);
        }
    }
}

/// <param name="Healthy">the rules are programmed and no change has waited too long (/livez).</param>
/// <param name="NodeEligible">this node is not being deleted nor tainted for deletion (/healthz also needs it).</param>
public readonly record struct HealthStatus(bool Healthy, DateTimeOffset? LastUpdated, DateTimeOffset CurrentTime, bool NodeEligible = true)
{
    /// <summary>What /healthz answers: load balancers should send traffic to this node.</summary>
    public bool HealthyForTraffic => Healthy && NodeEligible;
}
