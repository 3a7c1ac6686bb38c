using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>
/// The planner's transactions for every testdata case: nft.golden (the first, full sync) and,
/// where the case has update.yaml, nft-partial.golden (the partial sync after it). Each file is
/// exactly what `nft -f -` receives: the IPv4 transaction, then the IPv6 one when the case has
/// IPv6 services. Regenerate with UPDATE_GOLDEN=1 and review the diff.
/// </summary>
public sealed class NftablesPlannerGoldenTests
{
    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    public static IEnumerable<object[]> CasesWithUpdate() => GoldenCase.WithUpdate();

    internal static IEnumerable<IpFamily> FamiliesOf(SyncRequest request) =>
        request.State.ServicePorts.Values.Any(p => p.Info.ClusterIPs.Any(ip => NodeAddresses.FamilyOf(ip) == IpFamily.IPv6))
            ? [IpFamily.IPv4, IpFamily.IPv6]
            : [IpFamily.IPv4];

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullSync_MatchesGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, _) = await golden.SyncRequestsAsync();

        var text = string.Concat(FamiliesOf(initial).Select(f => new NftablesPlanner(f).Plan(initial, previous: null, kernel: null).ToString()));

        golden.AssertGolden("nft.golden", text);
    }

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task Plan_PartialSyncAfterUpdate_MatchesGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, update) = await golden.SyncRequestsAsync();
        Assert.NotNull(update);
        Assert.False(update.Full);

        var text = string.Concat(FamiliesOf(initial).Select(f =>
        {
            var planner = new NftablesPlanner(f);
            var first = planner.Plan(initial, previous: null, kernel: null);
            return planner.Plan(update, first.State, kernel: null).ToString();
        }));

        golden.AssertGolden("nft-partial.golden", text);
    }
}
