using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>The iptables data plane registers kube-proxy's iptables metrics on the shared registry and moves them.</summary>
public sealed class IptablesMetricsTests
{
    [Fact]
    public async Task Sync_FullThenRefusedPartial_RuleGaugesAndFailureCountersMove()
    {
        var (initial, update) = await new GoldenCase("endpoint-removed").SyncRequestsAsync();
        var applier = new FakeIptables();
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(applier, metrics, NullLogger.Instance);

        await backend.SyncAsync(initial, default);
        var plan = backend.LastPlan(IpFamily.IPv4)!;
        var afterFull = await metrics.ExportTextAsync();
        applier.FailWhen = _ => new InvalidOperationException("refused (test)");
        await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(update!, default));
        var afterFailure = await metrics.ExportTextAsync();

        Assert.True(plan.NatRulesTotal > 0);
        Assert.Equal(plan.NatRulesTotal, Sample(afterFull, "kubeproxy_sync_proxy_rules_iptables_total{ip_family=\"IPv4\",table=\"nat\"}"));
        Assert.Equal(plan.FilterRulesTotal, Sample(afterFull, "kubeproxy_sync_proxy_rules_iptables_total{ip_family=\"IPv4\",table=\"filter\"}"));
        Assert.Equal(plan.NatRulesWritten, Sample(afterFull, "kubeproxy_sync_proxy_rules_iptables_last{ip_family=\"IPv4\",table=\"nat\"}"));
        Assert.Equal(plan.FilterRulesWritten, Sample(afterFull, "kubeproxy_sync_proxy_rules_iptables_last{ip_family=\"IPv4\",table=\"filter\"}"));
        Assert.DoesNotContain("kubeproxy_sync_proxy_rules_iptables_restore_failures_total{", afterFull); // no failure, no series
        Assert.Equal(1, Sample(afterFailure, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"}"));
        Assert.Equal(1, Sample(afterFailure, "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"}"));
        Assert.DoesNotContain("nftables", afterFailure);
    }

    [Fact]
    public async Task PromtoolCheckMetrics_AfterSync_OnlyTheKnownTotalGaugeLints()
    {
        var (initial, _) = await new GoldenCase("endpoint-removed").SyncRequestsAsync();
        using var metrics = new ProxyMetrics();
        await new IptablesBackend(new FakeIptables(), metrics, NullLogger.Instance).SyncAsync(initial, default);
        var text = await metrics.ExportTextAsync();

        var result = await Promtool.CheckMetricsAsync(text);

        Assert.True(result.AcceptedApartFromKnownLints, $"{result}\ninput:\n{text}");
        Assert.Equal(Promtool.KnownLints.Order(StringComparer.Ordinal), result.Complaints.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task IptablesMetrics_SecondInstanceOnTheSameRegistry_SharesTheSeries()
    {
        using var metrics = new ProxyMetrics();
        new IptablesMetrics(metrics).RestoreFailed(IpFamily.IPv4, partial: false);
        new IptablesMetrics(metrics).RestoreFailed(IpFamily.IPv4, partial: true);
        new IptablesMetrics(metrics).RestoreFailed(IpFamily.IPv6, partial: true);

        var text = await metrics.ExportTextAsync();

        Assert.Equal(2, Sample(text, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv4\"}"));
        Assert.Equal(1, Sample(text, "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures_total{ip_family=\"IPv4\"}"));
        Assert.Equal(1, Sample(text, "kubeproxy_sync_proxy_rules_iptables_restore_failures_total{ip_family=\"IPv6\"}"));
    }

    private static double Sample(string text, string series)
    {
        var lines = text.Split('\n').Where(l => l.StartsWith(series + " ", StringComparison.Ordinal)).ToArray();
        Assert.True(lines.Length == 1, $"expected one sample '{series}' in:\n{text}");
        return double.Parse(lines[0][(series.Length + 1)..], CultureInfo.InvariantCulture);
    }
}
