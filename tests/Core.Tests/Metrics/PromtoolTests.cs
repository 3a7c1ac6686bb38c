using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Core.Tests.Metrics;

/// <summary>Validates the exposition text with the real <c>promtool check metrics</c>.</summary>
public class PromtoolTests
{
    [Fact]
    public async Task PromtoolCheckMetrics_ProxyMetricsAfterRecording_OnlyKnownTotalGaugeLint()
    {
        using var metrics = new ProxyMetrics();
        metrics.RecordSync(TimeSpan.FromMilliseconds(12), full: true, "iptables");
        metrics.RecordSync(TimeSpan.FromMilliseconds(2), full: false, "iptables");
        metrics.RecordPhase(ProxyMetrics.PhasePlan, "iptables", TimeSpan.FromMilliseconds(1));
        metrics.RecordPhase(ProxyMetrics.PhaseRender, "iptables", TimeSpan.FromMilliseconds(3));
        metrics.RecordPhase(ProxyMetrics.PhaseApply, "iptables", TimeSpan.FromMilliseconds(8));
        metrics.RecordNetworkProgramming(TimeSpan.FromSeconds(1.5));
        metrics.SetLastSyncTimestamp(DateTimeOffset.UtcNow);
        metrics.SetLastQueuedTimestamp(DateTimeOffset.UtcNow);
        metrics.SetPendingChanges(1, 2);
        metrics.AddChanges(3, 4);
        metrics.SetChangesApplied(7);
        metrics.SetNoLocalEndpoints(IpFamily.IPv4, ProxyMetrics.TrafficPolicyExternal, 1);
        metrics.ConntrackReconciled(IpFamily.IPv4, TimeSpan.FromMilliseconds(2), 3);
        metrics.SyncFailed("iptables");
        metrics.FullSyncStarted("start");
        var text = await metrics.ExportTextAsync();

        var result = await Promtool.CheckMetricsAsync(text);

        Assert.True(result.AcceptedApartFromKnownLints, $"{result}\ninput:\n{text}");
        // The mode-neutral gauge kube-proxy names ..._total; the iptables one is the iptables data plane's.
        Assert.Equal(
            ["kubeproxy_sync_proxy_rules_no_local_endpoints_total non-counter metrics should not have \"_total\" suffix"],
            result.Complaints);
    }

    [Fact]
    public async Task PromtoolCheckMetrics_MalformedInput_Rejected()
    {
        // Guards the harness itself: a parse error must not be mistaken for success.
        var result = await Promtool.CheckMetricsAsync("# TYPE broken counter\nbroken{ 1\n");

        Assert.NotEqual(0, result.ExitCode);
    }
}
