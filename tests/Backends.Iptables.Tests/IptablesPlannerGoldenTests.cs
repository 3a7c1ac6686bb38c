using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

public sealed class IptablesPlannerGoldenTests
{
    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    public static IEnumerable<object[]> CasesWithUpdate() => GoldenCase.WithUpdate();

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullSync_MatchesGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, _) = await golden.SyncRequestsAsync();

        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(initial, previous: null, KernelTables.Empty);
        golden.AssertGolden("iptables.golden", plan.ToString());

        // Dual-stack cases also have the IPv6 half, for ip6tables.
        if (initial.State.ServicePorts.Values.Any(p => p.Info.ClusterIPs.Any(ip => ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6)))
            golden.AssertGolden("ip6tables.golden", new IptablesPlanner(IpFamily.IPv6).Plan(initial, previous: null, KernelTables.Empty).ToString());
    }

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task Plan_PartialSyncAfterUpdate_MatchesGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, update) = await golden.SyncRequestsAsync();
        Assert.NotNull(update);

        var planner = new IptablesPlanner(IpFamily.IPv4);
        var first = planner.Plan(initial, previous: null, KernelTables.Empty);
        var partial = planner.Plan(update, first.State, KernelTables.Empty);

        Assert.False(update.Full);
        golden.AssertGolden("iptables-partial.golden", partial.ToString());
    }
}
