using System.Globalization;
using System.Text.Json;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The real Prometheus server (Debian's prometheus package, the one promtool comes from) scrapes the
/// real daemon in its network namespace, and its HTTP API answers the queries an operator asks:
/// what the exposition looks like to a scraper, not only to promtool.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class PrometheusScrapeTests
{
    private const string WebIP = "10.96.0.10";
    private const int PrometheusPort = 19090;
    private static readonly TimeSpan Patience = TimeBudget.For(TimeSpan.FromSeconds(30));

    [Fact]
    public async Task RealPrometheus_ScrapesTheDaemon_QueriesSeeWhatARealChangeMoved()
    {
        await using var scenario = await ProxyScenario.CreateAsync(pods: 2);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", WebIP));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0)));
        await scenario.StartProxyAsync();
        var node = scenario.Sandbox.Node;
        var data = Directory.CreateTempSubdirectory("proxyplanes-prometheus-");
        SandboxProcess? prometheus = null;
        try
        {
            var config = Path.Combine(data.FullName, "prometheus.yml");
            File.WriteAllText(config, """
                global: { scrape_interval: 1s, evaluation_interval: 1s }
                scrape_configs:
                  - job_name: proxyplanes
                    static_configs: [ { targets: ['127.0.0.1:10249'] } ]
                """);
            prometheus = node.StartProcess("prometheus",
            [
                $"--config.file={config}", $"--storage.tsdb.path={Path.Combine(data.FullName, "tsdb")}",
                $"--web.listen-address=127.0.0.1:{PrometheusPort}", "--log.level=warn",
            ]);

            // Two scrapes, both up.
            await EventuallyAsync(node, prometheus, "count_over_time(up{job=\"proxyplanes\"}[1m])", v => v >= 2, "two scrapes of the daemon");
            Assert.Equal(1, Assert.Single(await QueryAsync(node, "up{job=\"proxyplanes\"}")));

            // A real change: the slice gains a pod, stamped with when it changed (what network programming latency measures).
            var trigger = DateTimeOffset.UtcNow.ToString("yyyy-MM-ddTHH:mm:ssZ", CultureInfo.InvariantCulture);
            await scenario.WriteManifestAndSyncAsync("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1))
                .Replace("namespace: test,", $"namespace: test, annotations: {{ endpoints.kubernetes.io/last-change-trigger-time: \"{trigger}\" }},", StringComparison.Ordinal));
            Assert.Equal(2, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, WebIP, 80, count: 20)).Count);

            await EventuallyAsync(node, prometheus, "kubeproxy_network_programming_duration_seconds_count{ip_family=\"IPv4\"}", v => v >= 1, "the change's network programming sample");
            await EventuallyAsync(node, prometheus,
                "histogram_quantile(0.99, rate(kubeproxy_sync_proxy_rules_duration_seconds_bucket{ip_family=\"IPv4\"}[1m]))",
                v => double.IsFinite(v) && v > 0, "a sync latency quantile over the last minute");
            await EventuallyAsync(node, prometheus, "kubeproxy_sync_proxy_rules_endpoint_changes_total", v => v >= 2, "the endpoint changes counted");

            // Every query of the Grafana dashboard is valid PromQL to this server (Grafana's variables filled in).
            foreach (var (panel, expr) in DeployManifestTests.DashboardQueries())
            {
                var query = expr.Replace("$__rate_interval", "1m", StringComparison.Ordinal).Replace("$instance", ".+", StringComparison.Ordinal);
                var answer = await ApiAsync(node, query);
                Assert.True(answer.GetProperty("status").GetString() == "success", $"{panel}: {query}: {answer}");
            }
            // ...and the dashboard's sync panel has data for this daemon.
            var sync = DeployManifestTests.DashboardQueries().First(q => q.Expr.Contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket", StringComparison.Ordinal)).Expr;
            Assert.NotEmpty(await QueryAsync(node, sync.Replace("$__rate_interval", "1m", StringComparison.Ordinal).Replace("$instance", ".+", StringComparison.Ordinal)));
        }
        finally
        {
            if (prometheus is not null) await prometheus.KillAsync();
            data.Delete(recursive: true);
        }
    }

    /// <summary>Polls an instant query until one of its samples satisfies <paramref name="condition"/>.</summary>
    private static async Task EventuallyAsync(NetworkNamespace node, SandboxProcess prometheus, string query, Func<double, bool> condition, string what)
    {
        var deadline = DateTime.UtcNow + Patience;
        var last = "";
        while (DateTime.UtcNow < deadline)
        {
            if (prometheus.HasExited) Assert.Fail($"prometheus exited with {prometheus.ExitCode}: {string.Join('\n', prometheus.StandardErrorLines.TakeLast(20))}");
            try
            {
                var values = await QueryAsync(node, query);
                if (values.Any(condition)) return;
                last = string.Join(", ", values.Select(v => v.ToString(CultureInfo.InvariantCulture)));
            }
            catch (Exception e) when (e is InvalidOperationException or JsonException)
            {
                last = e.Message; // not listening yet
            }
            await Task.Delay(250);
        }
        Assert.Fail($"{what}: '{query}' did not get there within {Patience.TotalSeconds} s (last: {last})");
    }

    /// <summary>The sample values of an instant query.</summary>
    private static async Task<List<double>> QueryAsync(NetworkNamespace node, string query)
    {
        var answer = await ApiAsync(node, query);
        if (answer.GetProperty("status").GetString() != "success") throw new InvalidOperationException($"{query}: {answer}");
        return answer.GetProperty("data").GetProperty("result").EnumerateArray()
            .Select(r => double.Parse(r.GetProperty("value")[1].GetString()!, CultureInfo.InvariantCulture))
            .ToList();
    }

    private static async Task<JsonElement> ApiAsync(NetworkNamespace node, string query)
    {
        var result = await node.HttpGetAsync("127.0.0.1", PrometheusPort, "/api/v1/query?query=" + Uri.EscapeDataString(query), TimeSpan.FromSeconds(5));
        if (!result.IsAnswered) throw new InvalidOperationException($"Prometheus did not answer: {result}");
        using var document = JsonDocument.Parse(result.Body);
        return document.RootElement.Clone();
    }
}
