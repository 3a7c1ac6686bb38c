using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// A full plan over our rules in place leaves out, as it writes them, the service ports' chains the kernel holds as
/// planned (<see cref="RuleWriter.LeaveOutUnchanged"/>), so the whole script is never held; what it then sends after
/// <see cref="RestoreDiff"/> must be, byte for byte, what the cut of the whole script sends, with the same counts.
/// </summary>
public sealed class LeftOutWhileWrittenTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    /// <summary>The kernel as the backend reads it for a full sync: chain names, built-in rules, every chain's digest.</summary>
    private static async Task<KernelTables> ReadAsync(FakeIptables fake)
    {
        ChainDigests nat = new(), filter = new();
        var natTable = await IptablesSave.ReadTableAsync(fake, "nat", default, nat);
        var filterTable = IptablesSave.ParseTable(fake.Save("filter"), filter);
        return IptablesSave.Kernel(natTable, filterTable) with
        {
            Digests = new Dictionary<string, ChainDigests>(StringComparer.Ordinal) { ["nat"] = nat, ["filter"] = filter },
        };
    }

    /// <summary>The cut sent both ways: left out while written then cut, and the whole script cut.</summary>
    private static (RestoreDiff Now, int LeftOut, RestoreDiff Whole) Cuts(IpFamily family, DesiredState state, KernelTables kernel)
    {
        var plan = new IptablesPlanner(family).Plan(StateBuilder.Full(state), null, kernel);
        var whole = new IptablesPlanner(family).Plan(StateBuilder.Full(state), null, kernel with { Digests = null });
        Assert.Equal(0, whole.ChainsLeftOut);
        Assert.True(plan.Script.Length + (plan.ChainsLeftOut > 0 ? 1 : 0) <= whole.Script.Length);
        return (RestoreDiff.Of(plan.Script, kernel.Digests!), plan.ChainsLeftOut, RestoreDiff.Of(whole.Script, kernel.Digests!));
    }

    private static void AssertSameCut((RestoreDiff Now, int LeftOut, RestoreDiff Whole) cut, string context)
    {
        var (now, leftOut, whole) = cut;
        Assert.True(whole.Script.ToString() == now.Script.ToString(), $"{context}: expected\n{whole.Script}\nactual\n{now.Script}");
        Assert.Equal(whole.Script.Length, now.Script.Length);
        Assert.True(whole.ChainsUnchanged == now.ChainsUnchanged + leftOut, $"{context}: chains unchanged {whole.ChainsUnchanged}, left out {leftOut} + cut {now.ChainsUnchanged}");
        Assert.Equal(whole.RulesWritten.OrderBy(r => r.Key), now.RulesWritten.OrderBy(r => r.Key));
    }

    /// <summary>
    /// Random clusters: the kernel holds what a full sync of one state wrote, the plan is of the state a few changes
    /// later (some chains equal, some changed, added or gone), and one chain of ours was changed from outside.
    /// </summary>
    [Theory]
    [InlineData(21)]
    [InlineData(22)]
    [InlineData(23)]
    public async Task RandomClusters_LeftOutWhileWritten_SendsWhatTheWholeScriptsCutSends(int seed)
    {
        var cluster = new RandomCluster(seed, changeFamilies: true);
        var leftOut = 0;
        for (var round = 0; round < 12; round++)
        {
            for (var i = 0; i < 6; i++) cluster.Mutate();
            var before = cluster.State(StateBuilder.Network);
            cluster.Mutate();
            var after = cluster.State(StateBuilder.Network);
            foreach (var family in Families)
            {
                var fake = new FakeIptables(family);
                await fake.RestoreAsync(new IptablesPlanner(family).Plan(StateBuilder.Full(before), null, KernelTables.Empty).Script.ToString(), default);
                // A rule added behind our back to one endpoint chain: that chain differs from the plan.
                var sep = fake.Save("nat").Split('\n').FirstOrDefault(l => l.StartsWith(":KUBE-SEP-", StringComparison.Ordinal));
                if (sep is not null && round % 2 == 0) await fake.RestoreAsync($"*nat\n-A {sep[1..sep.IndexOf(' ')]} -j RETURN\nCOMMIT\n", default);

                var cut = Cuts(family, after, await ReadAsync(fake));

                AssertSameCut(cut, $"seed {seed} round {round} {family}");
                leftOut += cut.LeftOut;
            }
        }
        Assert.True(leftOut > 100, $"only {leftOut} chains left out while written");
    }

    /// <summary>Every golden case: the kernel holds the case's first state, the plan is of its update (or of the same state).</summary>
    [Theory]
    [MemberData(nameof(GoldenCase.All), MemberType = typeof(GoldenCase))]
    public async Task GoldenCase_LeftOutWhileWritten_SendsWhatTheWholeScriptsCutSends(string caseName)
    {
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        foreach (var family in Families)
        {
            var fake = new FakeIptables(family);
            await fake.RestoreAsync(new IptablesPlanner(family).Plan(initial with { Full = true }, null, KernelTables.Empty).Script.ToString(), default);
            var kernel = await ReadAsync(fake);

            AssertSameCut(Cuts(family, initial.State, kernel), $"{caseName} {family} (same state)");
            if (update is not null) AssertSameCut(Cuts(family, update.State, kernel), $"{caseName} {family} (update)");
        }
    }

    /// <summary>Nothing differs: every service port's chain is left out as written, and the cut sends nothing.</summary>
    [Fact]
    public async Task SameState_EveryServiceChainLeftOut_NothingSent()
    {
        var cluster = new RandomCluster(5);
        for (var i = 0; i < 10; i++) cluster.Mutate();
        var state = cluster.State(StateBuilder.Network);
        var fake = new FakeIptables(IpFamily.IPv4);
        var cold = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(state), null, KernelTables.Empty);
        await fake.RestoreAsync(cold.Script.ToString(), default);

        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(state), null, await ReadAsync(fake));

        Assert.Equal(cold.State.Totals.OwnChains, plan.ChainsLeftOut);
        Assert.DoesNotContain(":KUBE-SEP-", plan.Script.ToString());
        Assert.True(RestoreDiff.Of(plan.Script, (await ReadAsync(fake)).Digests!).Script.IsEmpty);
    }
}
