using System.Net;
using System.Net.Sockets;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// <c>explain --mode=ebpf</c> over real maps: the socket hooks' and the tc programs' objects loaded with their
/// maps pinned in a private bpffs, filled by hand as the planner would, and read back through the pins by
/// <see cref="EbpfExplainer"/> (never the objects' own fds).
/// </summary>
public sealed class EbpfExplainerTests
{
    private static readonly IPAddress ClusterIp = IPAddress.Parse("10.96.0.10");
    private static readonly IPAddress LoadBalancerIp = IPAddress.Parse("192.0.2.50");
    private static readonly IPAddress NodeIp = IPAddress.Parse("203.0.113.1");
    private static readonly IPAddress PodA = IPAddress.Parse("10.244.1.2");
    private static readonly IPAddress PodB = IPAddress.Parse("10.244.1.3");
    private static readonly IPAddress OffNode = IPAddress.Parse("198.51.100.7");

    [KernelFact]
    public async Task ClusterIp_FromTheNode_SpreadsEquallyOverTheSlots()
    {
        using var maps = new PinnedMaps();
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: MapLayout.ServiceFlagMasquerade, backends: [1, 2]);

        var fate = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp);

        Assert.Equal(PacketVerdict.Forward, fate.Verdict);
        Assert.Equal(Frontends.ClusterIP, fate.Frontend);
        Assert.Null(fate.Match); // no names pinned
        Assert.Equal([("10.244.1.2:8080", 0.5), ("10.244.1.3:8080", 0.5)], fate.Endpoints.Select(e => (e.Endpoint, e.Share)));
        Assert.False(fate.Masquerade); // a socket connects from its own address: the flag is for tc's off-node clients
        Assert.Contains(fate.Steps, s => s.Contains("socket hooks", StringComparison.Ordinal));
        // Another port and another protocol: not ours.
        Assert.Equal(PacketVerdict.Pass, (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 81, NodeIp)).Verdict);
        Assert.Equal(PacketVerdict.Pass, (await maps.ExplainAsync(Protocol.UDP, ClusterIp, 80, NodeIp)).Verdict);
    }

    [KernelFact]
    public async Task ClusterIp_FromOffTheNode_IsMasqueradedByTheFlag()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: MapLayout.ServiceFlagMasquerade, backends: [1, 2]);
        maps.Frontend(ClusterIp, 81, revNatId: 2, flags: 0, backends: [1]);

        var masqueraded = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, OffNode);
        var kept = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 81, OffNode);

        Assert.Equal(PacketVerdict.Forward, masqueraded.Verdict);
        Assert.True(masqueraded.Masquerade);
        Assert.Contains(masqueraded.Steps, s => s.Contains("tc ingress", StringComparison.Ordinal));
        Assert.False(kept.Masquerade); // control: the same path without the flag
        Assert.Equal(["10.244.1.2:8080"], kept.Endpoints.Select(e => e.Endpoint));
    }

    [KernelFact]
    public async Task PodSource_InTheLocalSources_MeetsTheSocketHooks()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: MapLayout.ServiceFlagMasquerade, backends: [1, 2]);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 2, flags: MapLayout.ServiceFlagNodePort | MapLayout.ServiceFlagMasquerade, backends: [1, 2]);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 3, flags: MapLayout.ServiceFlagNodePort, backends: [2], scope: MapLayout.ScopeExternal);
        maps.NodeAddress(NodeIp);
        var pod = IPAddress.Parse("10.244.2.9");

        // The control: without pp_localsrc4_v1 entries a pod's address is taken for an off-node client (tc, masqueraded).
        var unknown = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, pod);
        Assert.True(unknown.Masquerade);
        Assert.Contains(unknown.Steps, s => s.Contains("tc ingress", StringComparison.Ordinal));

        maps.LocalSources("10.244.0.0/16");
        var clusterIp = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, pod);
        var nodePort = await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, pod);
        var offNode = await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, OffNode);

        Assert.False(clusterIp.Masquerade);
        Assert.Contains(clusterIp.Steps, s => s.Contains($"{MapLayout.LocalSourcesMap}[10.244.2.9]: in 10.244.0.0/16", StringComparison.Ordinal));
        Assert.Contains(clusterIp.Steps, s => s.Contains("socket hooks", StringComparison.Ordinal));
        Assert.Equal(["10.244.1.2:8080", "10.244.1.3:8080"], nodePort.Endpoints.Select(e => e.Endpoint)); // the internal scope, as sockets read it
        Assert.Equal(["10.244.1.3:8080"], offNode.Endpoints.Select(e => e.Endpoint)); // the external scope off the node
    }

    /// <summary>
    /// A pod's socket whose verdict masquerades it (a node port under policy Cluster, a cluster IP with masquerade-local)
    /// is left to tc, which masquerades it; a hairpin endpoint (the pod itself) is masqueraded alone. The node's own
    /// socket and a cluster IP that masquerades off-cluster sources only keep the source (controls).
    /// </summary>
    [KernelFact]
    public async Task PodSource_MasqueradedWhereItsVerdictSaysSo_AndOnHairpin()
    {
        using var maps = new PinnedMaps(tc: true);
        var masqueradeAll = IPAddress.Parse("10.96.0.11");
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: MapLayout.ServiceFlagMasquerade, backends: [1, 2]);
        maps.Frontend(masqueradeAll, 80, revNatId: 2, flags: MapLayout.ServiceFlagMasquerade | MapLayout.ServiceFlagMasqueradeLocal, backends: [2]);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 3, flags: MapLayout.ServiceFlagNodePort | MapLayout.ServiceFlagMasquerade, backends: [2]);
        maps.NodeAddress(NodeIp);
        maps.LocalSources("10.244.0.0/16");
        var pod = IPAddress.Parse("10.244.1.2"); // backend 1

        var all = await maps.ExplainAsync(Protocol.TCP, masqueradeAll, 80, pod);
        var nodePort = await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, pod);
        var hairpin = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, pod);
        var node = await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, NodeIp);

        Assert.True(all.Masquerade);
        Assert.Contains(all.Steps, s => s.Contains("leave it on the frontend", StringComparison.Ordinal));
        Assert.True(nodePort.Masquerade);
        Assert.False(hairpin.Masquerade);
        Assert.Equal([("10.244.1.2:8080", true), ("10.244.1.3:8080", false)], hairpin.Endpoints.Select(e => (e.Endpoint, e.Masquerade)));
        Assert.False(node.Masquerade);
    }

    [KernelFact]
    public async Task NoEndpoints_DroppedOrRejected_BySocketsAndByTc()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: 0, backends: []);
        maps.Frontend(ClusterIp, 82, revNatId: 2, flags: MapLayout.ServiceFlagDrop, backends: []);
        maps.NodeAddress(NodeIp);

        Assert.Equal(PacketVerdict.Reject, (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Verdict);
        Assert.Equal(PacketVerdict.Drop, (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 82, NodeIp)).Verdict); // sock.c leaves the VIP, pp_egress drops
        Assert.Equal(PacketVerdict.Reject, (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, OffNode)).Verdict);
        var dropped = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 82, OffNode);
        Assert.Equal(PacketVerdict.Drop, dropped.Verdict);
        Assert.Empty(dropped.Endpoints);
    }

    [KernelFact]
    public async Task NodePort_OnANodeAddressOnly_OffNodeClientsGetTheExternalScope_SocketsTheInternal()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 3, flags: MapLayout.ServiceFlagNodePort, backends: [1, 2]);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 4, flags: MapLayout.ServiceFlagNodePort, backends: [2], scope: MapLayout.ScopeExternal);
        maps.NodeAddress(NodeIp);

        var offNode = await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, OffNode);
        Assert.Equal(PacketVerdict.Forward, offNode.Verdict);
        Assert.Equal(Frontends.NodePort, offNode.Frontend);
        Assert.Equal(["10.244.1.3:8080"], offNode.Endpoints.Select(e => e.Endpoint));
        var socket = await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, NodeIp);
        Assert.Equal(PacketVerdict.Forward, socket.Verdict);
        Assert.Equal(Frontends.NodePort, socket.Frontend);
        Assert.Equal(["10.244.1.2:8080", "10.244.1.3:8080"], socket.Endpoints.Select(e => e.Endpoint));
        Assert.Contains(socket.Steps, s => s.Contains("socket hooks", StringComparison.Ordinal));
        // Not a node address, loopback (never in pp_nodeip4_v1: no localhost node ports) and 0.0.0.0: not a node port, for either.
        foreach (var address in new[] { IPAddress.Parse("203.0.113.9"), IPAddress.Loopback, IPAddress.Any })
        {
            Assert.Equal(PacketVerdict.Pass, (await maps.ExplainAsync(Protocol.TCP, address, 30080, OffNode)).Verdict);
            Assert.Equal(PacketVerdict.Pass, (await maps.ExplainAsync(Protocol.TCP, address, 30080, NodeIp)).Verdict);
        }
    }

    [KernelFact]
    public async Task NodePort_EntryWithoutTheFlag_IsNotANodePort()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 3, flags: 0, backends: [1]);
        maps.NodeAddress(NodeIp);

        Assert.Equal(PacketVerdict.Pass, (await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, OffNode)).Verdict);
        Assert.Equal(PacketVerdict.Pass, (await maps.ExplainAsync(Protocol.TCP, NodeIp, 30080, NodeIp)).Verdict);
    }

    [KernelFact]
    public async Task SourceRanges_AllowInside_DropOutside_AnotherFrontendsRangeNoHelp()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(LoadBalancerIp, 80, revNatId: 4, flags: MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges, backends: [1]);
        maps.Frontend(LoadBalancerIp, 81, revNatId: 5, flags: MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges, backends: [1]);
        maps.SourceRange(4, IPAddress.Parse("198.51.100.0"), 24);
        maps.SourceRange(5, IPAddress.Parse("192.0.2.0"), 24);

        var inside = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, OffNode);
        var outside = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, IPAddress.Parse("203.0.113.77"));
        var otherRange = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 81, OffNode);

        Assert.Equal(PacketVerdict.Forward, inside.Verdict);
        Assert.Equal(Frontends.LoadBalancerIP, inside.Frontend);
        Assert.Contains(inside.Steps, s => s.Contains("allowed by 198.51.100.0/24", StringComparison.Ordinal));
        Assert.Equal(PacketVerdict.Drop, outside.Verdict);
        Assert.Contains("loadBalancerSourceRanges", outside.Reason, StringComparison.Ordinal);
        Assert.Equal(PacketVerdict.Drop, otherRange.Verdict);
    }

    /// <summary>
    /// A local socket (the node, a pod) against source ranges: pp_egress checks the source. Allowed when a range holds
    /// it; a node address allowed when the master says a range holds a node IP (source-ranges-node); dropped otherwise
    /// (control: the same node address without the flag, the same pod with its range).
    /// </summary>
    [KernelFact]
    public async Task SourceRanges_LocalSockets_TheSourceOrTheNodeFlag()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.NodeAddress(NodeIp);
        maps.LocalSources("10.244.0.0/16");
        maps.Frontend(LoadBalancerIp, 80, revNatId: 4, flags: MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges, backends: [1]);
        maps.Frontend(LoadBalancerIp, 81, revNatId: 5,
            flags: MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges | MapLayout.ServiceFlagSourceRangesNode, backends: [1]);
        maps.SourceRange(4, PodB, 32);
        maps.SourceRange(5, OffNode, 32);

        var node = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, NodeIp);
        var nodeFlagged = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 81, NodeIp);
        var pod = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, PodA);
        var podInRange = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, PodB);

        Assert.Equal(PacketVerdict.Drop, node.Verdict);
        Assert.Contains(SockPrograms.Egress, node.Reason, StringComparison.Ordinal);
        Assert.Contains(node.Steps, s => s.Contains("socket hooks", StringComparison.Ordinal));
        Assert.Equal(PacketVerdict.Forward, nodeFlagged.Verdict);
        Assert.Contains(nodeFlagged.Steps, s => s.Contains("source-ranges-node", StringComparison.Ordinal));
        Assert.Equal(PacketVerdict.Drop, pod.Verdict);
        Assert.Equal(PacketVerdict.Forward, podInRange.Verdict);
        Assert.Contains(podInRange.Steps, s => s.Contains("allowed by 10.244.1.3/32", StringComparison.Ordinal));
    }

    /// <summary>IPv6: source ranges from pp_srcrange6_v1 and pods from pp_localsrc6_v1, as tc's IPv6 path reads them.</summary>
    [KernelFact]
    public async Task IPv6_SourceRangesAndLocalSources_FromTheirOwnTries()
    {
        using var maps = new PinnedMaps(tc: true);
        var loadBalancer = IPAddress.Parse("2001:db8:ff::20");
        var clusterIp = IPAddress.Parse("fd00:10:96::10");
        var pod = IPAddress.Parse("fd00:10:244:2::9");
        maps.AddBackend(3, IPAddress.Parse("fd00:10:244:1::2"));
        maps.Frontend(loadBalancer, 80, revNatId: 6, flags: MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges, backends: [3]);
        maps.Frontend(clusterIp, 80, revNatId: 7, flags: MapLayout.ServiceFlagMasquerade, backends: [3]);
        maps.SourceRange(6, IPAddress.Parse("2001:db8:100::"), 48);
        maps.SourceRange(6, IPAddress.Parse("0.0.0.0"), 0); // an IPv4 range of the same id: no help to an IPv6 client

        var inside = await maps.ExplainAsync(Protocol.TCP, loadBalancer, 80, IPAddress.Parse("2001:db8:100::5"));
        var outside = await maps.ExplainAsync(Protocol.TCP, loadBalancer, 80, IPAddress.Parse("2001:db8:200::5"));
        var unknownPod = await maps.ExplainAsync(Protocol.TCP, clusterIp, 80, pod);
        maps.LocalSources("fd00:10:244::/48");
        var knownPod = await maps.ExplainAsync(Protocol.TCP, clusterIp, 80, pod);

        Assert.Equal(PacketVerdict.Forward, inside.Verdict);
        Assert.Contains(inside.Steps, s => s.Contains($"{MapLayout.SourceRanges6Map}[rev_nat 6, 2001:db8:100::5]: allowed by 2001:db8:100::/48", StringComparison.Ordinal));
        Assert.Equal(PacketVerdict.Drop, outside.Verdict);
        Assert.Contains(outside.Steps, s => s.Contains($"{MapLayout.SourceRanges6Map}[rev_nat 6, 2001:db8:200::5]: no range holds the client", StringComparison.Ordinal));
        Assert.True(unknownPod.Masquerade); // the control: without the prefix a pod is taken for an off-node client (tc)
        Assert.False(knownPod.Masquerade);
        Assert.Contains(knownPod.Steps, s => s.Contains($"{MapLayout.LocalSources6Map}[fd00:10:244:2::9]: in fd00:10:244::/48", StringComparison.Ordinal));
    }

    [KernelFact]
    public async Task Affinity_AndTheExternalScopeWinsForOffNodeClients()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(LoadBalancerIp, 80, revNatId: 6, flags: MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagAffinity, backends: [1, 2], affinityTimeout: 10800);
        maps.Frontend(LoadBalancerIp, 80, revNatId: 7, flags: MapLayout.ServiceFlagExternal, backends: [2], scope: MapLayout.ScopeExternal);
        maps.NodeAddress(NodeIp);

        var socket = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, NodeIp);
        var external = await maps.ExplainAsync(Protocol.TCP, LoadBalancerIp, 80, OffNode);

        Assert.True(socket.Affinity);
        Assert.Contains("10800s", socket.Reason, StringComparison.Ordinal);
        Assert.Equal(2, socket.Endpoints.Count);
        Assert.False(external.Affinity);
        Assert.Equal(["10.244.1.3:8080"], external.Endpoints.Select(e => e.Endpoint));
        Assert.Equal(Frontends.ExternalIP, external.Frontend);
    }

    [KernelFact]
    public async Task ExplainFollowsTheMaps_AnElementRemovedBehindTheDaemonsBackIsSeen()
    {
        using var maps = new PinnedMaps();
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: 0, backends: [1, 2]);
        Assert.Equal(2, (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Endpoints.Count);

        maps.RemoveBackend(2);
        var fate = await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp);

        Assert.Equal(["10.244.1.2:8080"], fate.Endpoints.Select(e => e.Endpoint));
        Assert.Equal(0.5, fate.Endpoints[0].Share);
        Assert.Contains("1 of 2 slots lead nowhere", fate.Reason, StringComparison.Ordinal);
    }

    [KernelFact]
    public async Task List_EveryFrontendOnce_AndNoPinsMeansNoState()
    {
        using var maps = new PinnedMaps(tc: true);
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: 0, backends: [1]);
        maps.Frontend(LoadBalancerIp, 80, revNatId: 2, flags: MapLayout.ServiceFlagExternal, backends: [1, 2]);
        maps.Frontend(LoadBalancerIp, 80, revNatId: 3, flags: MapLayout.ServiceFlagExternal, backends: [2], scope: MapLayout.ScopeExternal);
        maps.Frontend(IPAddress.Any, 30080, revNatId: 4, flags: MapLayout.ServiceFlagNodePort, backends: []);
        maps.NodeAddress(NodeIp);

        var list = await maps.Explainer.ListAsync(CancellationToken.None);

        Assert.Equal(["tcp 10.96.0.10:80", "tcp 192.0.2.50:80", "tcp 203.0.113.1:30080"], list.Select(f => f.Question.ToString()).Order(StringComparer.Ordinal));
        Assert.Equal(PacketVerdict.Reject, list.Single(f => f.Question.Port == 30080).Fate.Verdict);
        Assert.True(await maps.Explainer.HoldsStateAsync(CancellationToken.None));

        using var empty = new TestBpfFs();
        var none = new EbpfExplainer(empty.Path);
        Assert.False(await none.HoldsStateAsync(CancellationToken.None));
        Assert.Equal(PacketVerdict.Pass, (await none.ExplainAsync(new PacketQuestion(Protocol.TCP, ClusterIp, 80), CancellationToken.None)).Verdict);
    }

    [KernelFact]
    public async Task Names_FromThePinnedNamesMap_ByReverseNatId()
    {
        using var maps = new PinnedMaps();
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: 0, backends: [1]);
        maps.Frontend(ClusterIp, 81, revNatId: 2, flags: 0, backends: []);
        maps.Name(1, "test/web:http");

        Assert.Equal("test/web:http", (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);
        Assert.Null((await maps.ExplainAsync(Protocol.TCP, ClusterIp, 81, NodeIp)).Match); // control: no name for id 2
        maps.Name(1, new string('x', 100));
        Assert.Equal(new string('x', EbpfNames.NameBytes), (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match); // cut, not refused
    }

    [KernelFact]
    public async Task TryWrite_NamesEveryMasterOfAPlan_AndRewritesAReusedId()
    {
        using var maps = new PinnedMaps();
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: 0, backends: [1]);

        EbpfNames.TryWrite(maps.PinDirectory, NamesPlan("web", "http"), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.Equal("test/web:http", (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);
        EbpfNames.TryWrite(maps.PinDirectory, NamesPlan("other", "dns"), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        Assert.Equal("test/other:dns", (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);
        Assert.Single(EbpfNames.Read(maps.PinDirectory)); // slots are not named
    }

    /// <summary>A cold sync's names go in one batch: every master of the plan named by its id, a long name cut, no slot named.</summary>
    [KernelFact]
    public void TryWrite_ManyMasters_EachNamedByItsId_ALongNameCut()
    {
        using var maps = new PinnedMaps();
        var writes = new List<MapWrite>();
        var longName = new string('y', 80);
        for (var i = 1; i <= 300; i++)
        {
            var key = ServiceKey.For(new IPAddress([10, 96, (byte)(i >> 8), (byte)i]), 80, ProtocolType.Tcp);
            var owner = new ServicePortName(new NamespacedName("test", i == 300 ? longName : $"svc{i}"), "http", Protocol.TCP);
            writes.Add(new ServiceUpdate(key.WithSlot(1), ServiceValue.ForSlot(1), owner));
            writes.Add(new ServiceUpdate(key, ServiceValue.Master(1, (uint)(1000 + i)), owner));
        }

        EbpfNames.TryWrite(maps.PinDirectory, new EbpfPlan([.. writes], null!, Full: true), Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);

        var names = EbpfNames.Read(maps.PinDirectory);
        Assert.Equal(300, names.Count);
        Assert.Equal("test/svc1:http", names[1001]);
        Assert.Equal("test/svc299:http", names[1299]);
        Assert.Equal(($"test/{longName}:http")[..EbpfNames.NameBytes], names[1300]);
    }

    [KernelFact]
    public async Task NamesWriter_KeepsTheMapOpenBetweenPlans_AFullPlanPinsANewOneWhenTheOldPinWent()
    {
        using var maps = new PinnedMaps();
        maps.Frontend(ClusterIp, 80, revNatId: 1, flags: 0, backends: [1]);
        using var writer = new EbpfNamesWriter(maps.PinDirectory, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);

        writer.Write(NamesPlan("web", "http", full: false));
        Assert.Equal("test/web:http", (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);
        writer.Write(NamesPlan("api", "http", full: false)); // through the fd held since the first plan
        Assert.Equal("test/api:http", (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);

        File.Delete(Path.Combine(maps.PinDirectory, EbpfNames.MapName));
        Assert.Null((await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);
        writer.Write(NamesPlan("db", "http", full: true));
        Assert.Equal("test/db:http", (await maps.ExplainAsync(Protocol.TCP, ClusterIp, 80, NodeIp)).Match);
    }

    /// <summary>A plan writing the master entry (reverse-NAT id 1) and slot 1 of ClusterIp:80/tcp for test/<paramref name="service"/>:<paramref name="port"/>.</summary>
    private static EbpfPlan NamesPlan(string service, string port, bool full = false)
    {
        var key = ServiceKey.For(ClusterIp, 80, ProtocolType.Tcp);
        var owner = new ServicePortName(new NamespacedName("test", service), port, Protocol.TCP);
        return new([new ServiceUpdate(key, ServiceValue.Master(1, 1), owner), new ServiceUpdate(key.WithSlot(1), ServiceValue.ForSlot(1), owner)], null!, full);
    }

    /// <summary>
    /// The objects' maps pinned in a private bpffs, as EbpfKernel pins them (sock.o pins its own, the source-ranges tries
    /// included; with <c>tc</c>, the local-sources tries too); backends 1 and 2 are PodA:8080 and PodB:8080.
    /// </summary>
    private sealed class PinnedMaps : IDisposable
    {
        private readonly TestBpfFs _bpfFs = new();
        private readonly BpfObject _sock;
        private readonly BpfObject? _tc;
        private readonly string _directory;

        public PinnedMaps(bool tc = false)
        {
            try
            {
                _directory = Path.Combine(_bpfFs.Path, EbpfLocation.PinFolder);
                Directory.CreateDirectory(_directory);
                _sock = SockPrograms.Load(_directory);
                if (tc)
                {
                    _tc = TcPrograms.Load(_sock.Maps);
                    _tc.Map(MapLayout.LocalSourcesMap).Pin(Path.Combine(_directory, MapLayout.LocalSourcesMap));
                    _tc.Map(MapLayout.LocalSources6Map).Pin(Path.Combine(_directory, MapLayout.LocalSources6Map));
                }
                Explainer = new EbpfExplainer(_bpfFs.Path);
                var backends = _sock.Map(MapLayout.BackendsMap);
                backends.Update(1u, Backend.For(PodA, 8080, ProtocolType.Tcp));
                backends.Update(2u, Backend.For(PodB, 8080, ProtocolType.Tcp));
            }
            catch
            {
                Dispose();
                throw;
            }
        }

        public EbpfExplainer Explainer { get; }

        public string PinDirectory => _directory;

        public void Frontend(IPAddress address, int port, uint revNatId, ushort flags, uint[] backends, uint affinityTimeout = 0, byte scope = MapLayout.ScopeInternal)
        {
            var services = _sock.Map(MapLayout.ServicesMap);
            var key = ServiceKey.For(address, port, ProtocolType.Tcp) with { Scope = scope };
            for (var i = 0; i < backends.Length; i++) services.Update(key.WithSlot(i + 1), ServiceValue.ForSlot(backends[i]));
            services.Update(key, ServiceValue.Master(backends.Length, revNatId, flags, affinityTimeout));
        }

        public void NodeAddress(IPAddress address) => _sock.Map(MapLayout.NodeAddressesMap).Update(MapLayout.NetworkAddress(address), default(NodeAddress));

        /// <summary>A local-sources prefix in its family's trie.</summary>
        public void LocalSources(string text)
        {
            var prefix = IpPrefix.Parse(text);
            if (prefix.Family == IpFamily.IPv4) _tc!.Map(MapLayout.LocalSourcesMap).Update(LocalSource4Key.For(prefix), default(LocalSource4Value));
            else _tc!.Map(MapLayout.LocalSources6Map).Update(LocalSource6Key.For(prefix), default(LocalSource4Value));
        }

        /// <summary>An allowed client prefix in its family's trie.</summary>
        public void SourceRange(uint revNatId, IPAddress address, int length)
        {
            if (address.AddressFamily == AddressFamily.InterNetwork) _sock.Map(MapLayout.SourceRangesMap).Update(SourceRange4Key.For(revNatId, address, length), 1u);
            else _sock.Map(MapLayout.SourceRanges6Map).Update(SourceRange6Key.For(revNatId, address, length), 1u);
        }

        public void AddBackend(uint id, IPAddress address) => _sock.Map(MapLayout.BackendsMap).Update(id, Backend.For(address, 8080, ProtocolType.Tcp));

        public void Name(uint revNatId, string name)
        {
            using var names = EbpfNames.OpenOrCreate(_directory);
            EbpfNames.Set(names, revNatId, name);
        }

        public void RemoveBackend(uint id) => Assert.True(_sock.Map(MapLayout.BackendsMap).Delete(id));

        public Task<PacketFate> ExplainAsync(Protocol protocol, IPAddress destination, int port, IPAddress? source) =>
            Explainer.ExplainAsync(new PacketQuestion(protocol, destination, port, source), CancellationToken.None);

        public void Dispose()
        {
            _tc?.Dispose();
            _sock?.Dispose();
            if (_directory is not null && Directory.Exists(_directory)) Directory.Delete(_directory, recursive: true);
            _bpfFs.Dispose();
        }
    }
}
