using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// kube-proxy's health rule, kept per IP family as kube-proxy keeps it per proxier
/// (pkg/proxy/healthcheck/proxy_health.go): a family is healthy once a sync has programmed it, and
/// for as long as no change queued for it has waited longer than the health timeout
/// (2 × --sync-period); the proxy is healthy when every family the backend serves is. Apart from
/// that, whether this node should take load-balancer traffic at all: not while it is being deleted
/// or the cluster autoscaler has tainted it for deletion (kube-proxy's
/// KubeProxyDrainingTerminatingNodes): /healthz says so, /livez does not.
/// </summary>
/// <remarks>
/// One difference from kube-proxy, kept on purpose: kube-proxy counts a family healthy from the
/// moment its sync loop starts; here a family is unhealthy until its rules are in the kernel, so
/// a readiness probe never passes before the first sync.
/// </remarks>
public sealed class ProxyHealth
{
    private readonly object _lock = new();
    private readonly TimeProvider _time;
    private readonly FamilyTimes[] _families;
    private bool _nodeEligible = true;

    /// <param name="families">the families the backend serves (<see cref="IProxyBackend.Families"/>); others are ignored.</param>
    public ProxyHealth(TimeProvider time, TimeSpan healthTimeout, IEnumerable<IpFamily> families)
    {
        _time = time;
        HealthTimeout = healthTimeout;
        _families = families.Distinct().Order().Select(f => new FamilyTimes(f)).ToArray();
        if (_families.Length == 0) throw new ArgumentException("at least one IP family is needed", nameof(families));
    }

    public TimeSpan HealthTimeout { get; }

    /// <summary>The families whose health counts.</summary>
    public IReadOnlyList<IpFamily> Families => _families.Select(f => f.Family).ToArray();

    /// <summary>A change arrived that every family's rules must take (kube-proxy's QueuedUpdate, for each proxier).</summary>
    public void Queued()
    {
        foreach (var family in _families) Queued(family.Family);
    }

    /// <summary>A change arrived that <paramref name="family"/>'s rules must take; the oldest waiting one counts.</summary>
    public void Queued(IpFamily family)
    {
        lock (_lock)
            if (Find(family) is { } times) times.OldestQueued ??= _time.GetUtcNow();
    }

    /// <summary>A sync that started at <paramref name="syncStart"/> programmed every family.</summary>
    public void Updated(DateTimeOffset syncStart)
    {
        foreach (var family in _families) Updated(family.Family, syncStart);
    }

    /// <summary>
    /// A sync that started at <paramref name="syncStart"/> programmed <paramref name="family"/>: the
    /// changes queued before it are in the kernel (kube-proxy's Updated(ipFamily)).
    /// </summary>
    public void Updated(IpFamily family, DateTimeOffset syncStart)
    {
        lock (_lock)
        {
            if (Find(family) is not { } times) return;
            times.LastUpdated = _time.GetUtcNow();
            if (times.OldestQueued <= syncStart) times.OldestQueued = null;
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
            var now = _time.GetUtcNow();
            var families = _families.Select(f => new FamilyHealth(f.Family, f.LastUpdated,
                f.LastUpdated is not null && (f.OldestQueued is null || now - f.OldestQueued < HealthTimeout))).ToArray();
            return new HealthStatus(families.All(f => f.Healthy), families.Max(f => f.LastUpdated), now, _nodeEligible) { Families = families };
        }
    }

    private FamilyTimes? Find(IpFamily family) => Array.Find(_families, f => f.Family == family);

    private sealed class FamilyTimes(IpFamily family)
    {
        public IpFamily Family => family;
        public DateTimeOffset? LastUpdated { get; set; }
        public DateTimeOffset? OldestQueued { get; set; }
    }
}

/// <param name="Healthy">every family's rules are programmed and no change has waited too long for one (/livez).</param>
/// <param name="LastUpdated">the most recent family update (kube-proxy's top-level lastUpdated); null before any.</param>
/// <param name="NodeEligible">this node is not being deleted nor tainted for deletion (/healthz also needs it).</param>
public readonly record struct HealthStatus(bool Healthy, DateTimeOffset? LastUpdated, DateTimeOffset CurrentTime, bool NodeEligible = true)
{
    /// <summary>Each family the backend serves, in order (IPv4 first).</summary>
    public IReadOnlyList<FamilyHealth> Families { get; init; } = [];

    /// <summary>What /healthz answers: load balancers should send traffic to this node.</summary>
    public bool HealthyForTraffic => Healthy && NodeEligible;
}

/// <summary>One family's health: when its rules were last programmed (null: never) and whether no change has waited too long.</summary>
public readonly record struct FamilyHealth(IpFamily Family, DateTimeOffset? LastUpdated, bool Healthy);
