using System.Text.Json;
using System.Text.RegularExpressions;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Config;
using ProxyPlanes.Metrics;
using ProxyPlanes.TestKit;
using YamlDotNet.RepresentationModel;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>deploy/monitoring: the PodMonitor reaches the metrics server, the dashboard asks for metrics that exist.</summary>
public sealed partial class DeployManifestTests
{
    private static readonly string Monitoring = Path.Combine(Deploy, "monitoring");

    [Fact]
    public void PodMonitor_SelectsTheDaemonSetsPods_OnAPortTheConfigServes()
    {
        var monitor = Assert.Single(Documents(Path.Combine("monitoring", "podmonitor.yaml")));
        Assert.Equal("monitoring.coreos.com/v1", Text(monitor, "apiVersion"));
        Assert.Equal("PodMonitor", Text(monitor, "kind"));
        var daemonSet = Single("daemonset.yaml", "DaemonSet");
        Assert.Equal(Text(daemonSet, "metadata", "namespace"), Assert.Single(Strings(monitor, "spec", "namespaceSelector", "matchNames")));
        var podLabels = (YamlMappingNode)At(daemonSet, "spec", "template", "metadata", "labels")!;
        var selector = (YamlMappingNode)At(monitor, "spec", "selector", "matchLabels")!;
        Assert.NotEmpty(selector.Children);
        foreach (var (key, value) in selector.Children)
            Assert.Equal(((YamlScalarNode)value).Value, Text(podLabels, ((YamlScalarNode)key).Value!));

        var endpoint = (YamlMappingNode)Assert.Single(Items(monitor, "spec", "podMetricsEndpoints"));
        var port = Assert.Single(Items(Container(), "ports"), p => Text(p, "name") == Text(endpoint, "port"));
        Assert.Equal("/metrics", Text(endpoint, "path"));

        // The metrics server listens on that port, on every address (else Prometheus cannot reach it).
        var config = KubeProxyConfigFile.Parse(ConfigMapConfig(), "configmap.yaml:config.conf");
        Assert.Equal(int.Parse(Text(port, "containerPort")!, System.Globalization.CultureInfo.InvariantCulture), config.MetricsBindAddress!.Value.Port);
        Assert.False(System.Net.IPAddress.IsLoopback(config.MetricsBindAddress.Value.Address), "a loopback metrics address cannot be scraped from outside the node");
        Assert.Equal(Text(port, "containerPort"), Text(daemonSet, "spec", "template", "metadata", "annotations", "prometheus.io/port"));
    }

    [Fact]
    public async Task GrafanaDashboard_EveryQueryNamesMetricsTheDaemonExports()
    {
        var exported = await ExportedMetricNamesAsync();
        var queries = DashboardQueries();

        Assert.True(queries.Count >= 15, $"only {queries.Count} queries");
        foreach (var (panel, expr) in queries)
        {
            var names = MetricNames(expr);
            Assert.True(names.Count > 0, $"{panel}: '{expr}' names no metric");
            foreach (var name in names)
                Assert.True(exported.Contains(name), $"{panel}: '{expr}' names {name}, which the daemon does not export");
            Assert.Contains("instance=~\"$instance\"", expr);
        }
        // The panels an operator of kube-proxy looks for.
        foreach (var needed in new[] { "kubeproxy_sync_proxy_rules_duration_seconds_bucket", "kubeproxy_network_programming_duration_seconds_bucket",
                     "kubeproxy_sync_proxy_rules_endpoint_changes_pending", "kubeproxy_sync_proxy_rules_iptables_restore_failures_total",
                     "kubeproxy_sync_proxy_rules_iptables_total", "proxyplanes_sync_phase_duration_seconds_bucket" })
            Assert.Contains(queries, q => MetricNames(q.Expr).Contains(needed));
    }

    /// <summary>Every (panel title, expr) of deploy/monitoring/grafana-dashboard.json.</summary>
    internal static List<(string Panel, string Expr)> DashboardQueries()
    {
        using var dashboard = JsonDocument.Parse(File.ReadAllText(Path.Combine(Monitoring, "grafana-dashboard.json")));
        var queries = new List<(string, string)>();
        foreach (var panel in dashboard.RootElement.GetProperty("panels").EnumerateArray())
            foreach (var target in panel.GetProperty("targets").EnumerateArray())
                queries.Add((panel.GetProperty("title").GetString()!, target.GetProperty("expr").GetString()!));
        return queries;
    }

    /// <summary>The metric names in a PromQL expression: ours, kube-proxy's and the process metrics.</summary>
    internal static HashSet<string> MetricNames(string expr) =>
        [.. MetricName().Matches(expr).Select(m => m.Value)];

    /// <summary>
    /// Every sample name the daemon can export, in any mode: the real registries (mode-neutral plus each data
    /// plane's), with a histogram's _bucket, _sum and _count.
    /// </summary>
    private static async Task<HashSet<string>> ExportedMetricNamesAsync()
    {
        using var metrics = new ProxyMetrics();
        _ = new IptablesMetrics(metrics);
        _ = new NftablesMetrics(metrics);
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var line in (await metrics.ExportTextAsync()).Split('\n'))
        {
            var parts = line.Split(' ');
            if (parts.Length < 4 || parts[0] != "#" || parts[1] != "TYPE") continue;
            names.Add(parts[2]);
            if (parts[3] == "histogram") names.UnionWith([parts[2] + "_bucket", parts[2] + "_sum", parts[2] + "_count"]);
        }
        Assert.Contains("kubeproxy_sync_proxy_rules_nftables_sync_failures_total", names); // each mode's own metrics are in
        return names;
    }

    [GeneratedRegex(@"\b(?:kubeproxy|proxyplanes|process)_[a-z0-9_]+\b")]
    private static partial Regex MetricName();
}
