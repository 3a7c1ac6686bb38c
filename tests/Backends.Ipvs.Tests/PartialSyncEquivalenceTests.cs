using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// A partial sync on top of earlier syncs must leave exactly the kernel a fresh full sync of the new
/// state builds. Checked on the in-memory kernel (which refuses what the kernel would refuse), for
/// every testdata case with an update and for long random sequences of changes.
/// </summary>
public sealed class PartialSyncEquivalenceTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];
    private static readonly DateTimeOffset Now = IpvsPlannerGoldenTests.Now;

    public static IEnumerable<object[]> CasesWithUpdate() =>
        GoldenCase.All().Where(c => File.Exists(Path.Combine(GoldenCase.TestData, (string)c[0], "update.yaml")));

    private static IpvsPlanner Planner() => new(new IpvsPlannerOptions { Families = Families });

    /// <summary>One sync as the backend runs it: a full one reads the kernel, a partial one the destinations it touches.</summary>
    internal static async Task<IpvsPlan> SyncAsync(IpvsPlanner planner, FakeIpvsKernel kernel, SyncRequest request, IpvsPlannerState? previous, DateTimeOffset now)
    {
        IpvsPlan plan;
        if (request.Full || previous is null)
            plan = planner.Plan(request, previous, await kernel.ReadAsync(planner.Options.Families, default), now);
        else
            plan = planner.Plan(request, previous, null, now, await kernel.ReadDestinationsAsync(planner.ServersToInspect(request, previous), default));
        await kernel.ApplyAsync(plan.Operations, default);
        return plan;
    }

    private static async Task<string> FreshFullAsync(SyncRequest request)
    {
        var kernel = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        await SyncAsync(Planner(), kernel, request with { Full = true }, null, Now);
        return kernel.Dump();
    }

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task GoldenCase_PartialAfterFull_EqualsFreshFull(string caseName)
    {
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        var kernel = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        var planner = Planner();

        var first = await SyncAsync(planner, kernel, initial, null, Now);
        await SyncAsync(planner, kernel, update!, first.State, Now);

        Assert.Equal(await FreshFullAsync(update!), kernel.Dump());
    }

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task GoldenCase_FullSyncOverOldKernel_EqualsFreshFull(string caseName)
    {
        // The kernel still holds the old state (the proxy restarted): a full sync reads it and removes what is stale.
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        var kernel = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        await SyncAsync(Planner(), kernel, initial, null, Now);

        await SyncAsync(Planner(), kernel, update! with { Full = true }, null, Now);

        Assert.Equal(await FreshFullAsync(update!), kernel.Dump());
    }

    public static IEnumerable<object[]> Seeds() => Enumerable.Range(1, int.TryParse(Environment.GetEnvironmentVariable("IPVS_RANDOM_SEEDS"), out var n) ? n : 24).Select(i => new object[] { i });

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task RandomSequence_EveryPartialSync_EqualsFreshFull(int seed)
    {
        var cluster = new RandomCluster(seed);
        var kernel = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        var planner = Planner();
        IpvsPlannerState? state = null;
        DesiredState? previous = null;

        for (var step = 0; step < 60; step++)
        {
            cluster.Mutate();
            var desired = cluster.State(StateBuilder.Network);
            // Mostly partial syncs, sometimes a periodic full one (which reads the kernel back).
            var full = previous is null || step % 17 == 0;
            var request = full ? StateBuilder.Full(desired) : new SyncRequest(desired, false, StateBuilder.Changed(previous!, desired));
            try
            {
                state = (await SyncAsync(planner, kernel, request, state, Now.AddMinutes(step))).State;
            }
            catch (IpvsKernelException e)
            {
                Assert.Fail($"seed {seed} step {step}: {e.Message}");
            }

            var fresh = await FreshFullAsync(StateBuilder.Full(desired));
            Assert.True(fresh == kernel.Dump(), $"seed {seed} step {step}:\nexpected\n{fresh}\nactual\n{kernel.Dump()}");
            previous = desired;
        }
    }

    [Fact]
    public async Task PartialSync_OneServiceChanged_TouchesOnlyItsServers()
    {
        var cluster = new RandomCluster(42);
        for (var i = 0; i < 12; i++) cluster.Mutate();
        var before = cluster.State(StateBuilder.Network);
        var kernel = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        var planner = Planner();
        var first = await SyncAsync(planner, kernel, StateBuilder.Full(before), null, Now);
        var name = first.State.Ports.OrderBy(p => p.Key).First(p => p.Value.Servers.Count > 1).Key;
        var owned = first.State.Ports[name].Servers.Select(s => s.Definition.Key).ToHashSet();
        var changed = before with { ServicePorts = before.ServicePorts.Remove(name) };

        var partial = planner.Plan(StateBuilder.Partial(changed, name), first.State, null, Now);

        var touched = partial.Operations.Select(o => o switch
        {
            DeleteService d => d.Key,
            AddService a => a.Server.Key,
            EditService e => e.Server.Key,
            AddDestination a => a.Service,
            EditDestination e => e.Service,
            DeleteDestination d => d.Service,
            _ => (VirtualServerKey?)null,
        }).OfType<VirtualServerKey>().ToHashSet();
        Assert.NotEmpty(touched);
        Assert.Subset(owned, touched);
    }
}
