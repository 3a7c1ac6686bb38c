using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>
/// The verdicts Core hands every data plane, one row per situation the iptables, nftables and IPVS
/// planners each used to work out for themselves: Cluster / Local traffic policies × endpoints (none,
/// remote only, local) × the serving-terminating fallback × IP families × masquerade settings ×
/// affinity × source ranges. A verdict is written "forward cluster|local ADDR,ADDR", "drop" or "reject".
/// </summary>
public class VerdictTests
{
    private static readonly NodeNetwork Network = new()
    {
        NodeName = "node-a",
        LocalDetector = new LocalTrafficDetector(LocalDetectMode.ClusterCidr,
            new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.0.0/16"), IpPrefix.Parse("fd00:10:244::/48")])),
        NodeIPs = new EquatableArray<IPAddress>([IPAddress.Parse("203.0.113.1")]),
    };

    private static readonly NodeNetwork NoDetector = Network with { LocalDetector = LocalTrafficDetector.None };
    private static readonly NodeNetwork MasqueradeAll = Network with { MasqueradeAll = true };
    private static readonly NodeNetwork IPv4DetectorOnly = Network with
    {
        LocalDetector = new LocalTrafficDetector(LocalDetectMode.ClusterCidr, new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.0.0/16")])),
    };

    /// <summary>One situation and the verdicts expected for it.</summary>
    public sealed record Row(string Name, ServicePortInfo Info, EndpointInfo[] Endpoints, string Internal, string External)
    {
        public IpFamily Family { get; init; } = IpFamily.IPv4;
        public NodeNetwork Network { get; init; } = VerdictTests.Network;
        public SourceMasquerade InternalMasquerade { get; init; }
        public bool ExternalMasquerade { get; init; } = true;
        public LocalShortCircuit ShortCircuit { get; init; }
        public string ClusterPool { get; init; } = "";
        public string LocalPool { get; init; } = "";
        public string AllEndpoints { get; init; } = "";
        public int? Affinity { get; init; }
        public string SourceRanges { get; init; } = "";
        public bool SourceRangesAllowNode { get; init; }
    }

    private static readonly Row[] Rows =
    [
        // ---- both policies Cluster
        new("Cluster, no endpoints: rejected", Service(nodePort: 30080), [], "reject", "reject"),
        new("Cluster, remote endpoints: forwarded to them, off-cluster sources masqueraded",
            Service(nodePort: 30080), [Remote("10.244.1.1"), Remote("10.244.2.1")],
            "forward cluster 10.244.1.1,10.244.2.1", "forward cluster 10.244.1.1,10.244.2.1")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            ClusterPool = "10.244.1.1,10.244.2.1", AllEndpoints = "10.244.1.1,10.244.2.1",
        },
        new("Cluster, local and remote endpoints: forwarded to all",
            Service(nodePort: 30080), [Local("10.244.0.5"), Remote("10.244.1.1")],
            "forward cluster 10.244.0.5,10.244.1.1", "forward cluster 10.244.0.5,10.244.1.1")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            ClusterPool = "10.244.0.5,10.244.1.1", AllEndpoints = "10.244.0.5,10.244.1.1",
        },
        new("Cluster, nothing ready: serving-terminating endpoints serve",
            Service(), [Remote("10.244.1.1", ready: false, terminating: true), Remote("10.244.2.1", ready: false, serving: false, terminating: true)],
            "forward cluster 10.244.1.1", "forward cluster 10.244.1.1")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("Cluster, nothing serving: rejected",
            Service(nodePort: 30080), [Remote("10.244.1.1", ready: false, serving: false, terminating: true)], "reject", "reject"),

        // ---- externalTrafficPolicy Local
        new("External Local, no endpoints: rejected", Service(nodePort: 30080, externalLocal: true), [], "reject", "reject")
        {
            ExternalMasquerade = false,
        },
        new("External Local, remote endpoints only: external dropped, pods and the node short-circuited",
            Service(nodePort: 30080, externalLocal: true), [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "drop")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("External Local, a local endpoint: external forwarded to it, the client's source kept",
            Service(nodePort: 30080, externalLocal: true), [Local("10.244.0.5"), Remote("10.244.1.1")],
            "forward cluster 10.244.0.5,10.244.1.1", "forward local 10.244.0.5")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "10.244.0.5,10.244.1.1", LocalPool = "10.244.0.5", AllEndpoints = "10.244.0.5,10.244.1.1",
        },
        new("External Local, only a terminating local endpoint: it serves external traffic, ready ones the rest",
            Service(nodePort: 30080, externalLocal: true), [Local("10.244.0.5", ready: false, terminating: true), Remote("10.244.1.1")],
            "forward cluster 10.244.1.1", "forward local 10.244.0.5")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "10.244.1.1", LocalPool = "10.244.0.5", AllEndpoints = "10.244.0.5,10.244.1.1",
        },
        new("External Local without a detector: only the node's own traffic is short-circuited",
            Service(nodePort: 30080, externalLocal: true), [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "drop")
        {
            Network = NoDetector, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.Node,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },

        // ---- internalTrafficPolicy Local
        new("Internal Local, no external frontends, remote endpoints only: nothing reachable, rejected",
            Service(internalLocal: true), [Remote("10.244.1.1")], "reject", "reject"),
        new("Internal Local, a local endpoint: cluster IP forwarded to it",
            Service(internalLocal: true), [Local("10.244.0.5"), Remote("10.244.1.1")], "forward local 10.244.0.5", "drop")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            LocalPool = "10.244.0.5", AllEndpoints = "10.244.0.5",
        },
        new("Internal Local, only a terminating local endpoint: it serves",
            Service(internalLocal: true), [Local("10.244.0.5", ready: false, terminating: true), Remote("10.244.1.1")], "forward local 10.244.0.5", "drop")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            LocalPool = "10.244.0.5", AllEndpoints = "10.244.0.5",
        },
        new("Internal Local with a node port, remote endpoints only: cluster IP dropped, external forwarded",
            Service(nodePort: 30080, internalLocal: true), [Remote("10.244.1.1")], "drop", "forward cluster 10.244.1.1")
        {
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("Both Local with a node port, remote endpoints only: both dropped, local sources short-circuited",
            Service(nodePort: 30080, internalLocal: true, externalLocal: true), [Remote("10.244.1.1")], "drop", "drop")
        {
            ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("Both Local with a node port, a local endpoint: both forwarded to it",
            Service(nodePort: 30080, internalLocal: true, externalLocal: true), [Local("10.244.0.5"), Remote("10.244.1.1")],
            "forward local 10.244.0.5", "forward local 10.244.0.5")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "10.244.0.5,10.244.1.1", LocalPool = "10.244.0.5", AllEndpoints = "10.244.0.5,10.244.1.1",
        },

        // ---- masquerade settings
        new("--masquerade-all: every source reaching the cluster IP is masqueraded",
            Service(), [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "forward cluster 10.244.1.1")
        {
            Network = MasqueradeAll, InternalMasquerade = SourceMasquerade.AllSources,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("No detector: nothing tells off-cluster sources apart, no cluster-IP masquerade",
            Service(), [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "forward cluster 10.244.1.1")
        {
            Network = NoDetector, ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },

        // ---- families
        new("Dual-stack, IPv6 endpoints: the IPv6 family forwards to them",
            Service(clusterIPs: "10.96.0.10,fd00:10:96::10", nodePort: 30080, externalLocal: true), [Remote("10.244.1.1"), Local("fd00:10:244::5")],
            "forward cluster fd00:10:244::5", "forward local fd00:10:244::5")
        {
            Family = IpFamily.IPv6, InternalMasquerade = SourceMasquerade.OffClusterSources, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "fd00:10:244::5", LocalPool = "fd00:10:244::5", AllEndpoints = "fd00:10:244::5",
        },
        new("Dual-stack, the IPv4 family sees only IPv4 endpoints",
            Service(clusterIPs: "10.96.0.10,fd00:10:96::10", nodePort: 30080, externalLocal: true), [Remote("10.244.1.1"), Local("fd00:10:244::5")],
            "forward cluster 10.244.1.1", "drop")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.PodsAndNode,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("Dual-stack, no IPv6 endpoints: the IPv6 family rejects",
            Service(clusterIPs: "10.96.0.10,fd00:10:96::10"), [Remote("10.244.1.1")], "reject", "reject")
        {
            Family = IpFamily.IPv6,
        },
        new("A detector for IPv4 only: IPv6 cannot tell pods apart",
            Service(clusterIPs: "fd00:10:96::10", nodePort: 30080, externalLocal: true), [Remote("fd00:10:244::7")], "forward cluster fd00:10:244::7", "drop")
        {
            Family = IpFamily.IPv6, Network = IPv4DetectorOnly, ExternalMasquerade = false, ShortCircuit = LocalShortCircuit.Node,
            ClusterPool = "fd00:10:244::7", AllEndpoints = "fd00:10:244::7",
        },

        // ---- affinity and source ranges
        new("ClientIP affinity: the timeout is passed on",
            Service() with { StickyTimeoutSeconds = 10800 }, [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "forward cluster 10.244.1.1")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources, Affinity = 10800,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
        },
        new("Source ranges holding a node IP: this family's ranges, and the node is allowed",
            LoadBalancer("203.0.113.0/24", "198.51.100.0/24", "2001:db8::/64"), [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "forward cluster 10.244.1.1")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
            SourceRanges = "203.0.113.0/24,198.51.100.0/24", SourceRangesAllowNode = true,
        },
        new("Source ranges without a node IP: the node is not allowed",
            LoadBalancer("198.51.100.0/24", "2001:db8::/64"), [Remote("10.244.1.1")], "forward cluster 10.244.1.1", "forward cluster 10.244.1.1")
        {
            InternalMasquerade = SourceMasquerade.OffClusterSources,
            ClusterPool = "10.244.1.1", AllEndpoints = "10.244.1.1",
            SourceRanges = "198.51.100.0/24",
        },
        new("Source ranges of the other family only: none for this one",
            LoadBalancer("2001:db8::/64"), [], "reject", "reject"),
    ];

    public static TheoryData<string> Names() => new(Rows.Select(r => r.Name));

    [Theory]
    [MemberData(nameof(Names))]
    public void Decide_Situation_GivesTheVerdictsThePlannersRender(string name)
    {
        var row = Rows.Single(r => r.Name == name);

        var state = EndpointCategorizer.CategorizeByFamily(row.Info, row.Endpoints, null, row.Network);
        var verdict = state.VerdictFor(row.Family);

        Assert.Equal(row.Family, verdict.Family);
        Assert.Equal(row.Internal, Describe(verdict.InternalTraffic));
        Assert.Equal(row.External, Describe(verdict.ExternalTraffic));
        Assert.Equal(row.InternalMasquerade, verdict.InternalMasquerade);
        Assert.Equal(row.ExternalMasquerade, verdict.ExternalMasquerade);
        Assert.Equal(row.ShortCircuit, verdict.LocalShortCircuit);
        Assert.Equal(row.ClusterPool, Join(verdict.ClusterEndpoints));
        Assert.Equal(row.LocalPool, Join(verdict.LocalEndpoints));
        Assert.Equal(row.AllEndpoints, Join(verdict.Endpoints));
        Assert.Equal(row.Affinity, verdict.AffinityTimeoutSeconds);
        Assert.Equal(row.SourceRanges, string.Join(",", verdict.SourceRanges));
        Assert.Equal(row.SourceRangesAllowNode, verdict.SourceRangesAllowNode);
        // A forwarding verdict spreads over exactly its pool.
        foreach (var traffic in new[] { verdict.InternalTraffic, verdict.ExternalTraffic })
            if (traffic.IsForward) Assert.Equal(verdict.EndpointsOf(traffic.Pool), traffic.Endpoints);
    }

    [Fact]
    public void Rows_CoverEveryActionPoolAndShortCircuit()
    {
        // Positive control for the table itself: every kind of outcome appears in it.
        var verdicts = Rows.Select(r => EndpointCategorizer.CategorizeByFamily(r.Info, r.Endpoints, null, r.Network).VerdictFor(r.Family)).ToList();
        var outcomes = verdicts.SelectMany(v => new[] { Describe(v.InternalTraffic).Split(' ')[0] + " " + (v.InternalTraffic.Pool), Describe(v.ExternalTraffic).Split(' ')[0] + " " + v.ExternalTraffic.Pool }).ToHashSet();
        Assert.Superset(new HashSet<string> { "forward Cluster", "forward Local", "drop None", "reject None" }, outcomes);
        Assert.Equal(Enum.GetValues<LocalShortCircuit>().ToHashSet(), verdicts.Select(v => v.LocalShortCircuit).ToHashSet());
        Assert.Equal(Enum.GetValues<SourceMasquerade>().ToHashSet(), verdicts.Select(v => v.InternalMasquerade).ToHashSet());
        Assert.Equal(Rows.Length, Rows.Select(r => r.Name).Distinct().Count());
    }

    [Fact]
    public void ServicePortState_WithoutNetwork_DecidesAsANodeWithoutDetectorOrNodeIPs()
    {
        var info = LoadBalancer("203.0.113.0/24");
        var endpoints = new[] { Remote("10.244.1.1") };

        var withNetwork = EndpointCategorizer.CategorizeByFamily(info, endpoints, null, Network).IPv4Verdict;
        var without = EndpointCategorizer.CategorizeByFamily(info, endpoints, null).IPv4Verdict;

        Assert.Equal((SourceMasquerade.OffClusterSources, true), (withNetwork.InternalMasquerade, withNetwork.SourceRangesAllowNode));
        Assert.Equal((SourceMasquerade.None, false), (without.InternalMasquerade, without.SourceRangesAllowNode));
    }

    private static string Describe(TrafficVerdict verdict) => verdict.Action switch
    {
        TrafficAction.Forward => $"forward {verdict.Pool.ToString().ToLowerInvariant()} {Join(verdict.Endpoints)}",
        TrafficAction.Drop => "drop",
        _ => "reject",
    };

    private static string Join(EquatableArray<EndpointInfo> endpoints) => string.Join(",", endpoints.Select(e => e.Address));

    private static ServicePortInfo Service(string clusterIPs = "10.96.0.10", int nodePort = 0, bool internalLocal = false, bool externalLocal = false) => new()
    {
        Name = new ServicePortName(new NamespacedName("default", "web"), "http", Protocol.TCP),
        Port = 80,
        ClusterIPs = new EquatableArray<IPAddress>(clusterIPs.Split(',').Select(IPAddress.Parse)),
        NodePort = nodePort,
        InternalPolicyLocal = internalLocal,
        ExternalPolicyLocal = externalLocal,
    };

    private static ServicePortInfo LoadBalancer(params string[] sourceRanges) => Service(nodePort: 30080) with
    {
        LoadBalancerIPs = new EquatableArray<IPAddress>([IPAddress.Parse("192.0.2.10")]),
        LoadBalancerSourceRanges = new EquatableArray<IpPrefix>(sourceRanges.Select(IpPrefix.Parse)),
    };

    private static EndpointInfo Local(string ip, bool ready = true, bool serving = true, bool terminating = false) =>
        new(IPAddress.Parse(ip), 8080) { IsLocal = true, NodeName = "node-a", Ready = ready, Serving = serving, Terminating = terminating };

    private static EndpointInfo Remote(string ip, bool ready = true, bool serving = true, bool terminating = false) =>
        new(IPAddress.Parse(ip), 8080) { IsLocal = false, NodeName = "node-b", Ready = ready, Serving = serving, Terminating = terminating };
}
