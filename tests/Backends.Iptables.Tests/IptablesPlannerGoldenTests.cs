using ProxyPlanes.Core.Proxy;

namespace ProxyPlanes.Backends.Iptables.Tests;

public sealed class IptablesPlannerGoldenTests
{
    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullSync_MatchesGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, _) = await golden.SyncRequestsAsync();

        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(initial, previous: null, KernelTables.Empty);

        golden.AssertGolden("iptables.golden", plan.ToString());
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_PartialSyncAfterUpdate_MatchesGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, update) = await golden.SyncRequestsAsync();
        if (update is null) return; // this case has no update step

        var planner = new IptablesPlanner(IpFamily.IPv4);
        var first = planner.Plan(initial, previous: null, KernelTables.Empty);
        var partial = planner.Plan(update, first.State, KernelTables.Empty);

        Assert.False(update.Full);
        golden.AssertGolden("iptables-partial.golden", partial.ToString());
    }
}
