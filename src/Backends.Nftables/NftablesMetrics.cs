using Prometheus;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// The nftables-only metrics, registered by this data plane on the shared
/// <see cref="ProxyMetrics.Registry"/> (so they appear in <c>--mode=nftables</c> only): kube-proxy's
/// two failure counters and our object counts.
/// </summary>
public sealed class NftablesMetrics
{
    public const string SyncFailuresTotal = "kubeproxy_sync_proxy_rules_nftables_sync_failures_total";
    public const string CleanupFailuresTotal = "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total";
    public const string Objects = "proxyplanes_nftables_objects";

    private readonly Counter _syncFailures;
    private readonly Counter _cleanupFailures;
    private readonly Gauge _objects;

    /// <summary>Registers the metrics on <paramref name="metrics"/>' registry (or finds them there, if already registered).</summary>
    public NftablesMetrics(ProxyMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        var factory = metrics.Factory;
        // Per IP family (one table each), as kube-proxy 1.33+.
        _syncFailures = factory.CreateCounter(SyncFailuresTotal, "Cumulative proxy nftables sync failures", [ProxyMetrics.IpFamilyLabel]);
        _cleanupFailures = factory.CreateCounter(CleanupFailuresTotal, "Cumulative proxy nftables cleanup failures", [ProxyMetrics.IpFamilyLabel]);
        _objects = factory.CreateGauge(
            Objects, "Objects in the proxy's nftables tables after the last sync, by kind (chains, rules, sets, elements)", ["kind"]);
    }

    /// <summary>What the nftables mode holds in the kernel after a sync.</summary>
    public void SetObjects(int chains, int rules, int sets, int elements)
    {
        _objects.WithLabels("chains").Set(chains);
        _objects.WithLabels("rules").Set(rules);
        _objects.WithLabels("sets").Set(sets);
        _objects.WithLabels("elements").Set(elements);
    }

    /// <summary>An nftables transaction on <paramref name="family"/>'s table failed.</summary>
    public void SyncFailed(IpFamily family) => _syncFailures.WithLabels(family.ToString()).Inc();

    /// <summary>Cleaning up <paramref name="family"/>'s nftables table failed.</summary>
    public void CleanupFailed(IpFamily family) => _cleanupFailures.WithLabels(family.ToString()).Inc();
}
