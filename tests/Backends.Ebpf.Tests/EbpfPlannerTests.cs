using System.Net;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// The planner on its own (no kernel): ebpf.golden per testdata case (the full sync into empty maps
/// and, where the case has update.yaml, the partial sync after it; regenerate with UPDATE_GOLDEN=1 and
/// review the diff), the write order a running program relies on, and the full sync's diff.
/// </summary>
public sealed class EbpfPlannerTests
{
    public static IEnumerable<object[]> Cases() => GoldenCase.All();

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullAndPartial_MatchGolden(string caseName)
    {
        var golden = new GoldenCase(caseName);
        var (initial, update) = await golden.SyncRequestsAsync();
        var planner = new EbpfPlanner();

        var full = planner.Plan(initial, null, EbpfMapContents.Empty);
        var text = full.ToString();
        if (update is not null)
        {
            Assert.False(update.Full);
            var partial = planner.Plan(update, full.State, null);
            text += "\n# partial sync after update.yaml\n" + partial;
            // The partial sync leaves the maps as a full sync of the update would want them.
            Assert.Empty(planner.Plan(update with { Full = true }, null, partial.State.Maps).Writes);
        }
        golden.AssertGolden("ebpf.golden", text);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_FullSyncOverItsOwnResult_WritesNothing(string caseName)
    {
        var (initial, _) = await new GoldenCase(caseName).SyncRequestsAsync();
        var planner = new EbpfPlanner();
        var first = planner.Plan(initial, null, EbpfMapContents.Empty);

        // A restart: no planner state, the pinned maps as the last run left them.
        var again = planner.Plan(initial, null, Apply(EbpfMapContents.Empty, first.Writes));

        Assert.Empty(again.Writes);
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task Plan_ColdSync_EqualsTheDiffOverMapsHoldingOnlyAForeignEntry(string caseName)
    {
        var (initial, _) = await new GoldenCase(caseName).SyncRequestsAsync();
        AssertColdEqualsDiffed(initial);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public void Plan_ColdSync_RandomCluster_EqualsTheDiffOverMapsHoldingOnlyAForeignEntry(int seed)
    {
        var cluster = new RandomCluster(seed, changeFamilies: true);
        for (var i = 0; i < 5; i++) cluster.Mutate();
        AssertColdEqualsDiffed(StateBuilder.Full(cluster.State(StateBuilder.Network)));
    }

    /// <summary>
    /// A full sync over empty maps takes the cold path (every entry added without a lookup); over maps holding one
    /// unwanted master (no reverse-NAT id, so it takes no id) it diffs: the same writes but that entry's deletion, the
    /// same state to every table.
    /// </summary>
    private static void AssertColdEqualsDiffed(SyncRequest request)
    {
        var planner = new EbpfPlanner();
        var cold = planner.Plan(request, null, EbpfMapContents.Empty);
        var foreign = ServiceKey.For(IPAddress.Parse("203.0.113.254"), 9, System.Net.Sockets.ProtocolType.Udp);
        var held = EbpfMapContents.Empty with { Services = EbpfMapContents.Empty.Services.SetItem(foreign, ServiceValue.Master(0, 0)) };

        var diffed = planner.Plan(request, null, held);

        Assert.NotEmpty(cold.Writes);
        Assert.Equal(
            cold.Writes.Select(w => w.ToString()),
            diffed.Writes.Select(w => w.ToString()).Where(w => w != "delete service 203.0.113.254:9/udp master"));
        Assert.Equal(cold.Writes.Length + 1, diffed.Writes.Length);
        AssertSameTable(diffed.State.Maps.Services, cold.State.Maps.Services, "services");
        AssertSameTable(diffed.State.Maps.Backends, cold.State.Maps.Backends, "backends");
        AssertSameTable(diffed.State.BackendIds, cold.State.BackendIds, "backend ids");
        AssertSameTable(diffed.State.BackendReferences, cold.State.BackendReferences, "references");
        AssertSameTable(diffed.State.Ports, cold.State.Ports, "ports", (x, y) => x.SequenceEqual(y));
        AssertSameTable(diffed.State.Claims, cold.State.Claims, "claims", (x, y) => x.SequenceEqual(y));
        Assert.Equal(diffed.State.Maps.SourceRanges.Order(SourceRangeComparer.Instance), cold.State.Maps.SourceRanges.Order(SourceRangeComparer.Instance));
        Assert.Equal(diffed.State.BackendIdPool.Next, cold.State.BackendIdPool.Next);
        Assert.Equal(diffed.State.BackendIdPool.Free, cold.State.BackendIdPool.Free);
        Assert.Equal(diffed.State.RevNatIdPool.Next, cold.State.RevNatIdPool.Next);
        Assert.Equal(diffed.State.RevNatIdPool.Free, cold.State.RevNatIdPool.Free);
    }

    /// <summary>The backends of a frontend are in endpoint order (address, then port) whatever order Core's verdict lists them in.</summary>
    /// <summary>
    /// A full sync's slots per master key as read from the maps (in a hash map's order): each master's ascending, slot 0
    /// when present, slots without a master under their master key, each scope its own key.
    /// </summary>
    [Fact]
    public void SlotsOf_EachMastersSlotsAscending_Slot0WhenPresent_OrphanSlotsUnderTheirMaster()
    {
        var a = ServiceKey.For(IPAddress.Parse("10.96.0.1"), 80, System.Net.Sockets.ProtocolType.Tcp);
        var b = ServiceKey.For(IPAddress.Parse("10.96.0.2"), 80, System.Net.Sockets.ProtocolType.Tcp);
        var external = a with { Scope = MapLayout.ScopeExternal };
        ServiceKey[] keys = [a with { Slot = 3 }, b with { Slot = 2 }, a, a with { Slot = 10 }, external with { Slot = 1 }, a with { Slot = 2 }, b with { Slot = 1 }, a with { Slot = 1 }];

        var slots = EbpfPlanner.SlotsOf(keys);

        Assert.Equal(3, slots.Count);
        Assert.Equal(new ushort[] { 0, 1, 2, 3, 10 }, slots[a]);
        Assert.Equal(new ushort[] { 1, 2 }, slots[b]);
        Assert.Equal(new ushort[] { 1 }, slots[external]);
        Assert.Empty(EbpfPlanner.SlotsOf([]));
    }

    [Fact]
    public void Plan_EndpointsOutOfOrder_SlotsInAddressThenPortOrder()
    {
        var info = StateBuilder.Info("web", "10.96.0.10");
        var port = StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.2", 80), StateBuilder.Endpoint("10.244.1.10", 80), StateBuilder.Endpoint("10.244.1.2", 70));
        var verdict = port.IPv4Verdict with
        {
            InternalTraffic = TrafficVerdict.Forward(EndpointPool.Cluster, new EquatableArray<EndpointInfo>(port.IPv4Verdict.InternalTraffic.Endpoints.Reverse())),
        };
        var shuffled = new ServicePortState(port.Info, port.IPv4Endpoints, port.IPv6Endpoints, verdict, port.IPv6Verdict);

        var frontend = Assert.Single(EbpfPlanner.Frontends(shuffled));

        Assert.Equal(["10.244.1.2:70/tcp", "10.244.1.2:80/tcp", "10.244.1.10:80/tcp"], frontend.Backends.Select(EbpfText.Backend));
    }

    [Fact]
    public void Plan_EndpointReplaced_WritesInTheOrderAProgramCanBear()
    {
        var info = StateBuilder.Info("web", "10.96.0.10");
        var before = StateBuilder.State(null, StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.1"), StateBuilder.Endpoint("10.244.1.2")));
        var after = StateBuilder.State(null, StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.3")));
        var planner = new EbpfPlanner();
        var first = planner.Plan(StateBuilder.Full(before), null, EbpfMapContents.Empty);

        var plan = planner.Plan(StateBuilder.Partial(after, info.Name), first.State, null);

        Assert.Equal(
            [
                "backend 3 = 10.244.1.3:8080/tcp",
                "service 10.96.0.10:80/tcp slot 1 = backend 3  # ns/web:http",
                "service 10.96.0.10:80/tcp master count 1 flags masquerade revnat 1  # ns/web:http",
                "delete service 10.96.0.10:80/tcp slot 2",
                "delete backend 1",
                "delete backend 2",
            ],
            plan.Writes.Select(w => w.ToString()));
    }

    [Fact]
    public void Plan_BackendIdsFreed_AreReusedLowestFirst()
    {
        var web = StateBuilder.Info("web", "10.96.0.10");
        var api = StateBuilder.Info("api", "10.96.0.11");
        var planner = new EbpfPlanner();
        var one = planner.Plan(StateBuilder.Full(StateBuilder.State(null,
            StateBuilder.Port(web, StateBuilder.Endpoint("10.244.1.1")), StateBuilder.Port(api, StateBuilder.Endpoint("10.244.2.1")))), null, EbpfMapContents.Empty);
        Assert.Equal(1u, one.State.BackendIds[Backend.For(IPAddress.Parse("10.244.1.1"), 8080, System.Net.Sockets.ProtocolType.Tcp)]);

        var two = planner.Plan(StateBuilder.Partial(StateBuilder.State(null, StateBuilder.Port(web, StateBuilder.Endpoint("10.244.1.1"))), api.Name), one.State, null);
        var three = planner.Plan(StateBuilder.Partial(StateBuilder.State(null,
            StateBuilder.Port(web, StateBuilder.Endpoint("10.244.1.1")), StateBuilder.Port(api, StateBuilder.Endpoint("10.244.2.9"))), api.Name), two.State, null);

        Assert.Contains("delete backend 2", two.Writes.Select(w => w.ToString()));
        Assert.Equal("backend 2 = 10.244.2.9:8080/tcp", three.Writes[0].ToString());
        Assert.Equal(1u, three.State.BackendIds[Backend.For(IPAddress.Parse("10.244.1.1"), 8080, System.Net.Sockets.ProtocolType.Tcp)]);
    }

    [Fact]
    public void Plan_FullSyncOverForeignEntries_WritesOnlyTheDifferences()
    {
        var info = StateBuilder.Info("web", "10.96.0.10");
        var state = StateBuilder.State(null, StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.1"), StateBuilder.Endpoint("10.244.1.2")));
        var planner = new EbpfPlanner();
        var maps = Apply(EbpfMapContents.Empty, planner.Plan(StateBuilder.Full(state), null, EbpfMapContents.Empty).Writes);
        var vip = ServiceKey.For(IPAddress.Parse("10.96.0.10"), 80, System.Net.Sockets.ProtocolType.Tcp);
        var gone = ServiceKey.For(IPAddress.Parse("10.96.0.99"), 53, System.Net.Sockets.ProtocolType.Udp);
        // What a crashed or older proxy may leave: a stale slot above the count, a slot without its master, an orphan backend.
        maps = maps with
        {
            Services = maps.Services.SetItem(vip.WithSlot(3), ServiceValue.ForSlot(2)).SetItem(gone.WithSlot(1), ServiceValue.ForSlot(9)),
            Backends = maps.Backends.SetItem(9, Backend.For(IPAddress.Parse("10.244.9.9"), 53, System.Net.Sockets.ProtocolType.Udp)),
        };

        var plan = planner.Plan(StateBuilder.Full(state), null, maps);

        Assert.Equal(
            ["delete service 10.96.0.10:80/tcp slot 3", "delete service 10.96.0.99:53/udp slot 1", "delete backend 9"],
            plan.Writes.Select(w => w.ToString()));
        Assert.Equal(3, plan.State.Maps.Services.Count);
        Assert.Empty(planner.Plan(StateBuilder.Full(state), null, Apply(maps, plan.Writes)).Writes);
    }

    [Fact]
    public void Plan_NoEndpoints_RejectIsCountZeroWithoutDrop()
    {
        var info = StateBuilder.Info("web", "10.96.0.10");
        var plan = new EbpfPlanner().Plan(StateBuilder.Full(StateBuilder.State(null, StateBuilder.Port(info))), null, EbpfMapContents.Empty);

        Assert.Equal(["service 10.96.0.10:80/tcp master count 0 revnat 1  # ns/web:http"], plan.Writes.Select(w => w.ToString()));
    }

    [Fact]
    public void Plan_ExternalPolicyLocalWithoutLocalEndpoints_DropsOffNodeClientsAndShortCircuitsLocalOnes()
    {
        var info = StateBuilder.Info("web", "10.96.0.10") with { NodePort = 30080, ExternalPolicyLocal = true };
        var plan = new EbpfPlanner().Plan(StateBuilder.Full(StateBuilder.State(null, StateBuilder.Port(info, StateBuilder.Endpoint("10.244.2.1", local: false)))), null, EbpfMapContents.Empty);
        var masters = plan.Writes.OfType<ServiceUpdate>().Where(w => w.Key.Slot == 0).Select(w => w.ToString()).ToArray();

        Assert.Equal(
            [
                "service *:30080/tcp master count 1 flags nodeport revnat 1  # ns/web:http",
                "service *:30080/tcp external master count 0 flags nodeport,drop revnat 2  # ns/web:http",
                "service 10.96.0.10:80/tcp master count 1 flags masquerade revnat 3  # ns/web:http",
            ],
            masters);
    }

    [Fact]
    public void Plan_DualStack_RendersEachFamilyFromItsOwnVerdict()
    {
        var info = StateBuilder.Info("web", "10.96.0.10,fd00::10") with { NodePort = 30080 };
        var plan = new EbpfPlanner().Plan(StateBuilder.Full(StateBuilder.State(null,
            StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.1"), StateBuilder.Endpoint("fd00:10:244::1"), StateBuilder.Endpoint("fd00:10:244::2")))), null, EbpfMapContents.Empty);

        Assert.Equal(
            [
                "backend 1 = [fd00:10:244::1]:8080/tcp",
                "backend 2 = [fd00:10:244::2]:8080/tcp",
                "backend 3 = 10.244.1.1:8080/tcp",
                "service [*]:30080/tcp slot 1 = backend 1  # ns/web:http",
                "service [*]:30080/tcp slot 2 = backend 2  # ns/web:http",
                "service *:30080/tcp slot 1 = backend 3  # ns/web:http",
                "service 10.96.0.10:80/tcp slot 1 = backend 3  # ns/web:http",
                "service [fd00::10]:80/tcp slot 1 = backend 1  # ns/web:http",
                "service [fd00::10]:80/tcp slot 2 = backend 2  # ns/web:http",
                "service [*]:30080/tcp master count 2 flags nodeport,masquerade revnat 1  # ns/web:http",
                "service *:30080/tcp master count 1 flags nodeport,masquerade revnat 2  # ns/web:http",
                "service 10.96.0.10:80/tcp master count 1 flags masquerade revnat 3  # ns/web:http",
                "service [fd00::10]:80/tcp master count 2 flags masquerade revnat 4  # ns/web:http",
            ],
            plan.Writes.Select(w => w.ToString()));
        // The keys: IPv4 held as ::ffff:a.b.c.d, a node port as its family's unspecified address.
        var masters = plan.State.Maps.Services.Keys.Where(k => k.Slot == 0).Select(k => k.Address.ToIPAddress().ToString()).Order(StringComparer.Ordinal);
        Assert.Equal(["0.0.0.0", "10.96.0.10", "::", "fd00::10"], masters);
    }

    [Fact]
    public void Plan_DualStackSourceRanges_EachFamilysPrefixesUnderItsOwnMaster_InItsOwnTrie()
    {
        var info = StateBuilder.Info("lb", "10.96.0.10,fd00::10") with
        {
            LoadBalancerIPs = new EquatableArray<IPAddress>(new[] { IPAddress.Parse("192.0.2.10"), IPAddress.Parse("2001:db8:ff::10") }),
            LoadBalancerSourceRanges = new EquatableArray<IpPrefix>(new[] { IpPrefix.Parse("203.0.113.0/24"), IpPrefix.Parse("2001:db8:100::/48") }),
        };
        var state = StateBuilder.State(null, StateBuilder.Port(info, StateBuilder.Endpoint("10.244.1.1"), StateBuilder.Endpoint("fd00:10:244::1")));
        var planner = new EbpfPlanner();
        var plan = planner.Plan(StateBuilder.Full(state), null, EbpfMapContents.Empty);

        var ranges = plan.Writes.OfType<SourceRangeUpdate>().Select(w => $"{w.Map} {w.Key}").ToList();
        var flagged = plan.State.Maps.Services.Where(s => s.Key.Slot == 0 && (s.Value.Flags & MapLayout.ServiceFlagSourceRanges) != 0)
            .ToDictionary(s => s.Key.Address.ToIPAddress().ToString(), s => s.Value.RevNatId);
        Assert.Equal(["192.0.2.10", "2001:db8:ff::10"], flagged.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(
            [$"pp_srcrange6_v1 2001:db8:100::/48 revnat {flagged["2001:db8:ff::10"]}", $"pp_srcrange_v1 203.0.113.0/24 revnat {flagged["192.0.2.10"]}"],
            ranges.Order(StringComparer.Ordinal));

        // The IPv6 load balancer drops its ranges: its prefix goes, the IPv4 one stays.
        var without6 = StateBuilder.State(null, StateBuilder.Port(info with { LoadBalancerSourceRanges = new EquatableArray<IpPrefix>(new[] { IpPrefix.Parse("203.0.113.0/24") }) },
            StateBuilder.Endpoint("10.244.1.1"), StateBuilder.Endpoint("fd00:10:244::1")));
        var next = planner.Plan(StateBuilder.Partial(without6, info.Name), plan.State, null);
        Assert.Equal([$"pp_srcrange6_v1 2001:db8:100::/48 revnat {flagged["2001:db8:ff::10"]}"], next.Writes.OfType<SourceRangeDelete>().Select(w => $"{w.Map} {w.Key}"));
        Assert.Equal([new SourceRange(flagged["192.0.2.10"], IpPrefix.Parse("203.0.113.0/24"))], next.State.Maps.SourceRanges);
    }

    /// <summary>
    /// Random clusters changed step by step: after every single write of every partial plan, each
    /// master entry's slots 1..count exist and name a backend that exists (what a program may read at
    /// any moment), and the maps end as a full sync of the same state wants them; so does every table of the planner's
    /// state (each a frozen base under an overlay of the partial syncs' changes, folded now and then), to the claims,
    /// ports, backend ids and references.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public void Plan_RandomPartialSyncs_NeverExposeAMissingSlotAndConvergeToTheFullSync(int seed)
    {
        var cluster = new RandomCluster(seed, changeFamilies: true);
        var planner = new EbpfPlanner();
        var state = cluster.State(StateBuilder.Network);
        var plan = planner.Plan(StateBuilder.Full(state), null, EbpfMapContents.Empty);
        var maps = Apply(EbpfMapContents.Empty, plan.Writes, CheckConsistent);
        var overlaid = 0;
        for (var step = 0; step < 60; step++)
        {
            cluster.Mutate();
            var next = cluster.State(StateBuilder.Network);
            plan = planner.Plan(StateBuilder.Partial(next, [.. StateBuilder.Changed(state, next)]), plan.State, null);
            maps = Apply(maps, plan.Writes, CheckConsistent);
            Assert.Equal(plan.State.Maps.Services.OrderBy(s => s.Key, ServiceKeyComparer.Instance), maps.Services.OrderBy(s => s.Key, ServiceKeyComparer.Instance));
            Assert.Equal(plan.State.Maps.SourceRanges.Order(SourceRangeComparer.Instance), maps.SourceRanges.Order(SourceRangeComparer.Instance));
            var fresh = planner.Plan(StateBuilder.Full(next), null, maps);
            Assert.Empty(fresh.Writes);
            if (plan.State.Maps.Services.OverlayCount > 0) overlaid++;
            AssertSameTable(fresh.State.Maps.Services, plan.State.Maps.Services, $"step {step}: services");
            AssertSameTable(fresh.State.Maps.Backends, plan.State.Maps.Backends, $"step {step}: backends");
            AssertSameTable(fresh.State.BackendIds, plan.State.BackendIds, $"step {step}: backend ids");
            AssertSameTable(fresh.State.BackendReferences, plan.State.BackendReferences, $"step {step}: references");
            AssertSameTable(fresh.State.Ports, plan.State.Ports, $"step {step}: ports", (x, y) => x.SequenceEqual(y));
            AssertSameTable(fresh.State.Claims, plan.State.Claims, $"step {step}: claims", (x, y) => x.SequenceEqual(y));
            Assert.Equal(fresh.State.MasterEntries, plan.State.MasterEntries);
            state = next;
        }
        // A positive control: the partial syncs did read through an overlay (not only freshly folded tables).
        Assert.True(overlaid > 0, "no partial sync left an overlay");
    }

    private static void AssertSameTable<TKey, TValue>(OverlayTable<TKey, TValue> expected, OverlayTable<TKey, TValue> actual, string context, Func<TValue, TValue, bool>? same = null)
        where TKey : notnull
    {
        same ??= EqualityComparer<TValue>.Default.Equals;
        Assert.True(expected.Count == actual.Count, $"{context}: {actual.Count} entries, a full sync plans {expected.Count}");
        Assert.Equal(expected.Count, actual.Count(_ => true));
        foreach (var (key, value) in expected)
            Assert.True(actual.TryGetValue(key, out var found) && same(value, found), $"{context}: {key} differs from what a full sync plans");
    }

    /// <summary>The maps after <paramref name="writes"/>, checked after each write when <paramref name="check"/> is given.</summary>
    internal static EbpfMapContents Apply(EbpfMapContents maps, IEnumerable<MapWrite> writes, Action<EbpfMapContents>? check = null)
    {
        foreach (var write in writes)
        {
            maps = write switch
            {
                BackendUpdate u => maps with { Backends = maps.Backends.SetItem(u.Id, u.Value) },
                BackendDelete d => maps with { Backends = maps.Backends.Remove(d.Id) },
                ServiceUpdate u => maps with { Services = maps.Services.SetItem(u.Key, u.Value) },
                ServiceDelete d => maps with { Services = maps.Services.Remove(d.Key) },
                SourceRangeUpdate u => maps with { SourceRanges = maps.SourceRanges.Add(u.Key) },
                SourceRangeDelete d => maps with { SourceRanges = maps.SourceRanges.Remove(d.Key) },
                _ => throw new InvalidOperationException(write.ToString()),
            };
            check?.Invoke(maps);
        }
        return maps;
    }

    private static void CheckConsistent(EbpfMapContents maps)
    {
        // A master that asks for source ranges finds at least one allowed prefix under its reverse-NAT id
        // (the generator's ranges are never empty), so a client is never shot for a range not written yet.
        foreach (var (key, master) in maps.Services.Where(s => s.Key.Slot == 0 && (s.Value.Flags & MapLayout.ServiceFlagSourceRanges) != 0))
            Assert.True(maps.SourceRanges.Any(r => r.RevNatId == master.RevNatId), $"{key}: source-ranges flag but no range with revnat {master.RevNatId}");
        foreach (var (key, master) in maps.Services.Where(s => s.Key.Slot == 0))
            for (var slot = 1; slot <= master.Count; slot++)
            {
                Assert.True(maps.Services.TryGetValue(key.WithSlot(slot), out var value), $"{key}: count {master.Count} but slot {slot} missing");
                Assert.True(maps.Backends.ContainsKey(value.BackendId), $"{key.WithSlot(slot)}: backend {value.BackendId} missing");
            }
    }
}
