using System.Diagnostics.Metrics;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using static ProxyPlanes.Core.Tests.Metrics.MetricsTestHelpers;

namespace ProxyPlanes.Core.Tests.Metrics;

public class ProxyMetricsTests
{
    /// <summary>The mode-neutral metrics; each data plane adds its own (see the backends' tests).</summary>
    public static TheoryData<string, string> KubeProxyMetrics => new()
    {
        { "kubeproxy_sync_proxy_rules_duration_seconds", "histogram" },
        { "kubeproxy_sync_full_proxy_rules_duration_seconds", "histogram" },
        { "kubeproxy_sync_partial_proxy_rules_duration_seconds", "histogram" },
        { "kubeproxy_network_programming_duration_seconds", "histogram" },
        { "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "gauge" },
        { "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds", "gauge" },
        { "kubeproxy_sync_proxy_rules_endpoint_changes_pending", "gauge" },
        { "kubeproxy_sync_proxy_rules_endpoint_changes_total", "counter" },
        { "kubeproxy_sync_proxy_rules_service_changes_pending", "gauge" },
        { "kubeproxy_sync_proxy_rules_service_changes_total", "counter" },
        { "kubeproxy_sync_proxy_rules_no_local_endpoints_total", "gauge" },
        { "proxyplanes_sync_phase_duration_seconds", "histogram" },
        { "proxyplanes_sync_failures_total", "counter" },
        { "proxyplanes_sync_total", "counter" },
        { "proxyplanes_sync_full_reason_total", "counter" },
        { "proxyplanes_sync_canary_checks_total", "counter" },
        { "kubeproxy_proxy_healthz_total", "counter" },
        { "kubeproxy_proxy_livez_total", "counter" },
        { "proxyplanes_sync_changes_applied", "gauge" },
        { "kubeproxy_conntrack_reconciler_sync_duration_seconds", "histogram" },
        { "kubeproxy_conntrack_reconciler_deleted_entries_total", "counter" },
        { "proxyplanes_conntrack_cleanup_failures_total", "counter" },
    };

    /// <summary>client_golang's process metrics (what kube-proxy exposes) and prometheus-net's own.</summary>
    public static TheoryData<string, string> ProcessMetrics => new()
    {
        { "process_start_time_seconds", "gauge" },
        { "process_cpu_seconds_total", "counter" },
        { "process_resident_memory_bytes", "gauge" },
        { "process_virtual_memory_bytes", "gauge" },
        { "process_open_fds", "gauge" },
        { "process_max_fds", "gauge" },
        { "process_working_set_bytes", "gauge" },
        { "process_private_memory_bytes", "gauge" },
        { "process_open_handles", "gauge" },
        { "process_num_threads", "gauge" },
        { "dotnet_collection_count_total", "counter" },
        { "dotnet_total_memory_bytes", "gauge" },
    };

    [Theory]
    [MemberData(nameof(KubeProxyMetrics))]
    [MemberData(nameof(ProcessMetrics))]
    public async Task Scrape_FreshInstance_MetricPresentWithKubeProxyType(string name, string type)
    {
        using var metrics = new ProxyMetrics();

        var types = ParseTypes(await metrics.ExportTextAsync());

        Assert.True(types.TryGetValue(name, out var actual), $"{name} missing");
        Assert.Equal(type, actual);
    }

    [Fact]
    public async Task Scrape_WithSystemDiagnosticsMetersAndTheDefaultRegistry_ExactlyTheDeclaredFamilies()
    {
        using var metrics = new ProxyMetrics();
        // What prometheus-net's bridges would pick up if they ran: a System.Diagnostics.Metrics meter
        // (ASP.NET Core and the runtime publish many) and its static default registry.
        using var meter = new Meter("ProxyPlanes.Tests." + Guid.NewGuid().ToString("N"));
        meter.CreateCounter<long>("stray_requests_total").Add(1);
        meter.CreateHistogram<double>("stray_latency_seconds").Record(0.5);
        await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(Stream.Null);
        meter.CreateCounter<long>("stray_after_default_collect_total").Add(1);

        var text = await metrics.ExportTextAsync();
        using var defaultScrape = new MemoryStream();
        await Prometheus.Metrics.DefaultRegistry.CollectAndExportAsTextAsync(defaultScrape);
        var types = ParseTypes(text);

        string[] declared = [.. KubeProxyMetrics.Select(row => (string)row[0]), .. ProcessMetrics.Select(row => (string)row[0])];
        Assert.Equal(declared.Order(StringComparer.Ordinal), types.Keys.Order(StringComparer.Ordinal));
        Assert.DoesNotContain("stray", text);
        Assert.DoesNotContain("microsoft", text, StringComparison.OrdinalIgnoreCase);
        Assert.Equal(0, defaultScrape.Length); // no bridge, event-counter adapter or sample metrics started there either
    }

    [Fact]
    public async Task Scrape_FreshInstance_KubeProxyHelpTexts()
    {
        using var metrics = new ProxyMetrics();

        var text = await metrics.ExportTextAsync();

        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_duration_seconds SyncProxyRules latency in seconds\n", text);
        Assert.Contains("# HELP kubeproxy_sync_full_proxy_rules_duration_seconds SyncProxyRules latency in seconds for full resyncs\n", text);
        Assert.Contains("# HELP kubeproxy_sync_partial_proxy_rules_duration_seconds SyncProxyRules latency in seconds for partial resyncs\n", text);
        Assert.Contains("# HELP kubeproxy_network_programming_duration_seconds In Cluster Network Programming Latency in seconds\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds The last time a sync of proxy rules was queued\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_endpoint_changes_pending Pending proxy rules Endpoint changes\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_endpoint_changes_total Cumulative proxy rules Endpoint changes\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_service_changes_pending Pending proxy rules Service changes\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_service_changes_total Cumulative proxy rules Service changes\n", text);
        Assert.Contains("# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total Number of services with a Local traffic policy and no endpoints\n", text);
        Assert.Contains("# HELP process_resident_memory_bytes Resident memory size in bytes.\n", text);
    }

    [Fact]
    public async Task Scrape_FreshInstance_UnlabeledSeriesExistWithZero_LabeledOnesOnlyOnceUsed()
    {
        using var metrics = new ProxyMetrics();

        var text = await metrics.ExportTextAsync();

        Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"));
        Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_total"));
        Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_pending"));
        // Per family, as kube-proxy's proxiers register them: 0 for each family served (IPv4 by default).
        Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}"));
        Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}"));
        Assert.DoesNotContain("IPv6", text);
        // A labeled counter has no series until an event names its labels (no label-less zero sample).
        Assert.DoesNotContain(Lines(text), l => l.StartsWith("proxyplanes_sync_total", StringComparison.Ordinal));
        Assert.DoesNotContain(Lines(text), l => l.StartsWith("proxyplanes_sync_phase_duration_seconds", StringComparison.Ordinal));
    }

    [Fact]
    public async Task Scrape_SyncDurationHistograms_KubeProxyExponentialBuckets()
    {
        string[] expected =
        [
            "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
            "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf",
        ];
        using var metrics = new ProxyMetrics();
        metrics.RecordPhase(ProxyMetrics.PhasePlan, "nftables", TimeSpan.FromMilliseconds(1));
        metrics.RecordSync(TimeSpan.FromMilliseconds(1), full: true, "nftables");
        metrics.RecordSync(TimeSpan.FromMilliseconds(1), full: false, "nftables");

        var text = await metrics.ExportTextAsync();

        Assert.Equal(expected, BucketBounds(text, "kubeproxy_sync_proxy_rules_duration_seconds"));
        Assert.Equal(expected, BucketBounds(text, "kubeproxy_sync_full_proxy_rules_duration_seconds"));
        Assert.Equal(expected, BucketBounds(text, "kubeproxy_sync_partial_proxy_rules_duration_seconds"));
        Assert.Equal(expected, BucketBounds(text, "proxyplanes_sync_phase_duration_seconds"));
    }

    [Fact]
    public void NetworkProgrammingBuckets_Always_MatchKubeProxyMerge()
    {
        var expected = new List<double> { 0, 0.25, 0.5 };
        expected.AddRange(Enumerable.Range(1, 59).Select(i => (double)i));
        expected.AddRange(Enumerable.Range(0, 12).Select(i => 60d + (5 * i)));
        expected.AddRange(Enumerable.Range(0, 7).Select(i => 120d + (30 * i)));

        Assert.Equal(expected, ProxyMetrics.NetworkProgrammingBuckets);
        Assert.Equal(81, ProxyMetrics.NetworkProgrammingBuckets.Count);
        Assert.Equal(300, ProxyMetrics.NetworkProgrammingBuckets[^1]);
    }

    [Fact]
    public async Task RecordNetworkProgramming_Latency_LandsInKubeProxyBuckets()
    {
        using var metrics = new ProxyMetrics();
        metrics.RecordNetworkProgramming(TimeSpan.FromSeconds(0.3));
        metrics.RecordNetworkProgramming(TimeSpan.FromSeconds(62));

        var text = await metrics.ExportTextAsync();

        var bounds = BucketBounds(text, "kubeproxy_network_programming_duration_seconds");
        Assert.Equal(82, bounds.Length);
        Assert.Equal(["0", "0.25", "0.5", "1"], bounds[..4]);
        Assert.Equal(["270", "300", "+Inf"], bounds[^3..]);
        Assert.Equal(0, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.25\"}"));
        Assert.Equal(1, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"0.5\"}"));
        Assert.Equal(1, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"60\"}"));
        Assert.Equal(2, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{ip_family=\"IPv4\",le=\"65\"}"));
        Assert.Equal(2, Sample(text, "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}"));
        Assert.Equal(62.3, Sample(text, "kubeproxy_network_programming_duration_seconds_sum{ip_family=\"IPv4\"}"), 9);
    }

    [Fact]
    public async Task RecordSync_FullAndPartial_RecordsOverallKindSpecificAndCounter()
    {
        using var metrics = new ProxyMetrics();
        metrics.UseFamilies([IpFamily.IPv6, IpFamily.IPv4]);
        metrics.RecordSync(TimeSpan.FromMilliseconds(3), full: true, "iptables");
        metrics.RecordSync(TimeSpan.FromMilliseconds(1), full: false, "iptables");
        metrics.RecordSync(TimeSpan.FromMilliseconds(1), full: false, "iptables");

        var text = await metrics.ExportTextAsync();

        // One sync programs every family: each family's series records it.
        foreach (var family in new[] { "IPv4", "IPv6" })
        {
            var label = $"ip_family=\"{family}\"";
            Assert.Equal(3, Sample(text, $"kubeproxy_sync_proxy_rules_duration_seconds_count{{{label}}}"));
            Assert.Equal(2, Sample(text, $"kubeproxy_sync_proxy_rules_duration_seconds_bucket{{{label},le=\"0.001\"}}"));
            Assert.Equal(3, Sample(text, $"kubeproxy_sync_proxy_rules_duration_seconds_bucket{{{label},le=\"0.004\"}}"));
            Assert.Equal(1, Sample(text, $"kubeproxy_sync_full_proxy_rules_duration_seconds_count{{{label}}}"));
            Assert.Equal(0.003, Sample(text, $"kubeproxy_sync_full_proxy_rules_duration_seconds_sum{{{label}}}"), 9);
            Assert.Equal(2, Sample(text, $"kubeproxy_sync_partial_proxy_rules_duration_seconds_count{{{label}}}"));
        }
        Assert.Equal(1, Sample(text, "proxyplanes_sync_total{kind=\"full\",mode=\"iptables\"}"));
        Assert.Equal(2, Sample(text, "proxyplanes_sync_total{kind=\"partial\",mode=\"iptables\"}"));
    }

    [Fact]
    public async Task RecordPhase_EachPhase_SeparateSeries()
    {
        using var metrics = new ProxyMetrics();
        metrics.RecordPhase(ProxyMetrics.PhasePlan, "iptables", TimeSpan.FromMilliseconds(2));
        metrics.RecordPhase(ProxyMetrics.PhaseRender, "iptables", TimeSpan.FromMilliseconds(5));
        metrics.RecordPhase(ProxyMetrics.PhaseApply, "iptables", TimeSpan.FromMilliseconds(40));

        var text = await metrics.ExportTextAsync();

        Assert.Equal(1, Sample(text, "proxyplanes_sync_phase_duration_seconds_count{mode=\"iptables\",phase=\"plan\"}"));
        Assert.Equal(1, Sample(text, "proxyplanes_sync_phase_duration_seconds_count{mode=\"iptables\",phase=\"render\"}"));
        Assert.Equal(0, Sample(text, "proxyplanes_sync_phase_duration_seconds_bucket{mode=\"iptables\",phase=\"apply\",le=\"0.032\"}"));
        Assert.Equal(1, Sample(text, "proxyplanes_sync_phase_duration_seconds_bucket{mode=\"iptables\",phase=\"apply\",le=\"0.064\"}"));
    }

    [Fact]
    public async Task Setters_Values_ExposedByGaugesAndCounters()
    {
        using var metrics = new ProxyMetrics();
        metrics.SetLastSyncTimestamp(DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_500));
        metrics.SetLastQueuedTimestamp(DateTimeOffset.FromUnixTimeSeconds(1_700_000_001));
        metrics.SetPendingChanges(services: 2, endpoints: 5);
        metrics.AddChanges(services: 3, endpoints: 7);
        metrics.AddChanges(services: 1, endpoints: 0);
        metrics.AddChanges(services: -1, endpoints: -1);
        metrics.SetChangesApplied(9);
        metrics.SetNoLocalEndpoints(IpFamily.IPv4, ProxyMetrics.TrafficPolicyInternal, 3);
        metrics.ConntrackReconciled(IpFamily.IPv6, TimeSpan.FromMilliseconds(3), 4);
        metrics.ConntrackReconciled(IpFamily.IPv6, TimeSpan.FromMilliseconds(5), 0);
        metrics.SyncFailed("iptables");
        metrics.FullSyncStarted("start");
        metrics.FullSyncStarted("failure");
        metrics.FullSyncStarted("failure");
        long conntrackFailures = 2;
        metrics.CountConntrackCleanupFailures(() => conntrackFailures);

        var text = await metrics.ExportTextAsync();

        Assert.Equal(1_700_000_000.5, Sample(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"));
        Assert.Equal(1_700_000_001, Sample(text, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds{ip_family=\"IPv4\"}"));
        Assert.Equal(4, Sample(text, "kubeproxy_conntrack_reconciler_deleted_entries_total{ip_family=\"IPv6\"}"));
        Assert.Equal(2, Sample(text, "kubeproxy_conntrack_reconciler_sync_duration_seconds_count{ip_family=\"IPv6\"}"));
        Assert.Equal(0.008, Sample(text, "kubeproxy_conntrack_reconciler_sync_duration_seconds_sum{ip_family=\"IPv6\"}"), 9);
        Assert.Equal(2, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_pending"));
        Assert.Equal(5, Sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"));
        Assert.Equal(4, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_total"));
        Assert.Equal(7, Sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"));
        Assert.Equal(9, Sample(text, "proxyplanes_sync_changes_applied"));
        Assert.Equal(3, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}"));
        Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}"));
        Assert.Equal(1, Sample(text, "proxyplanes_sync_failures_total{mode=\"iptables\"}"));
        Assert.Equal(1, Sample(text, "proxyplanes_sync_full_reason_total{reason=\"start\"}"));
        Assert.Equal(2, Sample(text, "proxyplanes_sync_full_reason_total{reason=\"failure\"}"));
        Assert.Equal(2, Sample(text, "proxyplanes_conntrack_cleanup_failures_total"));
        conntrackFailures = 5;
        Assert.Equal(5, Sample(await metrics.ExportTextAsync(), "proxyplanes_conntrack_cleanup_failures_total")); // read at each scrape
    }

    [Fact]
    public async Task Scrape_ProcessMetrics_DescribeThisProcess()
    {
        using var metrics = new ProxyMetrics();

        var text = await metrics.ExportTextAsync();

        Assert.True(Sample(text, "process_resident_memory_bytes") > 1_000_000);
        Assert.True(Sample(text, "process_open_fds") >= 3); // at least stdin, stdout, stderr
        Assert.True(Sample(text, "process_max_fds") >= Sample(text, "process_open_fds"));
        Assert.True(Sample(text, "process_cpu_seconds_total") > 0);
        var started = Sample(text, "process_start_time_seconds");
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() / 1000d;
        Assert.InRange(started, now - 3600, now);
    }

    [Fact]
    public async Task Registry_PerInstance_InstancesDoNotShareSeries()
    {
        using var first = new ProxyMetrics();
        using var second = new ProxyMetrics();

        first.AddChanges(services: 5, endpoints: 0);

        Assert.Equal(5, Sample(await first.ExportTextAsync(), "kubeproxy_sync_proxy_rules_service_changes_total"));
        Assert.Equal(0, Sample(await second.ExportTextAsync(), "kubeproxy_sync_proxy_rules_service_changes_total"));
        Assert.NotSame(first.Registry, second.Registry);
    }

    private static string[] BucketBounds(string text, string name) =>
        Lines(text)
            .Where(l => l.StartsWith(name + "_bucket{", StringComparison.Ordinal))
            .Select(l =>
            {
                var start = l.IndexOf("le=\"", StringComparison.Ordinal) + 4;
                return l[start..l.IndexOf('"', start)];
            })
            .Distinct()
            .ToArray();
}
