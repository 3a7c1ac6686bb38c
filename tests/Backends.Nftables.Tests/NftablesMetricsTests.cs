using System.Globalization;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.TestKit;
using static ProxyPlanes.Backends.Nftables.Tests.StateBuilder;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>The nftables data plane registers its own metrics on the shared registry and moves them.</summary>
public sealed class NftablesMetricsTests
{
    private static DesiredState Cluster(params string[] endpoints) =>
        State(null, Port(Info("web", "10.96.0.10,fd00:10:96::10"), endpoints.Select(e => Endpoint(e)).ToArray()));

    [Fact]
    public async Task Sync_Both_Families_ObjectGaugesEqualTheTablesCounts()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4, IpFamily.IPv6], fake, metrics, NullLogger.Instance);
        var before = await metrics.ExportTextAsync();

        await backend.SyncAsync(Full(Cluster("10.244.1.2", "10.244.1.3", "fd00:10:244:1::2")), default);
        var text = await metrics.ExportTextAsync();

        Assert.DoesNotContain("proxyplanes_nftables_objects{", before); // no series before the first sync
        Assert.DoesNotContain(NftablesMetrics.SyncFailuresTotal + "{", before); // no failure, no series (per family once one fails)
        var counts = backend.Counts;
        Assert.True(counts.Elements > 0);
        Assert.Equal(fake.Count(IpFamily.IPv4).Rules + fake.Count(IpFamily.IPv6).Rules, Sample(text, "proxyplanes_nftables_objects{kind=\"rules\"}"));
        Assert.Equal(counts.Chains, Sample(text, "proxyplanes_nftables_objects{kind=\"chains\"}"));
        Assert.Equal(counts.Sets, Sample(text, "proxyplanes_nftables_objects{kind=\"sets\"}"));
        Assert.Equal(counts.Elements, Sample(text, "proxyplanes_nftables_objects{kind=\"elements\"}"));
        Assert.DoesNotContain("iptables", text); // the iptables metrics belong to --mode=iptables only
    }

    [Fact]
    public async Task PromtoolCheckMetrics_AfterSync_OnlyTheKnownTotalGaugeLint()
    {
        using var metrics = new ProxyMetrics();
        await new NftablesBackend([IpFamily.IPv4], new FakeNftables(), metrics, NullLogger.Instance).SyncAsync(Full(Cluster("10.244.1.2")), default);
        var text = await metrics.ExportTextAsync();

        var result = await Promtool.CheckMetricsAsync(text);

        Assert.True(result.AcceptedApartFromKnownLints, $"{result}\ninput:\n{text}");
        Assert.Equal(
            ["kubeproxy_sync_proxy_rules_no_local_endpoints_total non-counter metrics should not have \"_total\" suffix"],
            result.Complaints);
    }

    private static double Sample(string text, string series)
    {
        var lines = text.Split('\n').Where(l => l.StartsWith(series + " ", StringComparison.Ordinal)).ToArray();
        Assert.True(lines.Length == 1, $"expected one sample '{series}' in:\n{text}");
        return double.Parse(lines[0][(series.Length + 1)..], CultureInfo.InvariantCulture);
    }
}
