using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// The packet tracer behind <c>proxyplanes explain</c>, run over what the planner writes for the golden
/// cases, loaded into the checking fake and read back as iptables-save prints it: each answer is
/// the fate the rules give that packet (the kernel tests check the same answers against real packets).
/// </summary>
public sealed class IptablesTracerTests
{
    private static readonly IPAddress NodeIP = IPAddress.Parse("192.168.0.10");
    private static readonly TraceNode Node = new(new HashSet<IPAddress> { NodeIP, IPAddress.Loopback, IPAddress.Parse("fd00::10") });

    private static async Task<IReadOnlyList<SavedTable>> TablesAsync(string caseName, IpFamily family = IpFamily.IPv4)
    {
        var (initial, _) = await new GoldenCase(caseName).SyncRequestsAsync();
        var plan = new IptablesPlanner(family).Plan(initial, previous: null, KernelTables.Empty);
        var kernel = new FakeIptables(family);
        kernel.Restore(plan.ToString());
        return [.. IptablesSave.ParseTables(kernel.Save("nat")), .. IptablesSave.ParseTables(kernel.Save("filter"))];
    }

    private static PacketQuestion Tcp(string destination, int port, string? from = null) =>
        new(Protocol.TCP, IPAddress.Parse(destination), port, from is null ? null : IPAddress.Parse(from));

    private static string[] Endpoints(PacketFate fate) => [.. fate.Endpoints.Select(e => e.Endpoint)];

    [Fact]
    public async Task ClusterIP_FromOffTheCluster_SpreadsEvenlyAndMasquerades()
    {
        var fate = IptablesTracer.Trace(await TablesAsync("external-policy-local"), Tcp("10.96.0.24", 80), Node);

        Assert.Equal(("shop/web:http", Frontends.ClusterIP, PacketVerdict.Forward), (fate.Match, fate.Frontend, fate.Verdict));
        Assert.Equal(["10.244.1.2:8080", "10.244.2.2:8080"], Endpoints(fate));
        Assert.All(fate.Endpoints, e => Assert.Equal(0.5, e.Share, 6));
        Assert.True(fate.Masquerade);
        Assert.False(fate.Affinity);
        Assert.Contains(fate.Steps, s => s.Contains("-j KUBE-SVC-", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ClusterIP_FromAPod_KeepsTheSource_ButAHairpinIsMasqueraded()
    {
        var tables = await TablesAsync("external-policy-local");
        var fromOther = IptablesTracer.Trace(tables, Tcp("10.96.0.24", 80, from: "10.244.1.9"), Node);
        var fromEndpoint = IptablesTracer.Trace(tables, Tcp("10.96.0.24", 80, from: "10.244.1.2"), Node);

        Assert.False(fromOther.Masquerade);
        Assert.All(fromOther.Endpoints, e => Assert.False(e.Masquerade));
        // The pod that reaches itself is masqueraded on that branch only; the flow as a whole keeps its source.
        Assert.False(fromEndpoint.Masquerade);
        Assert.True(fromEndpoint.Endpoints.Single(e => e.Endpoint == "10.244.1.2:8080").Masquerade);
        Assert.False(fromEndpoint.Endpoints.Single(e => e.Endpoint == "10.244.2.2:8080").Masquerade);
    }

    [Fact]
    public async Task NodePort_LocalPolicy_FromOutside_OnlyThisNodesEndpoint_SourceKept_FromAPod_EveryEndpoint()
    {
        var tables = await TablesAsync("external-policy-local");
        var outside = IptablesTracer.Trace(tables, Tcp("192.168.0.10", 30024), Node);
        var pod = IptablesTracer.Trace(tables, Tcp("192.168.0.10", 30024, from: "10.244.1.9"), Node);

        Assert.Equal(("shop/web:http", Frontends.NodePort, PacketVerdict.Forward), (outside.Match, outside.Frontend, outside.Verdict));
        Assert.Equal(["10.244.1.2:8080"], Endpoints(outside));
        Assert.False(outside.Masquerade);
        Assert.Contains("on this node", outside.Reason, StringComparison.Ordinal);
        Assert.Equal(["10.244.1.2:8080", "10.244.2.2:8080"], Endpoints(pod));
        // Positive control: a port that is not a node port passes untouched.
        Assert.Equal(PacketVerdict.Pass, IptablesTracer.Trace(tables, Tcp("192.168.0.10", 30099), Node).Verdict);
    }

    [Fact]
    public async Task NoEndpoints_ClusterIPAndNodePort_AreRejected()
    {
        var tables = await TablesAsync("no-endpoints");
        var cluster = IptablesTracer.Trace(tables, Tcp("10.96.0.12", 80), Node);
        var nodePort = IptablesTracer.Trace(tables, Tcp("192.168.0.10", 30090), Node);

        Assert.Equal(("shop/lonely:http", Frontends.ClusterIP, PacketVerdict.Reject, "no endpoints"), (cluster.Match, cluster.Frontend, cluster.Verdict, cluster.Reason));
        Assert.Equal(("shop/lonely:http", Frontends.NodePort, PacketVerdict.Reject), (nodePort.Match, nodePort.Frontend, nodePort.Verdict));
        Assert.Empty(cluster.Endpoints);
    }

    [Fact]
    public async Task NodePort_LocalPolicyWithoutLocalEndpoint_IsDropped_ButPodsStillReachTheService()
    {
        var tables = await TablesAsync("external-policy-local-no-local-endpoints");
        var outside = IptablesTracer.Trace(tables, Tcp("192.168.0.10", 30025), Node);
        var pod = IptablesTracer.Trace(tables, Tcp("192.168.0.10", 30025, from: "10.244.1.9"), Node);

        Assert.Equal((Frontends.NodePort, PacketVerdict.Drop), (outside.Frontend, outside.Verdict));
        Assert.Contains("Local", outside.Reason, StringComparison.Ordinal);
        Assert.Equal(PacketVerdict.Forward, pod.Verdict);
        Assert.Equal(["10.244.2.2:8080"], Endpoints(pod));
    }

    [Fact]
    public async Task LoadBalancerSourceRanges_InsideForwards_OutsideDrops()
    {
        var tables = await TablesAsync("loadbalancer-source-ranges");
        var inside = IptablesTracer.Trace(tables, Tcp("198.51.100.22", 80, from: "203.0.113.7"), Node);
        var outside = IptablesTracer.Trace(tables, Tcp("198.51.100.22", 80, from: "10.1.1.1"), Node);

        Assert.Equal(("shop/web:http", Frontends.LoadBalancerIP, PacketVerdict.Forward), (inside.Match, inside.Frontend, inside.Verdict));
        Assert.Equal(["10.244.1.2:8080"], Endpoints(inside));
        Assert.Equal(("shop/web:http", Frontends.LoadBalancerIP, PacketVerdict.Drop), (outside.Match, outside.Frontend, outside.Verdict));
        Assert.Equal("source outside loadBalancerSourceRanges", outside.Reason);
    }

    [Fact]
    public async Task SessionAffinity_IsReported()
    {
        var tables = await TablesAsync("session-affinity");
        var sticky = IptablesTracer.Trace(tables, Tcp("10.96.0.23", 80), Node);

        Assert.True(sticky.Affinity);
        Assert.Equal(PacketVerdict.Forward, sticky.Verdict);
        Assert.Equal(2, sticky.Endpoints.Count);
        // Positive control: the same tracer reports no affinity for a service without it.
        Assert.False(IptablesTracer.Trace(await TablesAsync("external-policy-local"), Tcp("10.96.0.24", 80), Node).Affinity);
    }

    [Fact]
    public async Task Udp_MatchesOnlyUdp()
    {
        var tables = await TablesAsync("udp");
        var udp = IptablesTracer.Trace(tables, new PacketQuestion(Protocol.UDP, IPAddress.Parse("10.96.0.30"), 53), Node);
        var tcp = IptablesTracer.Trace(tables, Tcp("10.96.0.30", 53), Node);

        Assert.Equal(["10.244.1.2:8080"], Endpoints(udp));
        Assert.Equal(PacketVerdict.Pass, tcp.Verdict);
        Assert.Null(tcp.Match);
        Assert.Equal("nothing of ours matches", tcp.Reason);
    }

    [Fact]
    public async Task DualStack_IPv6_ClusterIP_ReachesTheIPv6Endpoints()
    {
        var tables = await TablesAsync("dual-stack", IpFamily.IPv6);
        var fate = IptablesTracer.Trace(tables, Tcp("fd00:10:96::31", 80), Node);

        Assert.Equal(PacketVerdict.Forward, fate.Verdict);
        Assert.Equal(["[fd00:10:244:1::2]:8080", "[fd00:10:244:1::3]:8080"], Endpoints(fate));
    }

    [Fact]
    public async Task ARuleRemovedBehindTheDaemonsBack_IsSeen()
    {
        var tables = await TablesAsync("external-policy-local");
        var nat = tables.Single(t => t.Name == "nat");
        var svc = nat.Rules.Keys.Single(c => c.StartsWith("KUBE-SVC-", StringComparison.Ordinal));
        // Drop the jump to the first endpoint, as `iptables -D` would.
        var rules = nat.Rules.ToDictionary(r => r.Key, r => r.Key == svc
            ? (IReadOnlyList<string>)r.Value.Where(rule => !rule.Contains("statistic", StringComparison.Ordinal)).ToList()
            : r.Value);
        var edited = tables.Select(t => t.Name == "nat" ? t with { Rules = rules } : t).ToList();

        var fate = IptablesTracer.Trace(edited, Tcp("10.96.0.24", 80), Node);

        Assert.Equal(["10.244.2.2:8080"], Endpoints(fate));
        Assert.Equal(1.0, fate.Endpoints[0].Share, 6);
    }

    [Fact]
    public void ReadsRulesAsIptablesNftSavePrintsThem()
    {
        // iptables-nft-save orders options its own way, prints ten decimals and may use goto.
        const string save = """
            *nat
            :PREROUTING ACCEPT [0:0]
            :KUBE-SERVICES - [0:0]
            :KUBE-SVC-A - [0:0]
            :KUBE-SEP-1 - [0:0]
            :KUBE-SEP-2 - [0:0]
            :KUBE-MARK-MASQ - [0:0]
            -A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
            -A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "ns/a:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-A
            -A KUBE-SVC-A ! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m comment --comment "ns/a:http cluster IP" -m tcp --dport 80 -j KUBE-MARK-MASQ
            -A KUBE-SVC-A -m comment --comment "ns/a:http -> 10.244.1.2:8080" -m statistic --mode random --probability 0.25000000000 -j KUBE-SEP-1
            -A KUBE-SVC-A -m foo --bar 1 -j KUBE-SEP-1
            -A KUBE-SVC-A -m comment --comment "ns/a:http -> 10.244.1.3:8080" -g KUBE-SEP-2
            -A KUBE-SEP-1 -p tcp -m comment --comment ns/a:http -m tcp -j DNAT --to-destination 10.244.1.2:8080
            -A KUBE-SEP-2 -p tcp -m comment --comment ns/a:http -m tcp -j DNAT --to-destination 10.244.1.3:8080
            -A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
            COMMIT
            """;
        var fate = IptablesTracer.Trace(IptablesSave.ParseTables(save), Tcp("10.96.0.10", 80), Node);

        Assert.Equal(("ns/a:http", Frontends.ClusterIP), (fate.Match, fate.Frontend));
        Assert.Equal([("10.244.1.2:8080", 0.25), ("10.244.1.3:8080", 0.75)], fate.Endpoints.Select(e => (e.Endpoint, Math.Round(e.Share, 6))));
        Assert.Contains(fate.Steps, s => s.StartsWith("skipped (option --bar is not understood)", StringComparison.Ordinal));
    }
}
