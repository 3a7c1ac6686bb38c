using System.Net;
using System.Text.Json.Nodes;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>
/// The packet tracer behind <c>proxyplanes explain</c> for nftables, run over the planner's golden
/// transactions as the kernel lists them: testdata/CASE/nft.json is nft.golden loaded into a fresh
/// namespace and read back with <c>nft -j list table</c> (kept exact by NftablesListingKernelTests;
/// the first test here checks it still holds what the planner writes now). Each answer is the fate
/// those rules give the packet; the kernel tests check the same answers against real packets.
/// </summary>
public sealed class NftablesTracerTests
{
    private static readonly IPAddress NodeIP = IPAddress.Parse("192.168.0.10");
    private static readonly TraceNode Node = new(new HashSet<IPAddress> { NodeIP, IPAddress.Loopback, IPAddress.Parse("fd00::10") });

    private static string Listing(string caseName, IpFamily family = IpFamily.IPv4) =>
        File.ReadAllText(Path.Combine(GoldenCase.TestData, caseName, family == IpFamily.IPv4 ? "nft.json" : "nft6.json"));

    private static NftListing Table(string caseName, IpFamily family = IpFamily.IPv4) => NftListing.Parse(Listing(caseName, family), family);

    /// <summary>The listing with its JSON changed by <paramref name="edit"/> (the "nftables" array), as `nft` would list the table after a change behind our back.</summary>
    private static NftListing Edited(string caseName, Action<JsonArray> edit)
    {
        var root = JsonNode.Parse(Listing(caseName))!;
        edit(root["nftables"]!.AsArray());
        return NftListing.Parse(root.ToJsonString(), IpFamily.IPv4);
    }

    private static PacketQuestion Tcp(string destination, int port, string? from = null) =>
        new(Protocol.TCP, IPAddress.Parse(destination), port, from is null ? null : IPAddress.Parse(from));

    private static string[] Endpoints(PacketFate fate) => [.. fate.Endpoints.Select(e => e.Endpoint)];

    public static IEnumerable<object[]> TracedCases() =>
        new[] { "dual-stack", "external-ips", "external-policy-local", "external-policy-local-no-local-endpoints", "loadbalancer-source-ranges", "no-endpoints", "session-affinity", "udp" }
            .Select(c => new object[] { c });

    [Theory]
    [MemberData(nameof(TracedCases))]
    public async Task Listing_HoldsWhatThePlannerWritesNow(string caseName)
    {
        var (initial, _) = await new GoldenCase(caseName).SyncRequestsAsync();
        foreach (var family in NftablesPlannerGoldenTests.FamiliesOf(initial))
        {
            var fake = new FakeNftables();
            fake.Apply(new NftablesPlanner(family).Plan(initial, previous: null, kernel: null).Transaction);
            var listing = Table(caseName, family);

            var planned = fake.Dump(family).Split('\n').Where(l => l.StartsWith("chain ", StringComparison.Ordinal)).Select(l => l.Split(' ')[1]).Order(StringComparer.Ordinal);
            Assert.Equal(planned, listing.Chains.Keys.Order(StringComparer.Ordinal));
            foreach (var chain in listing.Chains.Values)
                Assert.True(fake.Rules(family, chain.Name).Count == chain.Rules.Count, $"{caseName}: {chain.Name}: the listing is stale; regenerate it (see NftablesListingKernelTests)");
            foreach (var set in listing.Sets.Values)
            {
                var elements = fake.Elements(family, set.Name);
                Assert.Equal(elements.Count, set.Elements.Count);
                Assert.Equal(elements.Count(e => e.Contains(" comment ", StringComparison.Ordinal)), set.Elements.Count(e => e.Comment is not null));
            }
        }
    }

    [Fact]
    public void ClusterIP_FromOffTheCluster_SpreadsEvenlyAndMasquerades()
    {
        var fate = NftablesTracer.Trace(Table("external-policy-local"), Tcp("10.96.0.24", 80), Node);

        Assert.Equal(("shop/web:http", Frontends.ClusterIP, PacketVerdict.Forward), (fate.Match, fate.Frontend, fate.Verdict));
        Assert.Equal(["10.244.1.2:8080", "10.244.2.2:8080"], Endpoints(fate));
        Assert.All(fate.Endpoints, e => Assert.Equal(0.5, e.Share, 6));
        Assert.True(fate.Masquerade);
        Assert.False(fate.Affinity);
        Assert.Contains(fate.Steps, s => s.StartsWith("services: ip daddr . meta l4proto . th dport vmap @service-ips: 10.96.0.24 . tcp . 80 comment \"shop/web:http cluster IP\"", StringComparison.Ordinal));
        // The endpoint-slots element that sets each endpoint apart, after the pool's one dnat rule.
        Assert.True(fate.Steps.Any(s => s.StartsWith("50.0%: service-KHN6ECMT-shop/web/tcp/http: meta l4proto tcp dnat ip to numgen random mod 4096 offset ", StringComparison.Ordinal)
            && s.Contains(" map @endpoint-slots-", StringComparison.Ordinal) && s.EndsWith(" : 10.244.2.2 . 8080", StringComparison.Ordinal)), string.Join("\n", fate.Steps));
        // Jumps that decided nothing (the firewall check) are left out.
        Assert.DoesNotContain(fate.Steps, s => s.Contains("jump firewall-check", StringComparison.Ordinal));
    }

    [Fact]
    public void ClusterIP_FromAPod_KeepsTheSource_ButAHairpinIsMasqueraded()
    {
        var table = Table("external-policy-local");
        var fromOther = NftablesTracer.Trace(table, Tcp("10.96.0.24", 80, from: "10.244.1.9"), Node);
        var fromEndpoint = NftablesTracer.Trace(table, Tcp("10.96.0.24", 80, from: "10.244.1.2"), Node);

        Assert.False(fromOther.Masquerade);
        Assert.All(fromOther.Endpoints, e => Assert.False(e.Masquerade));
        // The pod that reaches itself is masqueraded on that branch only; the flow as a whole keeps its source.
        Assert.False(fromEndpoint.Masquerade);
        Assert.True(fromEndpoint.Endpoints.Single(e => e.Endpoint == "10.244.1.2:8080").Masquerade);
        Assert.False(fromEndpoint.Endpoints.Single(e => e.Endpoint == "10.244.2.2:8080").Masquerade);
    }

    [Fact]
    public void NodePort_LocalPolicy_FromOutside_OnlyThisNodesEndpoint_SourceKept_FromAPod_EveryEndpoint()
    {
        var table = Table("external-policy-local");
        var outside = NftablesTracer.Trace(table, Tcp("192.168.0.10", 30024), Node);
        var pod = NftablesTracer.Trace(table, Tcp("192.168.0.10", 30024, from: "10.244.1.9"), Node);
        var node = NftablesTracer.Trace(table, Tcp("192.168.0.10", 30024, from: "192.168.0.10"), Node);

        Assert.Equal(("shop/web:http", Frontends.NodePort, PacketVerdict.Forward), (outside.Match, outside.Frontend, outside.Verdict));
        Assert.Equal(["10.244.1.2:8080"], Endpoints(outside));
        Assert.False(outside.Masquerade);
        Assert.Contains("on this node", outside.Reason, StringComparison.Ordinal);
        // Not marked, so postrouting leaves the source alone: the step says so as nft would print it.
        Assert.Contains("masquerading: meta mark & 0x4000 == 0 return", outside.Steps);
        Assert.Equal(["10.244.1.2:8080", "10.244.2.2:8080"], Endpoints(pod));
        // The node's own traffic is short-circuited to every endpoint, masqueraded.
        Assert.Equal(["10.244.1.2:8080", "10.244.2.2:8080"], Endpoints(node));
        Assert.True(node.Masquerade);
        // Positive control: a port that is not a node port passes untouched.
        Assert.Equal(PacketVerdict.Pass, NftablesTracer.Trace(table, Tcp("192.168.0.10", 30099), Node).Verdict);
    }

    [Fact]
    public void NoEndpoints_ClusterIPAndNodePort_AreRejected()
    {
        var table = Table("no-endpoints");
        var cluster = NftablesTracer.Trace(table, Tcp("10.96.0.12", 80), Node);
        var nodePort = NftablesTracer.Trace(table, Tcp("192.168.0.10", 30090), Node);
        var fromNode = NftablesTracer.Trace(table, Tcp("10.96.0.12", 80, from: "192.168.0.10"), Node);

        Assert.Equal(("shop/lonely:http", Frontends.ClusterIP, PacketVerdict.Reject, "no endpoints"), (cluster.Match, cluster.Frontend, cluster.Verdict, cluster.Reason));
        Assert.Equal(("shop/lonely:http", Frontends.NodePort, PacketVerdict.Reject, "no endpoints"), (nodePort.Match, nodePort.Frontend, nodePort.Verdict, nodePort.Reason));
        Assert.Equal((PacketVerdict.Reject, "no endpoints"), (fromNode.Verdict, fromNode.Reason));
        Assert.Empty(cluster.Endpoints);
        Assert.Contains(cluster.Steps, s => s == "reject-chain: reject");
    }

    [Fact]
    public void NodePort_LocalPolicyWithoutLocalEndpoint_IsDropped_ButPodsStillReachTheService()
    {
        var table = Table("external-policy-local-no-local-endpoints");
        var outside = NftablesTracer.Trace(table, Tcp("192.168.0.10", 30025), Node);
        var pod = NftablesTracer.Trace(table, Tcp("192.168.0.10", 30025, from: "10.244.1.9"), Node);

        Assert.Equal(("shop/web:http", Frontends.NodePort, PacketVerdict.Drop), (outside.Match, outside.Frontend, outside.Verdict));
        Assert.Equal("traffic policy Local, and no endpoint on this node", outside.Reason);
        Assert.Equal(PacketVerdict.Forward, pod.Verdict);
        Assert.Equal(["10.244.2.2:8080"], Endpoints(pod));
    }

    [Fact]
    public void LoadBalancerSourceRanges_InsideForwards_OutsideDrops()
    {
        var table = Table("loadbalancer-source-ranges");
        var inside = NftablesTracer.Trace(table, Tcp("198.51.100.22", 80, from: "203.0.113.7"), Node);
        var outside = NftablesTracer.Trace(table, Tcp("198.51.100.22", 80, from: "10.1.1.1"), Node);
        var unknown = NftablesTracer.Trace(table, Tcp("198.51.100.22", 80), Node);

        Assert.Equal(("shop/web:http", Frontends.LoadBalancerIP, PacketVerdict.Forward), (inside.Match, inside.Frontend, inside.Verdict));
        Assert.Equal(["10.244.1.2:8080"], Endpoints(inside));
        Assert.True(inside.Masquerade);
        Assert.Equal(("shop/web:http", Frontends.LoadBalancerIP, PacketVerdict.Drop), (outside.Match, outside.Frontend, outside.Verdict));
        Assert.Equal("source outside loadBalancerSourceRanges", outside.Reason);
        Assert.Contains(outside.Steps, s => s.StartsWith("firewall-KHN6ECMT-shop/web/tcp/http: ip saddr != @source-ranges-", StringComparison.Ordinal));
        // A client off the cluster that is not named is in no range.
        Assert.Equal(PacketVerdict.Drop, unknown.Verdict);
    }

    [Fact]
    public void ExternalIP_IsNamedAsSuch_AndMasqueraded()
    {
        var fate = NftablesTracer.Trace(Table("external-ips"), Tcp("198.51.100.21", 80, from: "203.0.113.7"), Node);

        Assert.Equal(("shop/web:http", Frontends.ExternalIP, PacketVerdict.Forward), (fate.Match, fate.Frontend, fate.Verdict));
        Assert.Equal(["10.244.1.2:8080", "10.244.2.2:8080"], Endpoints(fate));
        Assert.True(fate.Masquerade);
    }

    [Fact]
    public void SessionAffinity_IsReported_AndARememberedClientGoesBackToItsEndpoint()
    {
        var sticky = NftablesTracer.Trace(Table("session-affinity"), Tcp("10.96.0.23", 80, from: "203.0.113.7"), Node);

        Assert.True(sticky.Affinity);
        Assert.Equal(PacketVerdict.Forward, sticky.Verdict);
        Assert.Equal(2, sticky.Endpoints.Count);
        Assert.Contains("ClientIP affinity", sticky.Reason, StringComparison.Ordinal);

        // The kernel learnt the client for the second endpoint: nft lists it in that endpoint's affinity set.
        var learnt = Edited("session-affinity", items =>
        {
            var set = items.Select(i => i!["set"]).Single(s => s is not null && s["name"]!.GetValue<string>().StartsWith("affinity-XSOSFUZI", StringComparison.Ordinal))!;
            set["elem"] = new JsonArray(new JsonObject { ["elem"] = new JsonObject { ["val"] = "203.0.113.7", ["timeout"] = 10800, ["expires"] = 10000 } });
        });
        var remembered = NftablesTracer.Trace(learnt, Tcp("10.96.0.23", 80, from: "203.0.113.7"), Node);
        var other = NftablesTracer.Trace(learnt, Tcp("10.96.0.23", 80, from: "203.0.113.8"), Node);

        Assert.Equal(["10.244.1.3:8080"], Endpoints(remembered));
        Assert.True(remembered.Affinity);
        Assert.Equal(2, other.Endpoints.Count);
        // Positive control: the same tracer reports no affinity for a service without it.
        Assert.False(NftablesTracer.Trace(Table("external-policy-local"), Tcp("10.96.0.24", 80), Node).Affinity);
    }

    [Fact]
    public void Udp_MatchesOnlyUdp()
    {
        var table = Table("udp");
        var udp = NftablesTracer.Trace(table, new PacketQuestion(Protocol.UDP, IPAddress.Parse("10.96.0.30"), 53), Node);
        var tcp = NftablesTracer.Trace(table, Tcp("10.96.0.30", 53), Node);

        Assert.Equal(["10.244.1.2:8080"], Endpoints(udp));
        Assert.Equal("shop/dns:http", udp.Match);
        Assert.Equal(PacketVerdict.Pass, tcp.Verdict);
        Assert.Null(tcp.Match);
        Assert.Equal("nothing of ours matches", tcp.Reason);
    }

    [Fact]
    public void DualStack_IPv6_ClusterIP_ReachesTheIPv6Endpoints()
    {
        var fate = NftablesTracer.Trace(Table("dual-stack", IpFamily.IPv6), Tcp("fd00:10:96::31", 80), Node);

        Assert.Equal(PacketVerdict.Forward, fate.Verdict);
        Assert.Equal(["[fd00:10:244:1::2]:8080", "[fd00:10:244:1::3]:8080"], Endpoints(fate));
    }

    [Fact]
    public void ARuleOrElementRemovedBehindTheDaemonsBack_IsSeen()
    {
        // The first endpoint's slots in endpoint-slots-XX pointed at the last one (`nft delete element`, `add element`): every new flow takes the last endpoint.
        var noSpread = Edited("external-policy-local", items =>
        {
            var map = items.Select(i => i!["map"]).Single(m => m is not null && NftNames.IsEndpointSlotsMap(m["name"]!.GetValue<string>()) && m["elem"]!.AsArray().Count == 2)!;
            var elements = map["elem"]!.AsArray();
            elements[0]![1] = elements[1]![1]!.DeepClone();
        });
        var fate = NftablesTracer.Trace(noSpread, Tcp("10.96.0.24", 80), Node);
        Assert.Equal(["10.244.2.2:8080"], Endpoints(fate));
        Assert.Equal(1.0, fate.Endpoints[0].Share, 6);

        // `nft delete rule` of the spread (the dnat through endpoint-slots): the flow is no longer DNATed here.
        var noDnat = Edited("external-policy-local", items =>
            items.Remove(items.Single(i => i!["rule"] is { } r && r["chain"]!.GetValue<string>().StartsWith("service-", StringComparison.Ordinal)
                && r.ToJsonString().Contains("numgen", StringComparison.Ordinal))));
        Assert.Empty(NftablesTracer.Trace(noDnat, Tcp("10.96.0.24", 80), Node).Endpoints);

        // `nft delete element … service-ips { 10.96.0.24 . tcp . 80 }`: nothing of ours matches the cluster IP any more.
        var noElement = Edited("external-policy-local", items =>
            items.Select(i => i!["map"]).Single(m => m is not null && m["name"]!.GetValue<string>() == NftNames.ServiceIPs)!.AsObject().Remove("elem"));
        var gone = NftablesTracer.Trace(noElement, Tcp("10.96.0.24", 80), Node);
        Assert.Equal((PacketVerdict.Pass, (string?)null), (gone.Verdict, gone.Match));
    }

    [Fact]
    public void UnknownExpressions_AreSkippedAndNamed_NeverACrash()
    {
        var table = Edited("external-policy-local", items =>
        {
            // A rule matching on something the tracer does not read, and a statement it does not know, in the service chain.
            var service = items.Select(i => i!["rule"]).First(r => r is not null && r["chain"]!.GetValue<string>().StartsWith("service-", StringComparison.Ordinal))!;
            var chain = service["chain"]!.GetValue<string>();
            var index = items.IndexOf(service.Parent);
            items.Insert(index, JsonNode.Parse($$$"""{"rule": {"family": "ip", "table": "proxyplanes", "chain": "{{{chain}}}", "expr": [{"match": {"op": "==", "left": {"osf": {"key": "name"}}, "right": "Linux"}}, {"drop": null}]}}"""));
            items.Insert(index, JsonNode.Parse($$$"""{"rule": {"family": "ip", "table": "proxyplanes", "chain": "{{{chain}}}", "expr": [{"limit": {"rate": 10, "per": "second"}}, {"counter": null}]}}"""));
        });

        var fate = NftablesTracer.Trace(table, Tcp("10.96.0.24", 80), Node);

        Assert.Equal(PacketVerdict.Forward, fate.Verdict);
        Assert.Equal(2, fate.Endpoints.Count);
        Assert.Contains(fate.Steps, s => s.StartsWith("skipped ('osf {\"key\":\"name\"}' is not understood)", StringComparison.Ordinal));
        Assert.Contains(fate.Steps, s => s.StartsWith("skipped statement 'limit", StringComparison.Ordinal));
    }

    [Fact]
    public void List_NamesEveryFrontend_WithItsFate()
    {
        var list = NftablesTracer.List(Table("loadbalancer-source-ranges"), Node);

        Assert.Equal(["tcp 10.96.0.22:80", "tcp 192.168.0.10:30022", "tcp 198.51.100.22:80"], list.Select(f => f.Question.ToString()));
        Assert.Equal([Frontends.ClusterIP, Frontends.NodePort, Frontends.LoadBalancerIP], list.Select(f => f.Fate.Frontend));
        // From off the cluster, outside the ranges: the load-balancer IP drops; the cluster IP and node port forward.
        Assert.Equal([PacketVerdict.Forward, PacketVerdict.Forward, PacketVerdict.Drop], list.Select(f => f.Fate.Verdict));
    }

    [Fact]
    public void Parse_NotNftJson_IsOneClearLine()
    {
        var error = Assert.Throws<ExplainException>(() => NftListing.Parse("Error: syntax error", IpFamily.IPv4));
        Assert.StartsWith("nft -j: output is not JSON", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', error.Message);
    }
}
