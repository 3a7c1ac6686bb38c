using ProxyPlanes.Core.Metrics;
using static ProxyPlanes.Core.Tests.Metrics.MetricsTestHelpers;

namespace ProxyPlanes.Core.Tests.Metrics;

public class ProxyMetricsTests
{
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
        { "kubeproxy_sync_proxy_rules_iptables_total", "gauge" },
        { "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total", "counter" },
        { "kubeproxy_sync_proxy_rules_iptables_restore_failures_total", "counter" },
        { "kubeproxy_sync_proxy_rules_iptables_last", "gauge" },
        { "kubeproxy_sync_proxy_rules_no_local_endpoints_total", "gauge" },
        { "kubeproxy_sync_proxy_rules_nftables_sync_failures_total", "counter" },
        { "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total", "counter" },
        { "proxyplanes_sync_phase_duration_seconds", "histogram" },
        { "proxyplanes_sync_failures_total", "counter" },
        { "proxyplanes_sync_total", "counter" },
        { "proxyplanes_sync_full_reason_total", "counter" },
        { "proxyplanes_sync_canary_checks_total", "counter" },
        { "proxyplanes_nftables_objects", "gauge" },
        { "proxyplanes_sync_changes_applied", "gauge" },
    };

    private static (ProxyMetrics Metrics, PrometheusExporter Exporter) Create()
    {
        var metrics = new ProxyMetrics();
        return (metrics, new PrometheusExporter([metrics.Meter], includeProcessMetrics: false));
    }

    [Theory]
    [MemberData(nameof(KubeProxyMetrics))]
    public void Scrape_FreshInstance_MetricPresentWithKubeProxyType(string name, string type)
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            Dictionary<string, string> types = ParseTypes(exporter.Scrape());

            Assert.True(types.TryGetValue(name, out string? actual), $"{name} missing");
            Assert.Equal(type, actual);
        }
    }

    [Fact]
    public void Scrape_FreshInstance_ExactlyTheDeclaredFamilies()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            Dictionary<string, string> types = ParseTypes(exporter.Scrape());

            Assert.Equal(KubeProxyMetrics.Select(row => (string)row[0]).Order(StringComparer.Ordinal), types.Keys.Order(StringComparer.Ordinal));
        }
    }

    [Fact]
    public void Scrape_FreshInstance_KubeProxyHelpTexts()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            string text = exporter.Scrape();

            Assert.Contains("# HELP kubeproxy_sync_proxy_rules_duration_seconds SyncProxyRules latency in seconds\n", text);
            Assert.Contains("# HELP kubeproxy_sync_full_proxy_rules_duration_seconds SyncProxyRules latency in seconds for full resyncs\n", text);
            Assert.Contains("# HELP kubeproxy_network_programming_duration_seconds In Cluster Network Programming Latency in seconds\n", text);
            Assert.Contains("# HELP kubeproxy_sync_proxy_rules_last_timestamp_seconds The last time proxy rules were successfully synced\n", text);
            Assert.Contains("# HELP kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds The last time a sync of proxy rules was queued\n", text);
            Assert.Contains("# HELP kubeproxy_sync_proxy_rules_iptables_total Total number of iptables rules owned by kube-proxy\n", text);
            Assert.Contains("# HELP kubeproxy_sync_proxy_rules_iptables_last Number of iptables rules written by kube-proxy in last sync\n", text);
            Assert.Contains("# HELP kubeproxy_sync_proxy_rules_no_local_endpoints_total Number of services with a Local traffic policy and no endpoints\n", text);
        }
    }

    [Fact]
    public void Scrape_FreshInstance_UnlabeledSeriesExistWithZero()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            string text = exporter.Scrape();

            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_pending"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_duration_seconds_count"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}"));
        }
    }

    [Fact]
    public void Scrape_SyncDurationHistograms_KubeProxyExponentialBuckets()
    {
        string[] expected =
        [
            "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064", "0.128", "0.256", "0.512",
            "1.024", "2.048", "4.096", "8.192", "16.384", "+Inf",
        ];
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            string text = exporter.Scrape();

            Assert.Equal(expected, BucketBounds(text, "kubeproxy_sync_proxy_rules_duration_seconds"));
            Assert.Equal(expected, BucketBounds(text, "kubeproxy_sync_full_proxy_rules_duration_seconds"));
            Assert.Equal(expected, BucketBounds(text, "kubeproxy_sync_partial_proxy_rules_duration_seconds"));
        }
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
    public void RecordNetworkProgramming_Latency_LandsInKubeProxyBuckets()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            metrics.RecordNetworkProgramming(TimeSpan.FromSeconds(0.3));
            metrics.RecordNetworkProgramming(TimeSpan.FromSeconds(62));
            string text = exporter.Scrape();

            string[] bounds = BucketBounds(text, "kubeproxy_network_programming_duration_seconds");
            Assert.Equal(82, bounds.Length);
            Assert.Equal(["0", "0.25", "0.5", "1"], bounds[..4]);
            Assert.Equal(["270", "300", "+Inf"], bounds[^3..]);
            Assert.Equal(0, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.25\"}"));
            Assert.Equal(1, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\"}"));
            Assert.Equal(1, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{le=\"60\"}"));
            Assert.Equal(2, Sample(text, "kubeproxy_network_programming_duration_seconds_bucket{le=\"65\"}"));
            Assert.Equal(2, Sample(text, "kubeproxy_network_programming_duration_seconds_count"));
        }
    }

    [Fact]
    public void RecordSync_FullAndPartial_RecordsOverallKindSpecificAndCounter()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            metrics.RecordSync(TimeSpan.FromMilliseconds(3), full: true, "iptables");
            metrics.RecordSync(TimeSpan.FromMilliseconds(1), full: false, "iptables");
            metrics.RecordSync(TimeSpan.FromMilliseconds(1), full: false, "iptables");
            string text = exporter.Scrape();

            Assert.Equal(3, Sample(text, "kubeproxy_sync_proxy_rules_duration_seconds_count"));
            Assert.Equal(2, Sample(text, "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.001\"}"));
            Assert.Equal(3, Sample(text, "kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"}"));
            Assert.Equal(1, Sample(text, "kubeproxy_sync_full_proxy_rules_duration_seconds_count"));
            Assert.Equal(0.003, Sample(text, "kubeproxy_sync_full_proxy_rules_duration_seconds_sum"), 9);
            Assert.Equal(2, Sample(text, "kubeproxy_sync_partial_proxy_rules_duration_seconds_count"));
            Assert.Equal(1, Sample(text, "proxyplanes_sync_total{kind=\"full\",mode=\"iptables\"}"));
            Assert.Equal(2, Sample(text, "proxyplanes_sync_total{kind=\"partial\",mode=\"iptables\"}"));
        }
    }

    [Fact]
    public void RecordPhase_EachPhase_SeparateSeries()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            metrics.RecordPhase(ProxyMetrics.PhasePlan, "iptables", TimeSpan.FromMilliseconds(2));
            metrics.RecordPhase(ProxyMetrics.PhaseRender, "iptables", TimeSpan.FromMilliseconds(5));
            metrics.RecordPhase(ProxyMetrics.PhaseApply, "iptables", TimeSpan.FromMilliseconds(40));
            string text = exporter.Scrape();

            Assert.Equal(1, Sample(text, "proxyplanes_sync_phase_duration_seconds_count{mode=\"iptables\",phase=\"plan\"}"));
            Assert.Equal(1, Sample(text, "proxyplanes_sync_phase_duration_seconds_count{mode=\"iptables\",phase=\"render\"}"));
            Assert.Equal(0, Sample(text, "proxyplanes_sync_phase_duration_seconds_bucket{mode=\"iptables\",phase=\"apply\",le=\"0.032\"}"));
            Assert.Equal(1, Sample(text, "proxyplanes_sync_phase_duration_seconds_bucket{mode=\"iptables\",phase=\"apply\",le=\"0.064\"}"));
        }
    }

    [Fact]
    public void Setters_Values_ExposedByGaugesAndCounters()
    {
        var (metrics, exporter) = Create();
        using (metrics)
        using (exporter)
        {
            metrics.SetLastSyncTimestamp(DateTimeOffset.FromUnixTimeMilliseconds(1_700_000_000_500));
            metrics.SetLastQueuedTimestamp(DateTimeOffset.FromUnixTimeSeconds(1_700_000_001));
            metrics.SetPendingChanges(services: 2, endpoints: 5);
            metrics.AddChanges(services: 3, endpoints: 7);
            metrics.AddChanges(services: 1, endpoints: 0);
            metrics.SetIptablesRules("filter", total: 10, lastWritten: 4);
            metrics.SetIptablesRules("nat", total: 120, lastWritten: 30);
            metrics.SetIptablesRules("nat", total: 125, lastWritten: 5);
            metrics.IptablesRestoreFailed(partial: true);
            metrics.IptablesRestoreFailed(partial: false);
            metrics.SetNoLocalEndpoints(ProxyMetrics.TrafficPolicyInternal, 3);
            metrics.SyncFailed("iptables");
            metrics.NftablesSyncFailed();
            metrics.NftablesCleanupFailed();
            string text = exporter.Scrape();

            Assert.Equal(1_700_000_000.5, Sample(text, "kubeproxy_sync_proxy_rules_last_timestamp_seconds"));
            Assert.Contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1.7000000005e+09\n", text);
            Assert.Equal(1_700_000_001, Sample(text, "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds"));
            Assert.Equal(2, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_pending"));
            Assert.Equal(5, Sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_pending"));
            Assert.Equal(4, Sample(text, "kubeproxy_sync_proxy_rules_service_changes_total"));
            Assert.Equal(7, Sample(text, "kubeproxy_sync_proxy_rules_endpoint_changes_total"));
            Assert.Equal(10, Sample(text, "kubeproxy_sync_proxy_rules_iptables_total{table=\"filter\"}"));
            Assert.Equal(125, Sample(text, "kubeproxy_sync_proxy_rules_iptables_total{table=\"nat\"}"));
            Assert.Equal(4, Sample(text, "kubeproxy_sync_proxy_rules_iptables_last{table=\"filter\"}"));
            Assert.Equal(5, Sample(text, "kubeproxy_sync_proxy_rules_iptables_last{table=\"nat\"}"));
            Assert.Equal(1, Sample(text, "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total"));
            Assert.Equal(2, Sample(text, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total"));
            Assert.Equal(3, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}"));
            Assert.Equal(0, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"external\"}"));
            Assert.Equal(1, Sample(text, "proxyplanes_sync_failures_total{mode=\"iptables\"}"));
            Assert.Equal(1, Sample(text, "kubeproxy_sync_proxy_rules_nftables_sync_failures_total"));
            Assert.Equal(1, Sample(text, "kubeproxy_sync_proxy_rules_nftables_cleanup_failures_total"));
        }
    }

    [Fact]
    public void Meter_Always_NamedProxyPlanes()
    {
        using var metrics = new ProxyMetrics();

        Assert.Equal("ProxyPlanes", metrics.Meter.Name);
    }

    private static string[] BucketBounds(string text, string name) =>
        Lines(text)
            .Where(l => l.StartsWith(name + "_bucket{", StringComparison.Ordinal))
            .Select(l =>
            {
                int start = l.IndexOf("le=\"", StringComparison.Ordinal) + 4;
                return l[start..l.IndexOf('"', start)];
            })
            .ToArray();
}
