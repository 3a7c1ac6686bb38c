using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

public sealed class IptablesBackendTests
{
    /// <summary>
    /// As kube-proxy's one proxier per family: one family's restore refused leaves the other's rules
    /// programmed (whichever comes first), and the failure names the family that was applied.
    /// </summary>
    [Theory]
    [InlineData(IpFamily.IPv4, IpFamily.IPv6)]
    [InlineData(IpFamily.IPv6, IpFamily.IPv4)]
    public async Task Sync_OneFamilyRefused_TheOtherIsProgrammed_AndNamedApplied(IpFamily refused, IpFamily other)
    {
        var (initial, _) = await new GoldenCase("dual-stack").SyncRequestsAsync();
        var fakes = new Dictionary<IpFamily, FakeIptables> { [IpFamily.IPv4] = new(IpFamily.IPv4), [IpFamily.IPv6] = new(IpFamily.IPv6) };
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(fakes.Select(f => (f.Key, (IIptablesApplier)f.Value)), metrics, NullLogger.Instance);
        fakes[refused].FailWhen = _ => new InvalidOperationException("refused (test)");

        var failure = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(initial, default));

        Assert.Equal([other], failure.AppliedFamilies);
        Assert.Contains(refused == IpFamily.IPv4 ? "iptables-restore" : "ip6tables-restore", failure.Message);
        Assert.Contains(":KUBE-SVC-", fakes[other].Save("nat"));
        Assert.DoesNotContain(":KUBE-SVC-", fakes[refused].Save("nat"));
        Assert.NotNull(backend.LastPlan(other));
        Assert.Null(backend.LastPlan(refused));
    }
}
