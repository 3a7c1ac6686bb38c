using Prometheus;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// kube-proxy's iptables-only metrics, registered by this data plane on the shared
/// <see cref="ProxyMetrics.Registry"/> (so they appear in <c>--mode=iptables</c> only). Names, help
/// texts and labels are kube-proxy's.
/// </summary>
public sealed class IptablesMetrics
{
    public const string RulesTotal = "kubeproxy_sync_proxy_rules_iptables_total";
    public const string RulesLastSync = "kubeproxy_sync_proxy_rules_iptables_last";
    public const string PartialRestoreFailuresTotal = "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total";
    public const string RestoreFailuresTotal = "kubeproxy_sync_proxy_rules_iptables_restore_failures_total";

    private readonly Gauge _rulesTotal;
    private readonly Gauge _rulesLastSync;
    private readonly Counter _partialRestoreFailures;
    private readonly Counter _restoreFailures;

    /// <summary>Registers the metrics on <paramref name="metrics"/>' registry (or finds them there, if already registered).</summary>
    public IptablesMetrics(ProxyMetrics metrics)
    {
        ArgumentNullException.ThrowIfNull(metrics);
        var factory = metrics.Factory;
        // kube-proxy names this gauge ..._total; promtool's lint about it is expected.
        // Per IP family, as kube-proxy 1.33+ (label names in alphabetical order).
        _rulesTotal = factory.CreateGauge(RulesTotal, "Total number of iptables rules owned by kube-proxy", [ProxyMetrics.IpFamilyLabel, "table"]);
        _rulesLastSync = factory.CreateGauge(RulesLastSync, "Number of iptables rules written by kube-proxy in last sync", [ProxyMetrics.IpFamilyLabel, "table"]);
        _partialRestoreFailures = factory.CreateCounter(PartialRestoreFailuresTotal, "Cumulative proxy iptables partial restore failures", [ProxyMetrics.IpFamilyLabel]);
        _restoreFailures = factory.CreateCounter(RestoreFailuresTotal, "Cumulative proxy iptables restore failures", [ProxyMetrics.IpFamilyLabel]);
    }

    /// <summary>
    /// Rules of one family's iptables <paramref name="table"/> (e.g. <c>filter</c>, <c>nat</c>): <paramref name="total"/>
    /// owned by the proxy and <paramref name="lastWritten"/> in the last restore.
    /// </summary>
    public void SetRules(IpFamily family, string table, int total, int lastWritten)
    {
        ArgumentNullException.ThrowIfNull(table);
        _rulesTotal.WithLabels(family.ToString(), table).Set(total);
        _rulesLastSync.WithLabels(family.ToString(), table).Set(lastWritten);
    }

    /// <summary>
    /// An iptables-restore failed. Like kube-proxy, every failure increments
    /// <c>..._iptables_restore_failures_total</c>; failures of a partial sync additionally increment
    /// <c>..._iptables_partial_restore_failures_total</c>.
    /// </summary>
    public void RestoreFailed(IpFamily family, bool partial)
    {
        if (partial)
        {
            _partialRestoreFailures.WithLabels(family.ToString()).Inc();
        }

        _restoreFailures.WithLabels(family.ToString()).Inc();
    }
}
