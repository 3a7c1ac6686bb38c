using System.Net;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// The planner's output for every testdata case: ipvs.golden holds the first, full sync into an
/// empty kernel and, where the case has update.yaml, the partial sync after it. Each is a script
/// doing the same by hand (ip, ipvsadm, ipset restore, iptables-restore). Regenerate with
/// UPDATE_GOLDEN=1 and review the diff.
/// </summary>
public sealed class IpvsPlannerGoldenTests
{
    /// <summary>The node the golden cases run on: the conformance topology's addresses.</summary>
    public static readonly IPAddress[] NodeIPs = [IPAddress.Parse("203.0.113.1"), IPAddress.Parse("2001:db8::1")];

    public static readonly DateTimeOffset Now = new(2025, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    internal static IpFamily[] FamiliesOf(SyncRequest request) =>
        request.State.ServicePorts.Values.Any(p => p.Info.ClusterIPs.Any(ip => NodeAddresses.FamilyOf(ip) == IpFamily.IPv6))
            ? [IpFamily.IPv4, IpFamily.IPv6]
            : [IpFamily.IPv4];

    internal static (IpvsPlan Full, IpvsPlan? Partial) PlanCase(SyncRequest initial, SyncRequest? update)
    {
        var planner = new IpvsPlanner(new IpvsPlannerOptions { Families = FamiliesOf(initial) });
        var full = planner.Plan(initial, null, IpvsKernelView.Empty(NodeIPs), Now);
        var partial = update is null ? null : planner.Plan(update, full.State, null, Now.AddSeconds(1));
        return (full, partial);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullAndPartial_MatchGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, update) = await golden.SyncRequestsAsync();
        if (update is not null) Assert.False(update.Full);

        var (full, partial) = PlanCase(initial, update);

        var text = full.ToString();
        if (partial is not null) text += "\n# partial sync after update.yaml\n" + partial;
        golden.AssertGolden("ipvs.golden", text);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullSyncAppliedToFakeKernel_IsAccepted(string caseName)
    {
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        var (full, partial) = PlanCase(initial, update);
        var kernel = new FakeIpvsKernel(NodeIPs);

        await kernel.ApplyAsync(full.Operations, default);
        if (partial is not null) await kernel.ApplyAsync(partial.Operations, default);

        Assert.True(kernel.LinkExists);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullSyncOverItsOwnResult_ChangesNothing(string caseName)
    {
        var (initial, _) = await new GoldenCase(caseName).SyncRequestsAsync();
        var families = FamiliesOf(initial);
        var planner = new IpvsPlanner(new IpvsPlannerOptions { Families = families });
        var kernel = new FakeIpvsKernel(NodeIPs);
        var first = planner.Plan(initial, null, await kernel.ReadAsync(families, default), Now);
        await kernel.ApplyAsync(first.Operations, default);

        var again = planner.Plan(initial, first.State, await kernel.ReadAsync(families, default), Now);

        // Only the helper rules are restored again (a full sync always rewrites them); no IPVS, address or ipset work.
        Assert.All(again.Operations, o => Assert.IsType<IptablesRestore>(o));
        Assert.DoesNotContain("-I ", string.Concat(again.Operations.Select(o => o.ToString())));
    }
}
