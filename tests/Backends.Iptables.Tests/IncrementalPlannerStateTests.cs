using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// A partial sync visits only the changed ports and changes what the planner keeps of the others
/// (<see cref="IptablesPlannerState.SlotRules"/>, <see cref="IptablesPlannerState.Totals"/>) by them.
/// After every step of random sequences, that bookkeeping must equal what a full plan of the same
/// state computes from every port. (That the scripts leave the kernel as a full sync does is
/// <see cref="PartialSyncEquivalenceTests"/>.)
/// </summary>
public sealed class IncrementalPlannerStateTests
{
    [Theory]
    [InlineData(11)]
    [InlineData(12)]
    [InlineData(13)]
    [InlineData(14)]
    public void RandomSequence_PartialPlanState_EqualsFullPlanState(int seed)
    {
        var cluster = new RandomCluster(seed, changeFamilies: true);
        var planners = new[] { IpFamily.IPv4, IpFamily.IPv6 }.ToDictionary(f => f, f => new IptablesPlanner(f));
        var states = new Dictionary<IpFamily, IptablesPlannerState?> { [IpFamily.IPv4] = null, [IpFamily.IPv6] = null };
        DesiredState? previous = null;
        var deltas = 0;
        for (var step = 0; step < 80; step++)
        {
            cluster.Mutate();
            var state = cluster.State(StateBuilder.Network);
            var request = previous is null || step % 23 == 0 ? StateBuilder.Full(state) : new SyncRequest(state, false, StateBuilder.Changed(previous, state));
            foreach (var (family, planner) in planners)
            {
                var plan = planner.Plan(request, states[family], KernelTables.Empty);
                var expected = new IptablesPlanner(family).Plan(StateBuilder.Full(state), null, KernelTables.Empty);
                var context = $"seed {seed} step {step} {family}";
                AssertSameState(expected.State, plan.State, context);
                Assert.True((expected.NatRulesTotal, expected.FilterRulesTotal) == (plan.NatRulesTotal, plan.FilterRulesTotal), $"{context}: rule totals");
                if (plan.Delta)
                {
                    deltas++;
                    // Chains not rewritten: those of every port the sync did not change.
                    var unchanged = plan.State.Ports.Where(p => !request.ChangedPorts.Contains(p.Key)).Sum(p => p.Value.Nat.Length);
                    Assert.True(unchanged == plan.ChainsSkipped, $"{context}: chains skipped {plan.ChainsSkipped}, expected {unchanged}");
                }
                states[family] = plan.State;
            }
            previous = state;
        }
        Assert.True(deltas > 60, $"only {deltas} delta plans in the sequence");
    }

    [Fact]
    public void SlotRules_SeveralRulesOfOnePortInOneChain_CountedPerPort()
    {
        // Two external IPs in the same shard as the cluster IP (…10, …74, …138: the low 6 bits are equal).
        var info = StateBuilder.Info("web", "10.96.0.10") with { ExternalIPs = new([System.Net.IPAddress.Parse("192.0.2.74"), System.Net.IPAddress.Parse("192.0.2.138")]) };
        var state = StateBuilder.State(null, StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.2")));
        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(state), null, KernelTables.Empty);

        var shard = new SharedRule(SharedChain.NatServices, "", ChainNames.ShardOf(info.ClusterIPs[0])).Slot;
        Assert.Equal(3, plan.State.SlotRules[shard][info.Name]);
        Assert.Equal(3, plan.State.Totals.NatFrontendRules);
    }

    private static void AssertSameState(IptablesPlannerState expected, IptablesPlannerState actual, string context)
    {
        Assert.True(expected.Ports.Keys.Order().SequenceEqual(actual.Ports.Keys.Order()), $"{context}: ports");
        foreach (var (name, port) in expected.Ports)
        {
            Assert.True(port.Nat.SequenceEqual(actual.Ports[name].Nat), $"{context}: chains of {name}");
            Assert.True(port.Frontends.SequenceEqual(actual.Ports[name].Frontends), $"{context}: frontends of {name}");
        }
        Assert.True(expected.ServicesTail.SequenceEqual(actual.ServicesTail), $"{context}: tail");
        Assert.Equal(expected.Totals, actual.Totals);
        Assert.Equal(expected.SlotRules.Length, actual.SlotRules.Length);
        for (var slot = 0; slot < expected.SlotRules.Length; slot++)
            Assert.True(expected.SlotRules[slot].SequenceEqual(actual.SlotRules[slot]),
                $"{context}: slot {slot}: expected {string.Join(", ", expected.SlotRules[slot])}, actual {string.Join(", ", actual.SlotRules[slot])}");
    }
}
