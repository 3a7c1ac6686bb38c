using System.Collections.Immutable;
using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using static ProxyPlanes.Backends.Nftables.Tests.StateBuilder;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>Planner behaviour the golden files do not show on their own.</summary>
public sealed class NftablesPlannerTests
{
    private static readonly NftablesPlanner V4 = new(IpFamily.IPv4);

    private static ServicePortState Web(string name = "web", string ip = "10.96.0.10", params string[] endpoints) =>
        Port(Info(name, ip), endpoints.Select(e => Endpoint(e)).ToArray());

    [Fact]
    public void SharedExternalIP_FirstServiceWins_AndTheNextTakesOverWhenItGoes()
    {
        var extIP = new EquatableArray<IPAddress>([IPAddress.Parse("198.51.100.1")]);
        var a = Port(Info("a", "10.96.0.1") with { ExternalIPs = extIP }, Endpoint("10.244.1.2"));
        var b = Port(Info("b", "10.96.0.2") with { ExternalIPs = extIP }, Endpoint("10.244.1.3"));
        var fake = new FakeNftables();
        var first = V4.Plan(Full(State(null, a, b)), null, null);
        fake.Apply(first.Transaction);
        Assert.Contains($"198.51.100.1 . tcp . 80 comment \"{a.Name} external IP\" : goto {NftNames.External(a.Name)}", fake.Elements(IpFamily.IPv4, NftNames.ServiceIPs));

        var partial = V4.Plan(Partial(State(null, b), a.Name), first.State, null);
        fake.Apply(partial.Transaction);

        Assert.Contains($"198.51.100.1 . tcp . 80 comment \"{b.Name} external IP\" : goto {NftNames.External(b.Name)}", fake.Elements(IpFamily.IPv4, NftNames.ServiceIPs));
        Assert.Equal(2, fake.Elements(IpFamily.IPv4, NftNames.ServiceIPs).Count);
    }

    [Fact]
    public void PartialSync_EndpointAdded_WritesOnlyDataElements()
    {
        var before = State(null, Web(endpoints: ["10.244.1.2", "10.244.1.3"]));
        var after = State(null, Web(endpoints: ["10.244.1.2", "10.244.1.3", "10.244.1.4"]));
        var first = V4.Plan(Full(before), null, null);

        var partial = V4.Plan(Partial(after, Name("web")), first.State, null);

        // No chain, no rule, no verdict: the kernel does not re-validate the table's chains for it.
        Assert.All(partial.Transaction.Operations, o => Assert.IsType<NftElement>(o.Object));
        Assert.All(partial.Transaction.Operations, o => Assert.DoesNotContain(((NftElement)o.Object).Value ?? "", new[] { "goto", "jump", "drop", "accept" }));
        var id = first.State.PoolIds[NftNames.ClusterPolicy(Name("web"))];
        Assert.Equal([NftNames.EndpointSlotsMap("tcp", id), NftNames.HairpinEndpoints], partial.Transaction.Operations.Select(o => ((NftElement)o.Object).Set).Distinct().Order(StringComparer.Ordinal));
        Assert.Contains("10.244.1.4 . 8080", partial.ToString());
        Assert.All(partial.Transaction.Operations.Where(o => o.Verb == NftVerb.Add), o => Assert.NotNull(((NftElement)o.Object).Types));
    }

    [Fact]
    public void PartialSync_EndpointAddedWithAffinity_LeavesUnchangedChainsOfThePortAlone()
    {
        var info = Info("web", "10.96.0.10") with { StickyTimeoutSeconds = 60 };
        var first = V4.Plan(Full(State(null, Port(info, Endpoint("10.244.1.2"), Endpoint("10.244.1.3")))), null, null);

        var partial = V4.Plan(Partial(State(null, Port(info, Endpoint("10.244.1.2"), Endpoint("10.244.1.3"), Endpoint("10.244.1.4"))), Name("web")), first.State, null);

        var chains = partial.Transaction.Operations.Where(o => o.Object is NftChain).Select(o => ((NftChain)o.Object).Name).Distinct().ToList();
        Assert.Equal([NftNames.ClusterPolicy(Name("web")), NftNames.Endpoint(Name("web"), Endpoint("10.244.1.4"))], chains);
    }

    [Fact]
    public void SlotElements_SplitTheSlotsEvenly_AndKeepThePoolsRule()
    {
        var plan = V4.Plan(Full(State(null, Web(endpoints: ["10.244.1.2", "10.244.1.3", "10.244.1.4"]))), null, null);

        var slots = plan.Transaction.Operations.Select(o => o.Object).OfType<NftElement>().Where(e => NftNames.IsEndpointSlotsMap(e.Set)).ToList();
        var widths = slots.Select(e => e.KeyText.Split('-').Select(long.Parse).ToArray()).Select(r => r[1] - r[0] + 1).ToList();
        Assert.Equal([1365, 1365, 1366], widths.Order());
        Assert.Equal(NftablesPlanner.SlotsPerPool, widths.Sum());
        var id = plan.State.PoolIds[NftNames.ClusterPolicy(Name("web"))];
        Assert.Contains($"dnat ip to numgen random mod 4096 offset {(long)id * 4096} map @endpoint-slots-tcp-{id % 256:x2}", plan.ToString());
        Assert.Contains($"add map ip proxyplanes endpoint-slots-tcp-{id % 256:x2} {{ typeof numgen random mod 4096 : ip daddr . tcp dport ; flags interval ;", plan.ToString());
    }

    [Fact]
    public void PartialSync_LastPoolOfAShardGone_DeletesItsMap_FirstOneAddsIt()
    {
        var first = V4.Plan(Full(State(null, Web(endpoints: ["10.244.1.2"]))), null, null);
        var fake = new FakeNftables();
        fake.Apply(first.Transaction);
        var map = NftNames.EndpointSlotsMap("tcp", first.State.PoolIds[NftNames.ClusterPolicy(Name("web"))]);

        var empty = V4.Plan(Partial(State(null, Web(endpoints: [])), Name("web")), first.State, null);
        fake.Apply(empty.Transaction);
        Assert.DoesNotContain($"map {map} ", fake.Dump(IpFamily.IPv4));

        var back = V4.Plan(Partial(State(null, Web(endpoints: ["10.244.1.3"])), Name("web")), empty.State, null);
        fake.Apply(back.Transaction);
        Assert.Contains($"map {map} ", fake.Dump(IpFamily.IPv4));
        Assert.Contains("10.244.1.3 . 8080", fake.Dump(IpFamily.IPv4));
    }

    [Fact]
    public void AssignPoolIds_CollidingHashes_GetDistinctIdsThatDependOnlyOnThePools()
    {
        // 3,000 names in 2^20 ids: a few collide (about 4 expected), and each must get its own id.
        var names = Enumerable.Range(0, 3000).Select(i => $"service-HASH{i}-ns/svc{i}/tcp/p").ToList();

        var ids = NftablesPlanner.AssignPoolIds(names);
        var shuffled = NftablesPlanner.AssignPoolIds(Enumerable.Reverse(names));

        Assert.Equal(names.Count, ids.Values.Distinct().Count());
        Assert.All(ids.Values, id => Assert.InRange(id, 0u, NftablesPlanner.PoolIdCount - 1));
        Assert.Equal(ids.OrderBy(p => p.Key, StringComparer.Ordinal), shuffled.OrderBy(p => p.Key, StringComparer.Ordinal));
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void ReassignPoolIds_RandomChangesInACrowdedIdSpace_EqualsAssigningEveryPool(int seed)
    {
        // 64 ids for up to ~50 pools: long runs of taken ids, wrapping around, merging and splitting.
        const uint idCount = 64;
        var random = new Random(seed);
        uint Hash(string pool) => NftablesPlanner.PoolHash(pool) % idCount;
        var pools = Enumerable.Range(0, 30).Select(i => $"pool-{seed}-{i}").ToHashSet(StringComparer.Ordinal);
        var ids = NftablesPlanner.AssignPoolIds(pools, Hash, idCount);
        var byId = ids.ToImmutableDictionary(p => p.Value, p => p.Key);
        var next = 30;
        for (var step = 0; step < 200; step++)
        {
            var removed = pools.Where(_ => random.Next(20) == 0).ToList();
            var added = Enumerable.Range(0, random.Next(pools.Count - removed.Count < 50 ? 4 : 1)).Select(_ => $"pool-{seed}-{next++}").ToList();
            pools.ExceptWith(removed);
            pools.UnionWith(added);
            var before = ids;

            var moved = NftablesPlanner.ReassignPoolIds(ref ids, ref byId, removed, added, Hash, idCount);

            var expected = NftablesPlanner.AssignPoolIds(pools, Hash, idCount);
            Assert.Equal(expected.OrderBy(p => p.Key, StringComparer.Ordinal), ids.OrderBy(p => p.Key, StringComparer.Ordinal));
            Assert.Equal(expected.ToDictionary(p => p.Value, p => p.Key).OrderBy(p => p.Key), byId.OrderBy(p => p.Key));
            Assert.Equal(
                expected.Keys.Where(p => !before.TryGetValue(p, out var old) || old != expected[p]).Order(StringComparer.Ordinal),
                moved.Order(StringComparer.Ordinal));
        }
    }

    [Fact]
    public void PartialSync_NewAffinityTimeout_RecreatesTheSetsAndTheChainsUsingThem()
    {
        var info = Info("web", "10.96.0.10") with { StickyTimeoutSeconds = 60 };
        var first = V4.Plan(Full(State(null, Port(info, Endpoint("10.244.1.2")))), null, null);
        var fake = new FakeNftables();
        fake.Apply(first.Transaction);

        var partial = V4.Plan(Partial(State(null, Port(info with { StickyTimeoutSeconds = 30 }, Endpoint("10.244.1.2"))), Name("web")), first.State, null);
        fake.Apply(partial.Transaction);

        var affinity = NftNames.Affinity(Name("web"), Endpoint("10.244.1.2"));
        Assert.Contains(partial.Transaction.Operations, o => o.Verb == NftVerb.Delete && o.Object is NftSet s && s.Name == affinity);
        Assert.Contains($"set {affinity} {{ type ipv4_addr flags dynamic,timeout timeout 30s }}", fake.Dump(IpFamily.IPv4));
    }

    [Fact]
    public async Task FullSync_KeepsAffinitySetsContents_FlushesEverythingElse()
    {
        var info = Info("web", "10.96.0.10") with { StickyTimeoutSeconds = 60 };
        var state = State(null, Port(info, Endpoint("10.244.1.2")));
        var fake = new FakeNftables();
        fake.Apply(V4.Plan(Full(state), null, null).Transaction);

        var again = V4.Plan(Full(state), null, await fake.ReadAsync(IpFamily.IPv4, NftNames.Table, default));
        fake.Apply(again.Transaction);

        var flushedSets = again.Transaction.Operations.Where(o => o.Verb == NftVerb.Flush && o.Object is NftSet).Select(o => ((NftSet)o.Object).Name).ToList();
        Assert.DoesNotContain(flushedSets, s => s.StartsWith(NftNames.AffinityPrefix, StringComparison.Ordinal));
        Assert.Contains(NftNames.HealthCheckNodePorts, flushedSets);
        Assert.Contains(again.Transaction.Operations, o => o.Verb == NftVerb.Flush && o.Object is NftMap m && m.Name == NftNames.ServiceIPs);
    }

    [Fact]
    public async Task FullSync_DeletesStaleObjects_AndRecreatesChangedDefinitions()
    {
        var fake = new FakeNftables();
        // What an older proxy version might have left: a base chain at another priority, an
        // unknown chain and set, a map of another type, a set where a map is wanted (and the
        // reverse), and an old service chain with its element.
        fake.Apply(new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Add(new NftTable())
            .Add(new NftChain(NftNames.NatPrerouting) { Base = new NftBaseChain("nat", "prerouting", -50) })
            .Add(new NftChain("service-OLD-ns/old/tcp/http"))
            .Add(new NftChain("leftover"))
            .Add(new NftSet("affinity-OLD") { Type = new(["ipv4_addr"]), Flags = new(["dynamic", "timeout"]), TimeoutSeconds = 5 })
            .Add(new NftMap(NftNames.ServiceNodePorts) { Type = new(["inet_service"]), ValueType = "verdict" })
            .Add(new NftSet(NftNames.FirewallIPs) { Type = new(["ipv4_addr"]) })
            .Add(new NftMap(NftNames.HealthCheckNodePorts) { Type = new(["inet_service"]), ValueType = "verdict" })
            .Add(new NftMap(NftNames.ServiceIPs) { Type = new(["ipv4_addr", "inet_proto", "inet_service"]), ValueType = "verdict" })
            .Add(new NftRule(NftNames.NatPrerouting, "jump leftover"))
            .Add(new NftRule("leftover", "ip saddr @affinity-OLD goto service-OLD-ns/old/tcp/http"))
            .Add(new NftElement(NftNames.ServiceIPs, "10.96.9.9", "tcp", "80") { Value = "goto service-OLD-ns/old/tcp/http" }));
        var state = State(null, Web(endpoints: ["10.244.1.2"]));

        fake.Apply(V4.Plan(Full(state), null, await fake.ReadAsync(IpFamily.IPv4, NftNames.Table, default)).Transaction);

        var fresh = new FakeNftables();
        fresh.Apply(V4.Plan(Full(state), null, null).Transaction);
        Assert.Equal(fresh.Dump(IpFamily.IPv4), fake.Dump(IpFamily.IPv4));
    }

    [Fact]
    public void NoEndpoints_Rejects_LocalPolicyWithoutLocalEndpoints_Drops()
    {
        var nodePort = Info("np", "10.96.0.20") with { NodePort = 30020, ExternalPolicyLocal = true, ExternalIPs = new([IPAddress.Parse("198.51.100.20")]) };
        var state = State(null,
            Port(Info("none", "10.96.0.21")),
            Port(nodePort, Endpoint("10.244.2.2", local: false)));

        var plan = V4.Plan(Full(state), null, null);

        var elements = plan.Transaction.Operations.Select(o => o.Object).OfType<NftElement>().Select(e => $"{e.Set} {e with { Comment = null }}").ToList();
        Assert.Contains($"{NftNames.NoEndpointServices} 10.96.0.21 . tcp . 80 : goto {NftNames.RejectChain}", elements);
        // Each names its service port and frontend: an external IP and a load-balancer IP are otherwise the same element.
        Assert.Contains(plan.Transaction.Operations, o => o.Object is NftElement { Set: NftNames.NoEndpointServices } e && e.KeyText == "198.51.100.20 . tcp . 80" && e.Comment == $"{nodePort.Name} external IP");
        Assert.Contains($"{NftNames.NoEndpointNodePorts} tcp . 30020 : drop", elements);
        Assert.Contains($"{NftNames.NoEndpointServices} 198.51.100.20 . tcp . 80 : drop", elements);
        // Pods and the node itself are still short-circuited to the remote endpoint.
        Assert.Contains($"{NftNames.ServiceNodePorts} tcp . 30020 : goto {NftNames.External(nodePort.Name)}", elements);
        Assert.Contains(plan.Transaction.Operations, o => o.Object is NftRule r && r.Chain == NftNames.External(nodePort.Name) && r.Text == $"fib saddr type local goto {NftNames.ClusterPolicy(nodePort.Name)}");
    }

    [Fact]
    public void ElementComment_LongestServicePortName_IsShortenedToWhatNftTakes()
    {
        var longest = new ServicePortName(new NamespacedName(new string('n', 63), new string('s', 63)), new string('p', 15), Protocol.TCP);

        var comment = NftablesPlanner.ElementComment(longest, NftablesPlanner.LoadBalancerIPComment);

        Assert.Equal(Nft.CommentLengthMax, comment.Length);
        Assert.EndsWith("... loadbalancer IP", comment, StringComparison.Ordinal);
        // Positive control: the transaction takes it (it refuses a 129-byte comment).
        new NftTransaction(IpFamily.IPv4, "t").Add(new NftElement("m", "1.2.3.4") { Value = "drop", Comment = comment });
        Assert.Throws<NftException>(() => new NftTransaction(IpFamily.IPv4, "t").Add(new NftElement("m", "1.2.3.4") { Value = "drop", Comment = comment + "x" }));
    }

    [Fact]
    public void SourceRanges_AreNormalizedForIntervalSets()
    {
        var ranges = new[] { "10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/25", "192.0.2.128/25", "192.0.2.5/32", "10.0.0.0/8" }.Select(IpPrefix.Parse);

        var normalized = NftablesPlanner.Normalize(ranges).Select(p => p.ToString());

        Assert.Equal(["10.0.0.0/8", "192.0.2.0/25", "192.0.2.128/25"], normalized);
    }

    [Fact]
    public void ServiceOfTheOtherFamily_IsNotInThisTable()
    {
        var state = State(null, Web(ip: "fd00:10:96::1", endpoints: ["fd00:10:244:1::2"]));

        var v4 = V4.Plan(Full(state), null, null);
        var v6 = new NftablesPlanner(IpFamily.IPv6).Plan(Full(state), null, null);

        Assert.Empty(v4.State.Ports);
        Assert.Single(v6.State.Ports);
        Assert.Contains("add element ip6 proxyplanes endpoint-slots", v6.ToString());
        Assert.Contains("fd00:10:244:1::2 . 8080", v6.ToString());
        Assert.Matches(@"fd00:10:96::1 \. tcp \. 80 comment ""[^""]+ cluster IP"" : goto service-", v6.ToString());
    }

    [Fact]
    public void Counts_AddUpObjectsAndWhatWasWritten()
    {
        var state = State(null, Web(endpoints: ["10.244.1.2", "10.244.1.3"]));

        var plan = V4.Plan(Full(state), null, null);
        var fake = new FakeNftables();
        fake.Apply(plan.Transaction);

        Assert.Equal(fake.Count(IpFamily.IPv4), (plan.Counts.Chains, plan.Counts.Rules, plan.Counts.Sets, plan.Counts.Elements));
        Assert.Equal(plan.Counts.Rules, plan.Counts.RulesWritten);
        var partial = V4.Plan(Partial(state with { ServicePorts = ImmutableSortedDictionary<ServicePortName, ServicePortState>.Empty }, Name("web")), plan.State, null);
        Assert.Equal(0, partial.Counts.RulesWritten);
        Assert.Equal(plan.Counts.Rules - 2, partial.Counts.Rules); // service chain: masquerade + the dnat through endpoint-slots
    }
}
