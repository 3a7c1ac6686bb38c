using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// A partial sync through <see cref="IptablesBackend"/> on top of earlier syncs must leave exactly
/// the tables a fresh full sync of the new state builds, in both families. Checked on the checking
/// fake (<see cref="FakeIptables"/>, which refuses any script the kernel would refuse). The fakes'
/// saves are compared as text; the only normalisation is the save's own: user chains sorted by
/// name and every counter [0:0]. The order of rules inside a chain (built-in chains included) is compared.
/// </summary>
public sealed class PartialSyncEquivalenceTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    public static IEnumerable<object[]> CasesWithUpdate() =>
        GoldenCase.All().Where(c => File.Exists(Path.Combine(GoldenCase.TestData, (string)c[0], "update.yaml")));

    private sealed class Node : IDisposable
    {
        public Dictionary<IpFamily, FakeIptables> Tables { get; } = Families.ToDictionary(f => f, f => new FakeIptables(f));
        public ProxyMetrics Metrics { get; } = new();
        public IptablesBackend Backend { get; }

        public Node() => Backend = new IptablesBackend(Families.Select(f => (f, (IIptablesApplier)Tables[f])), Metrics, NullLogger.Instance);

        public string Dump(IpFamily family) => Tables[family].Dump();

        public void Dispose() => Metrics.Dispose();
    }

    private static async Task<Node> FreshFullAsync(SyncRequest request)
    {
        var node = new Node();
        await node.Backend.SyncAsync(request with { Full = true }, default);
        return node;
    }

    private static async Task AssertEqualsFreshFullAsync(SyncRequest request, Node node, string context)
    {
        using var fresh = await FreshFullAsync(request);
        foreach (var family in Families)
        {
            Assert.True(fresh.Dump(family) == node.Dump(family), $"{context} {family}:\nexpected\n{fresh.Dump(family)}\nactual\n{node.Dump(family)}");
            // The rule totals (kubeproxy_sync_proxy_rules_iptables_total) count what the kernel holds, however it got there.
            if (node.Backend.LastPlan(family) is { } plan && fresh.Backend.LastPlan(family) is { } expected)
                Assert.True((expected.NatRulesTotal, expected.FilterRulesTotal) == (plan.NatRulesTotal, plan.FilterRulesTotal), $"{context} {family}: rule totals");
        }
    }

    [Theory]
    [MemberData(nameof(CasesWithUpdate))]
    public async Task GoldenCase_PartialAfterFull_EqualsFreshFull(string caseName)
    {
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        using var node = new Node();
        await node.Backend.SyncAsync(initial, default);
        var restoresBefore = node.Tables.Values.Sum(t => t.Applied);

        await node.Backend.SyncAsync(update!, default);

        Assert.False(update!.Full);
        Assert.True(node.Tables.Values.Sum(t => t.Applied) > restoresBefore, "the partial sync restored nothing");
        Assert.True(node.Backend.LastPlan(IpFamily.IPv4)!.Delta, "the partial sync did not send a delta");
        await AssertEqualsFreshFullAsync(update, node, caseName);
    }

    [Fact]
    public async Task Canary_WrittenByFullSyncs_GoneWhenAnyFamilyOrTableLosesIt()
    {
        var state = StateBuilder.State(null, StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), [StateBuilder.Endpoint("10.244.1.2")]));
        using var node = new Node();
        Assert.False(await node.Backend.CanaryIntactAsync(default)); // nothing written yet
        await node.Backend.SyncAsync(StateBuilder.Full(state), default);
        Assert.True(await node.Backend.CanaryIntactAsync(default));

        foreach (var (family, table) in new[] { (IpFamily.IPv6, "filter"), (IpFamily.IPv4, "nat") })
        {
            // A flush from outside empties the chain: a chain without its rule is no canary.
            node.Tables[family].Restore($"*{table}\n:{ChainNames.Canary} - [0:0]\nCOMMIT\n");
            Assert.False(await node.Backend.CanaryIntactAsync(default), $"{family} {table}");
            // A partial sync does not write it again: only the full sync the check triggers does.
            await node.Backend.SyncAsync(StateBuilder.Partial(state, StateBuilder.Name("web")), default);
            Assert.False(await node.Backend.CanaryIntactAsync(default));
            await node.Backend.SyncAsync(StateBuilder.Full(state), default);
            Assert.True(await node.Backend.CanaryIntactAsync(default));
        }
    }

    [Fact]
    public async Task PartialSync_DualStackPortLosesIPv6_RemovesItsIp6tablesRules()
    {
        var dual = StateBuilder.Info("web", "10.96.0.10,fd00:10:96::10");
        var endpoints = new[] { StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("fd00:10:244:1::2") };
        var before = StateBuilder.State(null, StateBuilder.Port(dual, endpoints));
        var after = StateBuilder.State(null, StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), endpoints));
        using var node = new Node();
        await node.Backend.SyncAsync(StateBuilder.Full(before), default);
        Assert.Contains("fd00:10:96::10", node.Dump(IpFamily.IPv6)); // positive control

        await node.Backend.SyncAsync(StateBuilder.Partial(after, dual.Name), default);

        Assert.DoesNotContain("fd00:10:96::10", node.Dump(IpFamily.IPv6));
        Assert.DoesNotContain("KUBE-SVC-", node.Dump(IpFamily.IPv6));
        await AssertEqualsFreshFullAsync(StateBuilder.Full(after), node, "dual-stack → IPv4 only");
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
        var cluster = new RandomCluster(seed, changeFamilies: true);
        using var node = new Node();
        DesiredState? previous = null;
        var deltas = 0;

        for (var step = 0; step < 60; step++)
        {
            cluster.Mutate();
            var state = cluster.State(StateBuilder.Network);
            // Mostly partial syncs, sometimes a periodic full one (which reads the tables back).
            var full = previous is null || step % 17 == 0;
            var request = full ? StateBuilder.Full(state) : new SyncRequest(state, false, StateBuilder.Changed(previous!, state));
            try
            {
                var offered = node.Tables.ToDictionary(t => t.Key, t => t.Value.Offered.Count);
                await node.Backend.SyncAsync(request, default);
                // Every partial sync that restored something went the delta way: no shared chain flushed
                // (a family's first sync, when it gains its first service, is full: it writes the canary).
                foreach (var script in node.Tables.Values.SelectMany(t => t.Offered.Skip(offered[t.Family])).Where(s => !full && !s.Contains($":{ChainNames.Canary} ")))
                {
                    Assert.DoesNotContain($":{ChainNames.Services} ", script);
                    Assert.DoesNotContain($":{ChainNames.Services}-", script); // nor a shard of it
                    Assert.DoesNotContain($":{ChainNames.NodePorts} ", script);
                    deltas++;
                }
            }
            catch (BackendSyncException e)
            {
                Assert.Fail($"seed {seed} step {step}: {e.Message}\n{e.InnerException?.Message}");
            }
            await AssertEqualsFreshFullAsync(StateBuilder.Full(state), node, $"seed {seed} step {step}");
            previous = state;
        }
        Assert.True(deltas > 20, $"only {deltas} delta restores in the sequence");
    }

    [Fact]
    public async Task DeltaRefused_RuleDeletedBehindOurBack_OldRulesStay_NextSyncIsFullAndRepairs()
    {
        var web = StateBuilder.Info("web", "10.96.0.10");
        var api = StateBuilder.Info("api", "10.96.0.11");
        var both = StateBuilder.State(null, StateBuilder.Port(web, [StateBuilder.Endpoint("10.244.1.2")]), StateBuilder.Port(api, [StateBuilder.Endpoint("10.244.1.3")]));
        var apiOnly = StateBuilder.State(null, StateBuilder.Port(api, [StateBuilder.Endpoint("10.244.1.3")]));
        using var node = new Node();
        await node.Backend.SyncAsync(StateBuilder.Full(both), default);
        var ipv4 = node.Tables[IpFamily.IPv4];
        // Someone deletes web's KUBE-SERVICES rule: the delta that removes web cannot delete it again.
        var webRule = ipv4.Save("nat").Split('\n').Single(l => l.StartsWith($"-A {ChainNames.Services}-", StringComparison.Ordinal) && l.Contains("ns/web:http"));
        ipv4.Restore($"*nat\n-D{webRule[2..]}\nCOMMIT\n");
        var before = ipv4.Dump();

        var refused = await Assert.ThrowsAsync<BackendSyncException>(() => node.Backend.SyncAsync(StateBuilder.Partial(apiOnly, web.Name), default));

        Assert.Contains("refused the partial (delta) sync", refused.Message);
        Assert.Equal(before, ipv4.Dump()); // web's chains are still there: nothing of the delta applied
        Assert.Contains(ChainNames.ClusterPolicy(web.Name), before);

        // The retry (the controller asks for a partial sync; the backend has forgotten its state) is full.
        await node.Backend.SyncAsync(StateBuilder.Partial(apiOnly, web.Name), default);
        Assert.False(node.Backend.LastPlan(IpFamily.IPv4)!.Delta);
        // Full, over rules in place: only what differs from the kernel is sent (web's chains deleted, its
        // shard rewritten), not the unchanged canary.
        Assert.Contains($"-X {ChainNames.ClusterPolicy(web.Name)}", ipv4.Offered[^1]);
        Assert.DoesNotContain($":{ChainNames.Canary} ", ipv4.Offered[^1]);
        Assert.DoesNotContain(ChainNames.ClusterPolicy(web.Name), ipv4.Dump());
        await AssertEqualsFreshFullAsync(StateBuilder.Full(apiOnly), node, "after the repair");
    }

    [Fact]
    public async Task PartialSync_OnlyOwnChainsChange_SharedChainsUntouched_NothingForTheOtherTable()
    {
        var web = StateBuilder.Info("web", "10.96.0.10");
        var state = StateBuilder.State(null, StateBuilder.Port(web, [StateBuilder.Endpoint("10.244.1.2")]));
        var moreEndpoints = StateBuilder.State(null, StateBuilder.Port(web, [StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.1.3")]));
        using var node = new Node();
        await node.Backend.SyncAsync(StateBuilder.Full(state), default);

        await node.Backend.SyncAsync(StateBuilder.Partial(moreEndpoints, web.Name), default);

        var script = node.Tables[IpFamily.IPv4].Offered[^1];
        Assert.DoesNotContain("*filter", script);
        Assert.DoesNotContain(ChainNames.Services, script);
        Assert.Contains(ChainNames.ClusterPolicy(web.Name), script);
        await AssertEqualsFreshFullAsync(StateBuilder.Full(moreEndpoints), node, "endpoint added");
    }
}
