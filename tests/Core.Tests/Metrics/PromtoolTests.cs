using System.Diagnostics.Metrics;
using ProxyPlanes.Core.Metrics;
using ProxyPlanes.TestKit;
using static ProxyPlanes.Core.Tests.Metrics.MetricsTestHelpers;

namespace ProxyPlanes.Core.Tests.Metrics;

/// <summary>Validates the exposition text with the real <c>promtool check metrics</c>.</summary>
public class PromtoolTests
{
    [Fact]
    public async Task PromtoolCheckMetrics_ProxyMetricsAfterRecording_OnlyKnownTotalGaugeLint()
    {
        using var metrics = new ProxyMetrics();
        using var exporter = new PrometheusExporter([metrics.Meter], includeProcessMetrics: true);
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
        metrics.SetIptablesRules("filter", 12, 3);
        metrics.SetIptablesRules("nat", 345, 20);
        metrics.IptablesRestoreFailed(partial: true);
        metrics.SetNoLocalEndpoints(ProxyMetrics.TrafficPolicyExternal, 1);
        metrics.SyncFailed("iptables");
        metrics.NftablesSyncFailed();
        metrics.NftablesCleanupFailed();
        string text = exporter.Scrape();

        PromtoolReport result = await Promtool.CheckMetricsAsync(text);

        Assert.True(result.AcceptedApartFromKnownLints, $"{result}\ninput:\n{text}");
        Assert.Equal(Promtool.KnownLints.Order(StringComparer.Ordinal), result.Complaints.Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task PromtoolCheckMetrics_GenericInstrumentsWithEscapingAndObservables_Clean()
    {
        using var meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("demo_requests_total", null, "Requests with \"quotes\" and \\ backslash\nnewline")
            .Add(3, new KeyValuePair<string, object?>("path", "a\\b \"c\"\nd"));
        meter.CreateUpDownCounter<int>("demo_inflight", null, "In flight").Add(-1);
        meter.CreateGauge<double>("demo_temperature_celsius", null, "Temperature").Record(double.NaN);
        meter.CreateObservableGauge("demo_ratio", () => double.PositiveInfinity, null, "Ratio");
        meter.CreateObservableCounter("demo_ticks_total", () => 1e21, null, "Ticks");
        meter.CreateHistogram("demo_latency_seconds", "s", "Latency", null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [1e-6, 0.5, 1e7] })
            .Record(0.25, new KeyValuePair<string, object?>("op", "get"));
        meter.CreateHistogram<double>("demo_idle_seconds", "s", "Idle");

        string text = exporter.Scrape();
        PromtoolReport result = await Promtool.CheckMetricsAsync(text);

        Assert.True(result.ExitCode == 0 && result.Complaints.Count == 0, $"{result}\ninput:\n{text}");
    }

    [Fact]
    public async Task PromtoolCheckMetrics_MalformedInput_Rejected()
    {
        // Guards the harness itself: a parse error must not be mistaken for success.
        PromtoolReport result = await Promtool.CheckMetricsAsync("# TYPE broken counter\nbroken{ 1\n");

        Assert.NotEqual(0, result.ExitCode);
    }
}
