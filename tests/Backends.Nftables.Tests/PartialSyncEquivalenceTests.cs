using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>
/// A partial sync on top of earlier syncs must leave exactly what a fresh full sync of the new
/// state builds. Checked on the in-memory nftables (which also refuses any transaction the kernel
/// would refuse), for every testdata case with an update and for long random sequences.
/// </summary>
public sealed class PartialSyncEquivalenceTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    public static IEnumerable<object[]> CasesWithUpdate() =>
        GoldenCase.All().Where(c => File.Exists(Path.Combine(GoldenCase.TestData, (string)c[0], "update.yaml")));

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task GoldenCase_PartialAfterFull_EqualsFreshFull(string caseName)
    {
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();

        var incremental = new FakeNftables();
        foreach (var family in Families)
        {
            var planner = new NftablesPlanner(family);
            var first = planner.Plan(initial, null, await incremental.ReadAsync(family, NftNames.Table, default));
            incremental.Apply(first.Transaction);
            incremental.Apply(planner.Plan(update!, first.State, null).Transaction);
        }

        var fresh = FreshFull(update!);
        foreach (var family in Families) Assert.Equal(fresh.Dump(family), incremental.Dump(family));
    }

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task GoldenCase_FullSyncOverOldTable_EqualsFreshFull(string caseName)
    {
        // The table still holds the old state (e.g. the proxy restarted): a full sync reads it and removes what is stale.
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        var fake = new FakeNftables();
        foreach (var family in Families)
            fake.Apply(new NftablesPlanner(family).Plan(initial, null, null).Transaction);

        foreach (var family in Families)
            fake.Apply(new NftablesPlanner(family).Plan(update! with { Full = true }, null, await fake.ReadAsync(family, NftNames.Table, default)).Transaction);

        var fresh = FreshFull(update!);
        foreach (var family in Families) Assert.Equal(fresh.Dump(family), fake.Dump(family));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    [InlineData(7)]
    [InlineData(8)]
    public async Task RandomSequence_EveryPartialSync_EqualsFreshFull(int seed)
    {
        var cluster = new RandomCluster(seed);
        var network = StateBuilder.Network;
        var fake = new FakeNftables();
        var planners = Families.ToDictionary(f => f, f => new NftablesPlanner(f));
        var states = new Dictionary<IpFamily, NftPlannerState?>();
        DesiredState? previous = null;

        for (var step = 0; step < 60; step++)
        {
            cluster.Mutate();
            var state = cluster.State(network);
            // Mostly partial syncs, sometimes a periodic full one (which reads the table back).
            var full = previous is null || step % 17 == 0;
            var request = full ? StateBuilder.Full(state) : new SyncRequest(state, false, StateBuilder.Changed(previous!, state));
            foreach (var family in Families)
            {
                var kernel = full ? await fake.ReadAsync(family, NftNames.Table, default) : null;
                var plan = planners[family].Plan(request, full ? null : states[family], kernel);
                try
                {
                    fake.Apply(plan.Transaction);
                }
                catch (NftException e)
                {
                    Assert.Fail($"seed {seed} step {step} {family}: {e.Message}\n{plan.Transaction}");
                }
                states[family] = plan.State;
                var counts = fake.Count(family);
                Assert.Equal((plan.Counts.Chains, plan.Counts.Rules, plan.Counts.Sets, plan.Counts.Elements), counts);
            }

            var fresh = FreshFull(StateBuilder.Full(state));
            foreach (var family in Families)
                Assert.True(fresh.Dump(family) == fake.Dump(family), $"seed {seed} step {step} {family}:\nexpected\n{fresh.Dump(family)}\nactual\n{fake.Dump(family)}");
            previous = state;
        }
    }

    [Fact]
    public void RandomSequence_PartialSyncs_TouchOnlyWhatChanged()
    {
        // A partial sync of one changed service never rewrites another service's chains.
        var cluster = new RandomCluster(42);
        for (var i = 0; i < 10; i++) cluster.Mutate();
        var before = cluster.State(StateBuilder.Network);
        var planner = new NftablesPlanner(IpFamily.IPv4);
        var first = planner.Plan(StateBuilder.Full(before), null, null);
        var chains = first.Transaction.Operations.Select(o => o.Object).OfType<NftChain>().Select(c => c.Name).ToList();
        var name = first.State.Ports.Keys.Order().First(p => chains.Count(c => c.EndsWith("-" + NftNames.PortBase(p), StringComparison.Ordinal)) > 1);
        var changed = before with { ServicePorts = before.ServicePorts.Remove(name) };

        var partial = planner.Plan(StateBuilder.Partial(changed, name), first.State, null);

        var touched = partial.Transaction.Operations.Select(o => o.Object).OfType<NftChain>().Select(c => c.Name)
            .Concat(partial.Transaction.Operations.Select(o => o.Object).OfType<NftRule>().Select(r => r.Chain)).Distinct().ToList();
        Assert.NotEmpty(touched);
        Assert.All(touched, chain => Assert.Contains($"-ns/{name.Service.Name}/{NftNames.Protocol(name.Protocol)}/http", chain));
    }

    private static FakeNftables FreshFull(SyncRequest request)
    {
        var fake = new FakeNftables();
        foreach (var family in Families)
            fake.Apply(new NftablesPlanner(family).Plan(request with { Full = true }, null, null).Transaction);
        return fake;
    }
}
