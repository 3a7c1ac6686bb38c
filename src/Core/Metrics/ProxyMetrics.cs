using System.Collections.Concurrent;
using System.Diagnostics.Metrics;

namespace ProxyPlanes.Core.Metrics;

/// <summary>
/// The proxy's instruments, on one <see cref="Meter"/> named <see cref="MeterName"/>. Names, types, help
/// texts and buckets match kube-proxy (<c>pkg/proxy/metrics</c>) so existing dashboards keep working;
/// the <c>proxyplanes_*</c> instruments are our own additions.
/// </summary>
public sealed class ProxyMetrics : IDisposable
{
    /// <summary>Name of the meter that owns every instrument.</summary>
    public const string MeterName = "ProxyPlanes";

    /// <summary>Values for the <c>phase</c> label of <c>proxyplanes_sync_phase_duration_seconds</c>.</summary>
    public const string PhasePlan = "plan";

    /// <inheritdoc cref="PhasePlan"/>
    public const string PhaseRender = "render";

    /// <inheritdoc cref="PhasePlan"/>
    public const string PhaseApply = "apply";

    /// <summary>Values for the <c>traffic_policy</c> label of <c>kubeproxy_sync_proxy_rules_no_local_endpoints_total</c>.</summary>
    public const string TrafficPolicyInternal = "internal";

    /// <inheritdoc cref="TrafficPolicyInternal"/>
    public const string TrafficPolicyExternal = "external";

    // Exact kube-proxy metric names.
    public const string SyncProxyRulesDuration = "kubeproxy_sync_proxy_rules_duration_seconds";
    public const string SyncFullProxyRulesDuration = "kubeproxy_sync_full_proxy_rules_duration_seconds";
    public const string SyncPartialProxyRulesDuration = "kubeproxy_sync_partial_proxy_rules_duration_seconds";
    public const string NetworkProgrammingDuration = "kubeproxy_network_programming_duration_seconds";
    public const string SyncProxyRulesLastTimestamp = "kubeproxy_sync_proxy_rules_last_timestamp_seconds";
    public const string SyncProxyRulesLastQueuedTimestamp = "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds";
    public const string EndpointChangesPending = "kubeproxy_sync_proxy_rules_endpoint_changes_pending";
    public const string EndpointChangesTotal = "kubeproxy_sync_proxy_rules_endpoint_changes_total";
    public const string ServiceChangesPending = "kubeproxy_sync_proxy_rules_service_changes_pending";
    public const string ServiceChangesTotal = "kubeproxy_sync_proxy_rules_service_changes_total";
    public const string IptablesRulesTotal = "kubeproxy_sync_proxy_rules_iptables_total";
    public const string IptablesRulesLastSync = "kubeproxy_sync_proxy_rules_iptables_last";
    public const string IptablesPartialRestoreFailuresTotal = "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total";
    public const string IptablesRestoreFailuresTotal = "kubeproxy_sync_proxy_rules_iptables_restore_failures_total";
    public const string NoLocalEndpointsTotal = "kubeproxy_sync_proxy_rules_no_local_endpoints_total";
    public const string NftablesSyncFailuresTotal = "kubeproxy_sync_proxy_rules_nftables_sync_failures_total";
    public const string NftablesCleanupFailuresTotal = "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total";
    public const string NftablesObjects = "proxyplanes_nftables_objects";
    public const string ChangesApplied = "proxyplanes_sync_changes_applied";

    // Our own metrics.
    public const string SyncPhaseDuration = "proxyplanes_sync_phase_duration_seconds";
    public const string SyncFailuresTotal = "proxyplanes_sync_failures_total";
    public const string SyncTotal = "proxyplanes_sync_total";
    public const string SyncFullReasonTotal = "proxyplanes_sync_full_reason_total";
    public const string CanaryChecksTotal = "proxyplanes_sync_canary_checks_total";

    private readonly Histogram<double> syncDuration;
    private readonly Histogram<double> syncFullDuration;
    private readonly Histogram<double> syncPartialDuration;
    private readonly Histogram<double> networkProgrammingDuration;
    private readonly Histogram<double> syncPhaseDuration;
    private readonly Counter<long> endpointChangesTotal;
    private readonly Counter<long> serviceChangesTotal;
    private readonly Counter<long> iptablesRestoreFailures;
    private readonly Counter<long> iptablesPartialRestoreFailures;
    private readonly Counter<long> nftablesSyncFailures;
    private readonly Counter<long> nftablesCleanupFailures;
    private readonly Counter<long> syncFailures;
    private readonly Counter<long> syncs;
    private readonly Counter<long> fullSyncReasons;
    private readonly Counter<long> canaryChecks;

    private readonly ConcurrentDictionary<string, IptablesTableCounts> iptablesTables = new(StringComparer.Ordinal);
    private readonly ConcurrentDictionary<string, int> nftablesObjects = new(StringComparer.Ordinal);
    private long changesApplied;
    private readonly ConcurrentDictionary<string, int> noLocalEndpoints = new(StringComparer.Ordinal);
    private double lastSyncTimestamp;
    private double lastQueuedTimestamp;
    private int pendingServiceChanges;
    private int pendingEndpointChanges;

    /// <summary>Creates the meter and all instruments.</summary>
    public ProxyMetrics()
    {
        Meter = new Meter(MeterName);

        var syncAdvice = new InstrumentAdvice<double> { HistogramBucketBoundaries = SyncDurationBuckets };
        syncDuration = Meter.CreateHistogram(SyncProxyRulesDuration, "s", "SyncProxyRules latency in seconds", null, syncAdvice);
        syncFullDuration = Meter.CreateHistogram(
            SyncFullProxyRulesDuration, "s", "SyncProxyRules latency in seconds for full resyncs", null, syncAdvice);
        syncPartialDuration = Meter.CreateHistogram(
            SyncPartialProxyRulesDuration, "s", "SyncProxyRules latency in seconds for partial resyncs", null, syncAdvice);
        networkProgrammingDuration = Meter.CreateHistogram(
            NetworkProgrammingDuration,
            "s",
            "In Cluster Network Programming Latency in seconds",
            null,
            new InstrumentAdvice<double> { HistogramBucketBoundaries = NetworkProgrammingBuckets });

        Meter.CreateObservableGauge(
            SyncProxyRulesLastTimestamp, () => Volatile.Read(ref lastSyncTimestamp), "s", "The last time proxy rules were successfully synced");
        Meter.CreateObservableGauge(
            SyncProxyRulesLastQueuedTimestamp, () => Volatile.Read(ref lastQueuedTimestamp), "s", "The last time a sync of proxy rules was queued");

        Meter.CreateObservableGauge(
            EndpointChangesPending, () => Volatile.Read(ref pendingEndpointChanges), null, "Pending proxy rules Endpoint changes");
        endpointChangesTotal = Meter.CreateCounter<long>(EndpointChangesTotal, null, "Cumulative proxy rules Endpoint changes");
        Meter.CreateObservableGauge(
            ServiceChangesPending, () => Volatile.Read(ref pendingServiceChanges), null, "Pending proxy rules Service changes");
        serviceChangesTotal = Meter.CreateCounter<long>(ServiceChangesTotal, null, "Cumulative proxy rules Service changes");

        Meter.CreateObservableGauge(
            IptablesRulesTotal, () => ObserveIptables(lastWritten: false), null, "Total number of iptables rules owned by kube-proxy");
        Meter.CreateObservableGauge(
            IptablesRulesLastSync, () => ObserveIptables(lastWritten: true), null, "Number of iptables rules written by kube-proxy in last sync");
        Meter.CreateObservableGauge(
            ChangesApplied, () => Volatile.Read(ref changesApplied), null,
            "Service and endpoint changes (as counted by the _changes_total counters) that the last successful sync put in the kernel");
        Meter.CreateObservableGauge(
            NftablesObjects,
            () => nftablesObjects.Select(kv => new Measurement<int>(kv.Value, new KeyValuePair<string, object?>("kind", kv.Key))).ToList(),
            null, "Objects in the proxy's nftables tables after the last sync, by kind (chains, rules, sets, elements)");
        iptablesPartialRestoreFailures = Meter.CreateCounter<long>(
            IptablesPartialRestoreFailuresTotal, null, "Cumulative proxy iptables partial restore failures");
        iptablesRestoreFailures = Meter.CreateCounter<long>(IptablesRestoreFailuresTotal, null, "Cumulative proxy iptables restore failures");

        noLocalEndpoints[TrafficPolicyInternal] = 0;
        noLocalEndpoints[TrafficPolicyExternal] = 0;
        Meter.CreateObservableGauge(
            NoLocalEndpointsTotal, ObserveNoLocalEndpoints, null, "Number of services with a Local traffic policy and no endpoints");

        nftablesSyncFailures = Meter.CreateCounter<long>(NftablesSyncFailuresTotal, null, "Cumulative proxy nftables sync failures");
        nftablesCleanupFailures = Meter.CreateCounter<long>(NftablesCleanupFailuresTotal, null, "Cumulative proxy nftables cleanup failures");

        syncPhaseDuration = Meter.CreateHistogram(
            SyncPhaseDuration, "s", "Duration of one phase (plan, render, apply) of a proxy rules sync in seconds", null, syncAdvice);
        syncFailures = Meter.CreateCounter<long>(SyncFailuresTotal, null, "Cumulative failed proxy rules syncs");
        syncs = Meter.CreateCounter<long>(SyncTotal, null, "Cumulative proxy rules syncs by kind (full or partial)");
        fullSyncReasons = Meter.CreateCounter<long>(
            SyncFullReasonTotal, null, "Cumulative full proxy rules syncs by the reason they ran (start, failure, flush, node-changed, hourly)");
        canaryChecks = Meter.CreateCounter<long>(
            CanaryChecksTotal, null, "Cumulative periodic checks of the data plane's canary by result (intact, gone, error)");
    }

    /// <summary>kube-proxy's sync buckets: exponential, start 0.001, factor 2, count 15 (1ms … 16.384s).</summary>
    public static IReadOnlyList<double> SyncDurationBuckets { get; } = ExponentialBuckets(0.001, 2, 15);

    /// <summary>
    /// kube-proxy's network programming buckets: <c>merge(linear(0.25,0.25,2), linear(1,1,59), linear(60,5,12),
    /// linear(120,30,7))</c>. kube-proxy's <c>merge</c> starts from a one-element zero slice, so the real
    /// metric has a leading <c>le="0"</c> bucket; it is kept here for byte-identical output.
    /// </summary>
    public static IReadOnlyList<double> NetworkProgrammingBuckets { get; } =
    [
        0,
        .. LinearBuckets(0.25, 0.25, 2),
        .. LinearBuckets(1, 1, 59),
        .. LinearBuckets(60, 5, 12),
        .. LinearBuckets(120, 30, 7),
    ];

    /// <summary>The meter owning every instrument (hand it to <see cref="PrometheusExporter"/>).</summary>
    public Meter Meter { get; }

    /// <summary>
    /// One finished sync (successful or not), like kube-proxy's deferred observation: records
    /// <c>kubeproxy_sync_proxy_rules_duration_seconds</c>, the full or partial variant and
    /// <c>proxyplanes_sync_total{mode,kind}</c>.
    /// </summary>
    public void RecordSync(TimeSpan duration, bool full, string mode)
    {
        double seconds = duration.TotalSeconds;
        syncDuration.Record(seconds);
        (full ? syncFullDuration : syncPartialDuration).Record(seconds);
        syncs.Add(1, new KeyValuePair<string, object?>("mode", mode), new KeyValuePair<string, object?>("kind", full ? "full" : "partial"));
    }

    /// <summary>Duration of one sync phase (<see cref="PhasePlan"/>, <see cref="PhaseRender"/>, <see cref="PhaseApply"/>).</summary>
    public void RecordPhase(string phase, string mode, TimeSpan duration) =>
        syncPhaseDuration.Record(
            duration.TotalSeconds, new KeyValuePair<string, object?>("phase", phase), new KeyValuePair<string, object?>("mode", mode));

    /// <summary>A full sync started for <paramref name="reason"/> (<c>proxyplanes_sync_full_reason_total{reason}</c>).</summary>
    public void FullSyncStarted(string reason) => fullSyncReasons.Add(1, new KeyValuePair<string, object?>("reason", reason));

    /// <summary>A periodic canary check ended with <paramref name="result"/>: intact, gone or error (<c>proxyplanes_sync_canary_checks_total{result}</c>).</summary>
    public void CanaryChecked(string result) => canaryChecks.Add(1, new KeyValuePair<string, object?>("result", result));

    /// <summary>A sync failed (<c>proxyplanes_sync_failures_total{mode}</c>).</summary>
    public void SyncFailed(string mode) => syncFailures.Add(1, new KeyValuePair<string, object?>("mode", mode));

    /// <summary>Time from an object change to the rules being programmed.</summary>
    public void RecordNetworkProgramming(TimeSpan latency) => networkProgrammingDuration.Record(latency.TotalSeconds);

    /// <summary>Sets <c>kubeproxy_sync_proxy_rules_last_timestamp_seconds</c> (unix seconds).</summary>
    public void SetLastSyncTimestamp(DateTimeOffset time) => Volatile.Write(ref lastSyncTimestamp, ToUnixSeconds(time));

    /// <summary>Sets <c>kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds</c> (unix seconds).</summary>
    public void SetLastQueuedTimestamp(DateTimeOffset time) => Volatile.Write(ref lastQueuedTimestamp, ToUnixSeconds(time));

    /// <summary>Sets the pending Service and Endpoint change gauges.</summary>
    public void SetPendingChanges(int services, int endpoints)
    {
        Volatile.Write(ref pendingServiceChanges, services);
        Volatile.Write(ref pendingEndpointChanges, endpoints);
    }

    /// <summary>Adds to the cumulative Service and Endpoint change counters (negative values are ignored).</summary>
    public void AddChanges(int services, int endpoints)
    {
        if (services > 0)
        {
            serviceChangesTotal.Add(services);
        }

        if (endpoints > 0)
        {
            endpointChangesTotal.Add(endpoints);
        }
    }

    /// <summary>
    /// Rules of one iptables <paramref name="table"/> (e.g. <c>filter</c>, <c>nat</c>): <paramref name="total"/>
    /// owned by the proxy and <paramref name="lastWritten"/> in the last restore.
    /// </summary>
    /// <summary>After a successful sync: how many changes (service + endpoint) it includes; compare with the change counters.</summary>
    public void SetChangesApplied(long changes) => Volatile.Write(ref changesApplied, changes);

    /// <summary>What the nftables mode holds in the kernel after a sync.</summary>
    public void SetNftablesObjects(int chains, int rules, int sets, int elements)
    {
        nftablesObjects["chains"] = chains;
        nftablesObjects["rules"] = rules;
        nftablesObjects["sets"] = sets;
        nftablesObjects["elements"] = elements;
    }

    public void SetIptablesRules(string table, int total, int lastWritten)
    {
        ArgumentNullException.ThrowIfNull(table);
        iptablesTables[table] = new IptablesTableCounts(total, lastWritten);
    }

    /// <summary>
    /// An iptables-restore failed. Like kube-proxy, every failure increments
    /// <c>..._iptables_restore_failures_total</c>; failures of a partial sync additionally increment
    /// <c>..._iptables_partial_restore_failures_total</c>.
    /// </summary>
    public void IptablesRestoreFailed(bool partial)
    {
        if (partial)
        {
            iptablesPartialRestoreFailures.Add(1);
        }

        iptablesRestoreFailures.Add(1);
    }

    /// <summary>Services with a Local traffic policy and no local endpoints, per policy (<c>internal</c>/<c>external</c>).</summary>
    public void SetNoLocalEndpoints(string trafficPolicy, int count)
    {
        ArgumentNullException.ThrowIfNull(trafficPolicy);
        noLocalEndpoints[trafficPolicy] = count;
    }

    /// <summary>An nftables transaction failed.</summary>
    public void NftablesSyncFailed() => nftablesSyncFailures.Add(1);

    /// <summary>Cleaning up nftables state failed.</summary>
    public void NftablesCleanupFailed() => nftablesCleanupFailures.Add(1);

    /// <inheritdoc />
    public void Dispose() => Meter.Dispose();

    /// <summary><c>start * factor^i</c> for i in [0, count), like Prometheus' <c>ExponentialBuckets</c>.</summary>
    public static double[] ExponentialBuckets(double start, double factor, int count)
    {
        var buckets = new double[count];
        double value = start;
        for (int i = 0; i < count; i++)
        {
            buckets[i] = value;
            value *= factor;
        }

        return buckets;
    }

    /// <summary><c>start + width*i</c> for i in [0, count), like Prometheus' <c>LinearBuckets</c>.</summary>
    public static double[] LinearBuckets(double start, double width, int count)
    {
        var buckets = new double[count];
        double value = start;
        for (int i = 0; i < count; i++)
        {
            buckets[i] = value;
            value += width;
        }

        return buckets;
    }

    private static double ToUnixSeconds(DateTimeOffset time) => (time.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / (double)TimeSpan.TicksPerSecond;

    private IEnumerable<Measurement<int>> ObserveIptables(bool lastWritten)
    {
        var measurements = new List<Measurement<int>>(iptablesTables.Count);
        foreach (var (table, counts) in iptablesTables)
        {
            measurements.Add(new Measurement<int>(
                lastWritten ? counts.LastWritten : counts.Total, new KeyValuePair<string, object?>("table", table)));
        }

        return measurements;
    }

    private IEnumerable<Measurement<int>> ObserveNoLocalEndpoints()
    {
        var measurements = new List<Measurement<int>>(noLocalEndpoints.Count);
        foreach (var (policy, count) in noLocalEndpoints)
        {
            measurements.Add(new Measurement<int>(count, new KeyValuePair<string, object?>("traffic_policy", policy)));
        }

        return measurements;
    }

    private sealed record IptablesTableCounts(int Total, int LastWritten);
}
