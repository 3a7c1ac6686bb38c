using System.Text;
using Prometheus;
using ProxyPlanes.Model;

namespace ProxyPlanes.Metrics;

/// <summary>
/// The proxy's mode-neutral metrics, as prometheus-net counters, gauges and histograms on a
/// <see cref="Registry"/> of their own (one per instance, so tests and benchmarks never share
/// series). Names, types, help texts, labels and buckets match kube-proxy (<c>pkg/proxy/metrics</c>)
/// so existing dashboards keep working; the <c>proxyplanes_*</c> metrics are our own additions. A
/// data plane registers its own metrics (e.g. iptables rule counts) on the same registry through
/// <see cref="Factory"/>. The registry also carries the process metrics (<see cref="ProcessMetrics"/>).
/// </summary>
public sealed class ProxyMetrics : ISyncMetrics, IDisposable
{
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
    public const string NoLocalEndpointsTotal = "kubeproxy_sync_proxy_rules_no_local_endpoints_total";

    // Our own metrics.
    public const string ChangesApplied = "proxyplanes_sync_changes_applied";
    public const string SyncPhaseDuration = "proxyplanes_sync_phase_duration_seconds";
    public const string SyncFailuresTotal = "proxyplanes_sync_failures_total";
    public const string SyncTotal = "proxyplanes_sync_total";
    public const string SyncFullReasonTotal = "proxyplanes_sync_full_reason_total";
    public const string CanaryChecksTotal = "proxyplanes_sync_canary_checks_total";
    public const string HealthzTotal = "kubeproxy_proxy_healthz_total";
    public const string LivezTotal = "kubeproxy_proxy_livez_total";
    public const string ConntrackReconcilerDuration = "kubeproxy_conntrack_reconciler_sync_duration_seconds";
    public const string ConntrackReconcilerDeletedTotal = "kubeproxy_conntrack_reconciler_deleted_entries_total";
    public const string ConntrackCleanupFailuresTotal = "proxyplanes_conntrack_cleanup_failures_total";

    private readonly Histogram _syncDuration;
    private readonly Histogram _syncFullDuration;
    private readonly Histogram _syncPartialDuration;
    private readonly Histogram _networkProgrammingDuration;
    private readonly Histogram _syncPhaseDuration;
    private readonly Gauge _lastSyncTimestamp;
    private readonly Gauge _lastQueuedTimestamp;
    private readonly Gauge _endpointChangesPending;
    private readonly Counter _endpointChangesTotal;
    private readonly Gauge _serviceChangesPending;
    private readonly Counter _serviceChangesTotal;
    private readonly Gauge _noLocalEndpoints;
    private readonly Gauge _changesApplied;
    private readonly Counter _syncFailures;
    private readonly Counter _syncs;
    private readonly Counter _fullSyncReasons;
    private readonly Counter _canaryChecks;
    private readonly Counter _healthz;
    private readonly Counter _livez;
    private readonly Histogram _conntrackDuration;
    private readonly Counter _conntrackDeleted;
    private readonly Counter _conntrackCleanupFailures;

    static ProxyMetrics()
    {
        // Every metric lives on a registry of our own. Should anything ever scrape prometheus-net's
        // static default registry, it must not start the bridges from System.Diagnostics.Metrics and
        // EventCounters (they rename metrics and turn counters into gauges) nor add sample metrics.
        Prometheus.Metrics.SuppressDefaultMetrics();
    }

    /// <summary>Creates a registry with every mode-neutral metric and the process metrics.</summary>
    public ProxyMetrics()
    {
        Registry = Prometheus.Metrics.NewCustomRegistry();
        Factory = Prometheus.Metrics.WithCustomRegistry(Registry);

        // kube-proxy (1.33+) labels its sync metrics with ip_family: one proxier per family there, one
        // sync for every family here, so a sync is recorded once for each family it programmed.
        _syncDuration = Factory.CreateHistogram(
            SyncProxyRulesDuration, "SyncProxyRules latency in seconds", [IpFamilyLabel], Buckets(SyncDurationBuckets));
        _syncFullDuration = Factory.CreateHistogram(
            SyncFullProxyRulesDuration, "SyncProxyRules latency in seconds for full resyncs", [IpFamilyLabel], Buckets(SyncDurationBuckets));
        _syncPartialDuration = Factory.CreateHistogram(
            SyncPartialProxyRulesDuration, "SyncProxyRules latency in seconds for partial resyncs", [IpFamilyLabel], Buckets(SyncDurationBuckets));
        _networkProgrammingDuration = Factory.CreateHistogram(
            NetworkProgrammingDuration, "In Cluster Network Programming Latency in seconds", [IpFamilyLabel], Buckets(NetworkProgrammingBuckets));

        _lastSyncTimestamp = Factory.CreateGauge(SyncProxyRulesLastTimestamp, "The last time proxy rules were successfully synced", [IpFamilyLabel]);
        _lastQueuedTimestamp = Factory.CreateGauge(SyncProxyRulesLastQueuedTimestamp, "The last time a sync of proxy rules was queued", [IpFamilyLabel]);
        _endpointChangesPending = Factory.CreateGauge(EndpointChangesPending, "Pending proxy rules Endpoint changes");
        _endpointChangesTotal = Factory.CreateCounter(EndpointChangesTotal, "Cumulative proxy rules Endpoint changes");
        _serviceChangesPending = Factory.CreateGauge(ServiceChangesPending, "Pending proxy rules Service changes");
        _serviceChangesTotal = Factory.CreateCounter(ServiceChangesTotal, "Cumulative proxy rules Service changes");

        // kube-proxy names this gauge ..._total; promtool's lint about it is expected.
        _noLocalEndpoints = Factory.CreateGauge(
            NoLocalEndpointsTotal, "Number of services with a Local traffic policy and no endpoints", [IpFamilyLabel, "traffic_policy"]);

        _changesApplied = Factory.CreateGauge(
            ChangesApplied,
            "Service and endpoint changes (as counted by the _changes_total counters) that the last successful sync put in the kernel");
        // Label names in alphabetical order: the exposition prints them in declaration order.
        _syncPhaseDuration = Factory.CreateHistogram(
            SyncPhaseDuration,
            "Duration of one phase (plan, render, apply) of a proxy rules sync in seconds",
            ["mode", "phase"],
            Buckets(SyncDurationBuckets));
        _syncFailures = Factory.CreateCounter(SyncFailuresTotal, "Cumulative failed proxy rules syncs", ["mode"]);
        _syncs = Factory.CreateCounter(SyncTotal, "Cumulative proxy rules syncs by kind (full or partial)", ["kind", "mode"]);
        _fullSyncReasons = Factory.CreateCounter(
            SyncFullReasonTotal,
            "Cumulative full proxy rules syncs by the reason they ran (start, failure, flush, node-changed, hourly)",
            ["reason"]);

        _canaryChecks = Factory.CreateCounter(
            CanaryChecksTotal, "Cumulative periodic checks of the data plane's canary by result (intact, gone, error)", ["result"]);
        // kube-proxy's names and help texts (pkg/proxy/metrics): one series per HTTP status answered.
        _healthz = Factory.CreateCounter(HealthzTotal, "Cumulative proxy healthz HTTP status", ["code"]);
        _livez = Factory.CreateCounter(LivezTotal, "Cumulative proxy livez HTTP status", ["code"]);

        // kube-proxy's conntrack reconciler metrics (1.33+), per IP family as there.
        _conntrackDuration = Factory.CreateHistogram(
            ConntrackReconcilerDuration, "ReconcileConntrackFlowsLatency latency in seconds", [IpFamilyLabel], Buckets(SyncDurationBuckets));
        _conntrackDeleted = Factory.CreateCounter(
            ConntrackReconcilerDeletedTotal, "Cumulative conntrack flows deleted by conntrack reconciler", [IpFamilyLabel]);
        _conntrackCleanupFailures = Factory.CreateCounter(
            ConntrackCleanupFailuresTotal, "Conntrack cleanups that failed after a sync (the rules were in place; stale UDP flows may remain)");

        ProcessMetrics.Register(Registry);
        UseFamilies([IpFamily.IPv4]);
    }

    /// <summary>The label kube-proxy puts on its per-family metrics; values <c>IPv4</c>, <c>IPv6</c>.</summary>
    public const string IpFamilyLabel = "ip_family";

    /// <summary>The IP families the data plane programs (IPv4 until <see cref="UseFamilies"/> says otherwise).</summary>
    public IReadOnlyList<IpFamily> Families { get; private set; } = [];

    /// <summary>
    /// The IP families the data plane programs: each sync is recorded once per family, and the
    /// per-family gauges start at 0 for each, as kube-proxy's proxiers register them.
    /// </summary>
    public void UseFamilies(IReadOnlyList<IpFamily> families)
    {
        ArgumentNullException.ThrowIfNull(families);
        if (families.Count == 0) throw new ArgumentException("at least one IP family is needed", nameof(families));
        Families = [.. families.Distinct().Order()];
        foreach (var family in Families)
        {
            _noLocalEndpoints.WithLabels(family.ToString(), TrafficPolicyInternal).Set(0);
            _noLocalEndpoints.WithLabels(family.ToString(), TrafficPolicyExternal).Set(0);
        }
    }

    /// <summary>kube-proxy's sync buckets: exponential, start 0.001, factor 2, count 15 (1ms … 16.384s).</summary>
    public static IReadOnlyList<double> SyncDurationBuckets { get; } = ExponentialBuckets(0.001, 2, 15);

    /// <summary>
    /// kube-proxy's network programming buckets: <c>merge(linear(0.25,0.25,2), linear(1,1,59), linear(60,5,12),
    /// linear(120,30,7))</c>. kube-proxy's <c>merge</c> starts from a one-element zero slice, so the real
    /// metric has a leading <c>le="0"</c> bucket; it is kept here for identical output.
    /// </summary>
    public static IReadOnlyList<double> NetworkProgrammingBuckets { get; } =
    [
        0,
        .. LinearBuckets(0.25, 0.25, 2),
        .. LinearBuckets(1, 1, 59),
        .. LinearBuckets(60, 5, 12),
        .. LinearBuckets(120, 30, 7),
    ];

    /// <summary>The registry that holds every metric of this instance; <c>/metrics</c> serves it.</summary>
    public CollectorRegistry Registry { get; }

    /// <summary>Creates metrics on <see cref="Registry"/>: a data plane registers its own metrics here.</summary>
    public IMetricFactory Factory { get; }

    /// <summary>
    /// One finished sync (successful or not), like kube-proxy's deferred observation: records
    /// <c>kubeproxy_sync_proxy_rules_duration_seconds</c>, the full or partial variant and
    /// <c>proxyplanes_sync_total{kind,mode}</c>.
    /// </summary>
    public void RecordSync(TimeSpan duration, bool full, string mode)
    {
        var seconds = duration.TotalSeconds;
        foreach (var family in Families)
        {
            _syncDuration.WithLabels(family.ToString()).Observe(seconds);
            (full ? _syncFullDuration : _syncPartialDuration).WithLabels(family.ToString()).Observe(seconds);
        }
        _syncs.WithLabels(full ? "full" : "partial", mode).Inc();
    }

    /// <summary>Duration of one sync phase (<see cref="PhasePlan"/>, <see cref="PhaseRender"/>, <see cref="PhaseApply"/>).</summary>
    public void RecordPhase(string phase, string mode, TimeSpan duration) =>
        _syncPhaseDuration.WithLabels(mode, phase).Observe(duration.TotalSeconds);

    /// <summary>A full sync started for <paramref name="reason"/> (<c>proxyplanes_sync_full_reason_total{reason}</c>).</summary>
    public void FullSyncStarted(string reason) => _fullSyncReasons.WithLabels(reason).Inc();

    /// <summary>A periodic canary check ended with <paramref name="result"/>: intact, gone or error (<c>proxyplanes_sync_canary_checks_total{result}</c>).</summary>
    public void CanaryChecked(string result) => _canaryChecks.WithLabels(result).Inc();

    /// <summary>/healthz answered <paramref name="code"/> (<c>kubeproxy_proxy_healthz_total{code}</c>).</summary>
    public void HealthzAnswered(int code) => _healthz.WithLabels(code.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();

    /// <summary>/livez answered <paramref name="code"/> (<c>kubeproxy_proxy_livez_total{code}</c>).</summary>
    public void LivezAnswered(int code) => _livez.WithLabels(code.ToString(System.Globalization.CultureInfo.InvariantCulture)).Inc();

    /// <summary>
    /// One family's stale-flow cleanup after a sync: <c>kubeproxy_conntrack_reconciler_sync_duration_seconds{ip_family}</c>
    /// and <c>kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family}</c>.
    /// </summary>
    public void ConntrackReconciled(IpFamily family, TimeSpan duration, long deleted)
    {
        var label = family.ToString();
        _conntrackDuration.WithLabels(label).Observe(duration.TotalSeconds);
        _conntrackDeleted.WithLabels(label).Inc(deleted);
    }

    /// <summary><c>proxyplanes_conntrack_cleanup_failures_total</c> follows <paramref name="failures"/> (the cleaner's own count), read at each scrape.</summary>
    public void CountConntrackCleanupFailures(Func<long> failures)
    {
        ArgumentNullException.ThrowIfNull(failures);
        Registry.AddBeforeCollectCallback(() => _conntrackCleanupFailures.IncTo(failures()));
    }

    /// <summary>A sync failed (<c>proxyplanes_sync_failures_total{mode}</c>).</summary>
    public void SyncFailed(string mode) => _syncFailures.WithLabels(mode).Inc();

    /// <summary>Time from an object change to the rules being programmed.</summary>
    public void RecordNetworkProgramming(TimeSpan latency)
    {
        foreach (var family in Families) _networkProgrammingDuration.WithLabels(family.ToString()).Observe(latency.TotalSeconds);
    }

    /// <summary>Sets <c>kubeproxy_sync_proxy_rules_last_timestamp_seconds</c> (unix seconds).</summary>
    public void SetLastSyncTimestamp(DateTimeOffset time)
    {
        foreach (var family in Families) _lastSyncTimestamp.WithLabels(family.ToString()).Set(ToUnixSeconds(time));
    }

    /// <summary>Sets <c>kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds</c> (unix seconds).</summary>
    public void SetLastQueuedTimestamp(DateTimeOffset time)
    {
        foreach (var family in Families) _lastQueuedTimestamp.WithLabels(family.ToString()).Set(ToUnixSeconds(time));
    }

    /// <summary>Sets the pending Service and Endpoint change gauges.</summary>
    public void SetPendingChanges(int services, int endpoints)
    {
        _serviceChangesPending.Set(services);
        _endpointChangesPending.Set(endpoints);
    }

    /// <summary>Adds to the cumulative Service and Endpoint change counters (negative values are ignored).</summary>
    public void AddChanges(int services, int endpoints)
    {
        if (services > 0)
        {
            _serviceChangesTotal.Inc(services);
        }

        if (endpoints > 0)
        {
            _endpointChangesTotal.Inc(endpoints);
        }
    }

    /// <summary>After a successful sync: how many changes (service + endpoint) it includes; compare with the change counters.</summary>
    public void SetChangesApplied(long changes) => _changesApplied.Set(changes);

    /// <summary>Services with a Local traffic policy and no local endpoints, per family and policy (<c>internal</c>/<c>external</c>).</summary>
    public void SetNoLocalEndpoints(IpFamily family, string trafficPolicy, int count)
    {
        ArgumentNullException.ThrowIfNull(trafficPolicy);
        _noLocalEndpoints.WithLabels(family.ToString(), trafficPolicy).Set(count);
    }

    /// <summary>The registry in the Prometheus text format 0.0.4, as <c>/metrics</c> serves it (for tests and logs).</summary>
    public async Task<string> ExportTextAsync(CancellationToken cancellationToken = default)
    {
        using var stream = new MemoryStream();
        await Registry.CollectAndExportAsTextAsync(stream, ExpositionFormat.PrometheusText, cancellationToken).ConfigureAwait(false);
        return Encoding.UTF8.GetString(stream.GetBuffer(), 0, (int)stream.Length);
    }

    /// <summary>Nothing to release (the registry is garbage-collected with the instance); kept so callers can scope an instance.</summary>
    public void Dispose()
    {
    }

    /// <summary><c>start * factor^i</c> for i in [0, count), like Prometheus' <c>ExponentialBuckets</c>.</summary>
    public static double[] ExponentialBuckets(double start, double factor, int count)
    {
        var buckets = new double[count];
        var value = start;
        for (var i = 0; i < count; i++)
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
        var value = start;
        for (var i = 0; i < count; i++)
        {
            buckets[i] = value;
            value += width;
        }

        return buckets;
    }

    private static HistogramConfiguration Buckets(IReadOnlyList<double> buckets) => new() { Buckets = [.. buckets] };

    private static double ToUnixSeconds(DateTimeOffset time) => (time.UtcTicks - DateTimeOffset.UnixEpoch.UtcTicks) / (double)TimeSpan.TicksPerSecond;
}
