using System.Net;
using System.Net.Sockets;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// bpf/tc.c run by the kernel on crafted frames (BPF_PROG_TEST_RUN): each test loads its own copy of
/// the object (fresh maps), fills the maps by hand, runs ingress or egress on an Ethernet + IPv4 +
/// TCP/UDP frame and reads the output back, checking the IPv4 and TCP/UDP checksums.
/// </summary>
public sealed class TcProgramTests : IDisposable
{
    private const string Client = "203.0.113.10";
    private const string OtherClient = "198.51.100.7";
    private const string ClusterIp = "10.96.0.10";
    private const string ExternalIp = "192.0.2.100";
    private const string NodeIp = "203.0.113.1";
    private const string NotNodeIp = "203.0.113.2";
    private const string BackendA = "10.244.1.2";
    private const string BackendB = "10.244.1.3";
    private const int BackendPort = 8080;
    private const int NodePort = 30080;

    private readonly BpfObject _tc;

    public TcProgramTests()
    {
        _tc = Environment.IsPrivilegedProcess ? TcPrograms.Load() : null!;
    }

    private BpfProgram Ingress => _tc.Program(TcPrograms.Ingress);

    private BpfProgram Egress => _tc.Program(TcPrograms.Egress);

    [KernelFact]
    public void Load_TcObject_HasBothProgramsAndItsMaps()
    {
        Assert.Equal([TcPrograms.Egress, TcPrograms.Ingress], _tc.Programs.Select(p => p.Name).Order(StringComparer.Ordinal));
        Assert.Equal(
            [MapLayout.AffinityMap, MapLayout.BackendsMap, MapLayout.ConnectionsMap, MapLayout.Connections6Map, MapLayout.LocalSourcesMap, MapLayout.LocalSources6Map, MapLayout.NodeAddressesMap, MapLayout.NodeAddresses6Map, MapLayout.ServicesMap, MapLayout.SourceRanges6Map, MapLayout.SourceRangesMap],
            _tc.Maps.Select(m => m.Name).Order(StringComparer.Ordinal));
        Assert.Equal(11u, _tc.Map(MapLayout.SourceRangesMap).Type); // BPF_MAP_TYPE_LPM_TRIE
        Assert.Equal(9u, _tc.Map(MapLayout.ConnectionsMap).Type); // LRU hash
        Assert.Equal(11u, _tc.Map(MapLayout.LocalSourcesMap).Type);
        Assert.Equal(11u, _tc.Map(MapLayout.SourceRanges6Map).Type);
        Assert.Equal(11u, _tc.Map(MapLayout.LocalSources6Map).Type);
    }

    [KernelTheory]
    [InlineData(ProtocolType.Tcp)]
    [InlineData(ProtocolType.Udp)]
    public void Ingress_ClusterIpFromOffNodeClient_DnatToTheBackendWithValidChecksums(ProtocolType protocol)
    {
        AddService(ClusterIp, 80, protocol, revNatId: 1, flags: 0, BackendA);

        var result = Ingress.TestRun(TestPackets.Build(new(protocol, IPAddress.Parse(Client), 40000, IPAddress.Parse(ClusterIp), 80)));

        Assert.Equal(TestRunResult.TcActOk, result.Verdict);
        Assert.Equal(new Ipv4Packet(protocol, IPAddress.Parse(Client), 40000, IPAddress.Parse(BackendA), BackendPort), TestPackets.Parse(result.Frame));
        Assert.Equal(0u, result.Mark);
        Console.WriteLine($"tc ingress, new {protocol} connection: {result.DurationNs} ns (one run)");
    }

    [KernelTheory]
    [InlineData(ProtocolType.Tcp)]
    [InlineData(ProtocolType.Udp)]
    public void Egress_ReplyOfAConnection_ComesFromTheFrontendAgain(ProtocolType protocol)
    {
        AddService(ClusterIp, 80, protocol, revNatId: 1, flags: 0, BackendA);
        Ingress.TestRun(TestPackets.Build(new(protocol, IPAddress.Parse(Client), 40000, IPAddress.Parse(ClusterIp), 80)));

        var reply = Egress.TestRun(TestPackets.Build(new(protocol, IPAddress.Parse(BackendA), BackendPort, IPAddress.Parse(Client), 40000)));

        Assert.Equal(TestRunResult.TcActOk, reply.Verdict);
        Assert.Equal(new Ipv4Packet(protocol, IPAddress.Parse(ClusterIp), 80, IPAddress.Parse(Client), 40000), TestPackets.Parse(reply.Frame));

        // Control: the same backend answering another client port (no connection) leaves as it is.
        var unrelated = TestPackets.Tcp(BackendA, BackendPort, Client, 40001) with { Protocol = protocol };
        Assert.Equal(unrelated, TestPackets.Parse(Egress.TestRun(TestPackets.Build(unrelated)).Frame));
    }

    [KernelFact]
    public void Ingress_LaterPacketsOfAFlow_KeepTheirBackend_NewFlowsSpread()
    {
        AddService(ClusterIp, 80, ProtocolType.Tcp, revNatId: 1, flags: 0, BackendA, BackendB);

        var firstBackends = new HashSet<IPAddress>();
        for (var port = 41000; port < 41040; port++)
        {
            var first = TestPackets.Parse(Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, port, ClusterIp, 80))).Frame).Destination;
            firstBackends.Add(first);
            for (var again = 0; again < 5; again++)
                Assert.Equal(first, TestPackets.Parse(Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, port, ClusterIp, 80))).Frame).Destination);
        }

        // 40 flows over 2 backends: both used (a 2^-39 chance of failing by luck).
        Assert.Equal([IPAddress.Parse(BackendA), IPAddress.Parse(BackendB)], firstBackends.OrderBy(a => a.ToString()));
        Assert.Equal(80, _tc.Map(MapLayout.ConnectionsMap).Keys<Ct4Key>().Count()); // a forward and a reply entry each
    }

    [KernelFact]
    public void Ingress_SourceRanges_ClientOutsideDropped_ClientInsideForwarded()
    {
        AddService(ExternalIp, 443, ProtocolType.Tcp, revNatId: 7, MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges, BackendA);
        _tc.Map(MapLayout.SourceRangesMap).Update(SourceRange4Key.For(7, IPAddress.Parse("203.0.113.0"), 24), 0u);
        // Another frontend's range must not let the outsider in.
        _tc.Map(MapLayout.SourceRangesMap).Update(SourceRange4Key.For(8, IPAddress.Parse("198.51.100.0"), 24), 0u);

        var inside = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ExternalIp, 443)));
        var outside = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(OtherClient, 40000, ExternalIp, 443)));

        Assert.Equal(TestRunResult.TcActOk, inside.Verdict);
        Assert.Equal(IPAddress.Parse(BackendA), TestPackets.Parse(inside.Frame).Destination);
        Assert.Equal(TestRunResult.TcActShot, outside.Verdict);
    }

    [KernelFact]
    public void Ingress_NoEndpoints_DropFlagShoots_OtherwiseMarkedForReject()
    {
        AddService(ClusterIp, 80, ProtocolType.Tcp, revNatId: 2, MapLayout.ServiceFlagDrop);
        AddService(ClusterIp, 81, ProtocolType.Udp, revNatId: 3, flags: 0);

        var dropped = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ClusterIp, 80)));
        var rejectPacket = TestPackets.Udp(Client, 40000, ClusterIp, 81);
        var rejected = Ingress.TestRun(TestPackets.Build(rejectPacket));

        Assert.Equal(TestRunResult.TcActShot, dropped.Verdict);
        Assert.Equal(TestRunResult.TcActOk, rejected.Verdict);
        Assert.Equal(MapLayout.MarkReject, rejected.Mark);
        Assert.Equal(rejectPacket, TestPackets.Parse(rejected.Frame)); // left for the nftables table to answer
        Assert.Empty(_tc.Map(MapLayout.ConnectionsMap).Keys<Ct4Key>());
    }

    [KernelFact]
    public void Ingress_MasqueradeFlag_MarksEveryPacketOfTheFlow_WithoutTheFlagNoMark()
    {
        AddService(ExternalIp, 80, ProtocolType.Tcp, revNatId: 4, MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagMasquerade, BackendA);
        AddService(ExternalIp, 81, ProtocolType.Tcp, revNatId: 5, MapLayout.ServiceFlagExternal, BackendB);

        var first = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ExternalIp, 80)));
        var second = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ExternalIp, 80)), mark: 0x1);
        var plain = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ExternalIp, 81)));

        Assert.Equal(MapLayout.MarkMasquerade, first.Mark);
        Assert.Equal(MapLayout.MarkMasquerade | 0x1, second.Mark); // added to the packet's own mark
        Assert.Equal(0u, plain.Mark);
        Assert.Equal(IPAddress.Parse(BackendB), TestPackets.Parse(plain.Frame).Destination);
    }

    /// <summary>
    /// The addresses of the local-source tests in one family: IPv4 reads pp_localsrc4_v1, IPv6 pp_localsrc6_v1 (tc's IPv6
    /// path). <paramref name="Pod"/> is in <paramref name="PodSubnet"/>, which is in <paramref name="PodCidr"/>;
    /// <paramref name="OtherPod"/> is in the CIDR but not the subnet.
    /// </summary>
    public sealed record LocalSourceFamily(string Client, string ClusterIp, string ExternalIp, string NodeIp, string AnyAddress,
        string BackendA, string BackendB, string PodCidr, string PodSubnet, string Pod, string OtherPod)
    {
        public static LocalSourceFamily Of(bool ipv6) => ipv6
            ? new("2001:db8:100::10", "fd00:10:96::10", "2001:db8:ff::100", "2001:db8::1", "::",
                "fd00:10:244:1::2", "fd00:10:244:1::3", "fd00:10:244::/48", "fd00:10:244:2::/64", "fd00:10:244:2::7", "fd00:10:244:3::7")
            : new(TcProgramTests.Client, TcProgramTests.ClusterIp, TcProgramTests.ExternalIp, TcProgramTests.NodeIp, "0.0.0.0",
                TcProgramTests.BackendA, TcProgramTests.BackendB, "10.244.0.0/16", "10.244.2.0/24", "10.244.2.7", "10.244.3.7");
    }

    [KernelTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ingress_LocalSource_ClusterIpKeepsItsSource_OffClusterClientMasqueraded(bool ipv6)
    {
        var f = LocalSourceFamily.Of(ipv6);
        AddService(f.ClusterIp, 80, ProtocolType.Tcp, revNatId: 11, MapLayout.ServiceFlagMasquerade, f.BackendA);
        AddLocalSources(f.PodCidr, flags: 0);

        var fromPod = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40000, f.ClusterIp, 80)));
        var fromPodAgain = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40000, f.ClusterIp, 80)));
        var offCluster = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Client, 40000, f.ClusterIp, 80)));

        Assert.Equal(TestPackets.Tcp(f.Pod, 40000, f.BackendA, BackendPort), TestPackets.Parse(fromPod.Frame));
        Assert.Equal(0u, fromPod.Mark);
        Assert.Equal(0u, fromPodAgain.Mark); // the connection entry keeps the decision
        Assert.Equal(MapLayout.MarkMasquerade, offCluster.Mark); // the control: the flag is for off-cluster sources
    }

    [KernelTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ingress_LocalSource_MasqueradeAllOrAnExternalFrontend_Masquerades(bool ipv6)
    {
        var f = LocalSourceFamily.Of(ipv6);
        AddService(f.ClusterIp, 80, ProtocolType.Tcp, revNatId: 12, MapLayout.ServiceFlagMasquerade, f.BackendA);
        AddService(f.AnyAddress, NodePort, ProtocolType.Tcp, revNatId: 13, MapLayout.ServiceFlagNodePort | MapLayout.ServiceFlagMasquerade, f.BackendB);
        if (ipv6) _tc.Map(MapLayout.NodeAddresses6Map).Update(MapAddress.For(IPAddress.Parse(f.NodeIp)), default(NodeAddress));
        else _tc.Map(MapLayout.NodeAddressesMap).Update(MapLayout.NetworkAddress(IPAddress.Parse(f.NodeIp)), default(NodeAddress));
        AddLocalSources(f.PodCidr, flags: 0);

        // externalTrafficPolicy Cluster masquerades every source of a node port, pods too (as kube-proxy's KUBE-EXT chain).
        Assert.Equal(MapLayout.MarkMasquerade, Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40001, f.NodeIp, NodePort))).Mark);
        Assert.Equal(0u, Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40002, f.ClusterIp, 80))).Mark);

        // --masquerade-all: the local sources carry the flag, so a cluster IP masquerades them too.
        AddLocalSources(f.PodCidr, MapLayout.LocalSourceMasquerade);
        Assert.Equal(MapLayout.MarkMasquerade, Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40003, f.ClusterIp, 80))).Mark);
    }

    /// <summary>
    /// Core's AllSources (--masquerade-all) as the master's masquerade-local flag: a local source of that cluster IP is
    /// masqueraded even when pp_localsrc4_v1 / pp_localsrc6_v1 carry no flag; the control, a cluster IP without it, keeps the source.
    /// </summary>
    [KernelTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ingress_LocalSource_MasqueradeLocalFlag_Masquerades(bool ipv6)
    {
        var f = LocalSourceFamily.Of(ipv6);
        var other = ipv6 ? "fd00:10:96::11" : "10.96.0.11";
        AddService(f.ClusterIp, 80, ProtocolType.Tcp, revNatId: 17, (ushort)(MapLayout.ServiceFlagMasquerade | MapLayout.ServiceFlagMasqueradeLocal), f.BackendA);
        AddService(other, 80, ProtocolType.Tcp, revNatId: 18, MapLayout.ServiceFlagMasquerade, f.BackendA);
        AddLocalSources(f.PodCidr, flags: 0);

        var all = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40010, f.ClusterIp, 80)));
        var offClusterOnly = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40011, other, 80)));

        Assert.Equal(TestPackets.Tcp(f.Pod, 40010, f.BackendA, BackendPort), TestPackets.Parse(all.Frame));
        Assert.Equal(MapLayout.MarkMasquerade, all.Mark);
        Assert.Equal(0u, offClusterOnly.Mark);
    }

    [KernelTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ingress_Hairpin_APodReachingItselfIsMasqueraded(bool ipv6)
    {
        var f = LocalSourceFamily.Of(ipv6);
        AddService(f.ClusterIp, 80, ProtocolType.Tcp, revNatId: 16, flags: 0, f.BackendA);
        AddLocalSources(f.PodCidr, flags: 0);

        var itself = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.BackendA, 40000, f.ClusterIp, 80)));
        var other = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.BackendB, 40000, f.ClusterIp, 80)));

        Assert.Equal(TestPackets.Tcp(f.BackendA, 40000, f.BackendA, BackendPort), TestPackets.Parse(itself.Frame));
        Assert.Equal(MapLayout.MarkMasquerade, itself.Mark);
        Assert.Equal(0u, other.Mark); // the control: another pod keeps its source
    }

    [KernelTheory]
    [InlineData(false)]
    [InlineData(true)]
    public void Ingress_LocalSource_GetsTheInternalPool_OffNodeClientTheExternal(bool ipv6)
    {
        var f = LocalSourceFamily.Of(ipv6);
        // externalTrafficPolicy: Local: the external pool (B) differs from the short-circuit pods get (A).
        AddService(f.ExternalIp, 80, ProtocolType.Tcp, revNatId: 14, MapLayout.ServiceFlagExternal, f.BackendA);
        AddService(f.ExternalIp, 80, ProtocolType.Tcp, revNatId: 15, MapLayout.ServiceFlagExternal, [f.BackendB], scope: MapLayout.ScopeExternal, firstBackendId: 30);
        AddLocalSources(f.PodSubnet, flags: 0);

        var fromPod = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.Pod, 40000, f.ExternalIp, 80)));
        var fromOtherPodCidr = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(f.OtherPod, 40000, f.ExternalIp, 80)));

        Assert.Equal(IPAddress.Parse(f.BackendA), TestPackets.Parse(fromPod.Frame).Destination);
        Assert.Equal(IPAddress.Parse(f.BackendB), TestPackets.Parse(fromOtherPodCidr.Frame).Destination); // not in the map: an off-node client
    }

    [KernelFact]
    public void Ingress_Affinity_OneClientKeepsOneBackendOverNewFlows()
    {
        AddService(ClusterIp, 80, ProtocolType.Tcp, revNatId: 6, MapLayout.ServiceFlagAffinity, BackendA, BackendB, affinityTimeout: 60);

        var backends = Enumerable.Range(42000, 30)
            .Select(port => TestPackets.Parse(Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, port, ClusterIp, 80))).Frame).Destination)
            .ToHashSet();

        Assert.Single(backends);
        var key = Assert.Single(_tc.Map(MapLayout.AffinityMap).Keys<AffinityKey>());
        Assert.Equal(MapLayout.AffinityClientAddress | MapLayout.NetworkAddress(IPAddress.Parse(Client)), key.Client);
        Assert.Equal(6u, key.RevNatId);
    }

    [KernelFact]
    public void Ingress_NodePort_OnANodeAddressForwarded_OnAnotherAddressUntouched()
    {
        AddService("0.0.0.0", NodePort, ProtocolType.Tcp, revNatId: 9, MapLayout.ServiceFlagNodePort, BackendB);
        _tc.Map(MapLayout.NodeAddressesMap).Update(MapLayout.NetworkAddress(IPAddress.Parse(NodeIp)), default(NodeAddress));

        var toNode = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, NodeIp, NodePort)));
        var notNode = TestPackets.Tcp(Client, 40000, NotNodeIp, NodePort);
        var toOther = Ingress.TestRun(TestPackets.Build(notNode));
        var toZero = TestPackets.Tcp(Client, 40001, "0.0.0.0", NodePort); // address 0 keys the node port, but is no destination
        var zero = Ingress.TestRun(TestPackets.Build(toZero));
        var reply = Egress.TestRun(TestPackets.Build(TestPackets.Tcp(BackendB, BackendPort, Client, 40000)));

        Assert.Equal(IPAddress.Parse(BackendB), TestPackets.Parse(toNode.Frame).Destination);
        Assert.Equal(notNode, TestPackets.Parse(toOther.Frame));
        Assert.Equal(toZero, TestPackets.Parse(zero.Frame));
        Assert.Equal(TestPackets.Tcp(NodeIp, NodePort, Client, 40000), TestPackets.Parse(reply.Frame)); // the address the client used
    }

    [KernelFact]
    public void Ingress_ExternalScopeEntry_WinsOverTheInternalPool()
    {
        // externalTrafficPolicy: Local: the external pool (B only) differs from the internal one (A only).
        AddService(ExternalIp, 80, ProtocolType.Tcp, revNatId: 10, MapLayout.ServiceFlagExternal, BackendA);
        AddService(ExternalIp, 80, ProtocolType.Tcp, revNatId: 10, MapLayout.ServiceFlagExternal, [BackendB], scope: MapLayout.ScopeExternal, firstBackendId: 20);

        var result = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ExternalIp, 80)));

        Assert.Equal(IPAddress.Parse(BackendB), TestPackets.Parse(result.Frame).Destination);
    }

    [KernelFact]
    public void Ingress_NotServiceTraffic_Untouched()
    {
        AddService(ClusterIp, 80, ProtocolType.Tcp, revNatId: 1, flags: 0, BackendA);

        foreach (var packet in new[]
        {
            TestPackets.Tcp(Client, 40000, ClusterIp, 81),  // another port
            TestPackets.Udp(Client, 40000, ClusterIp, 80),  // another protocol
            TestPackets.Tcp(Client, 40000, BackendA, 8080), // straight to a pod
            TestPackets.Tcp(Client, 40000, NodeIp, 22),     // the node itself
        })
        {
            var frame = TestPackets.Build(packet);
            var result = Ingress.TestRun(frame);
            Assert.Equal(TestRunResult.TcActOk, result.Verdict);
            Assert.Equal(frame, result.Frame);
            Assert.Equal(0u, result.Mark);
        }
        Assert.Empty(_tc.Map(MapLayout.ConnectionsMap).Keys<Ct4Key>());
    }

    [KernelFact]
    public void Load_WithTheSocketHooksMaps_ReadsTheSameServices()
    {
        using var sock = SockPrograms.Load();
        using var shared = TcPrograms.Load(sock.Maps);
        var backends = sock.Map(MapLayout.BackendsMap);
        var services = sock.Map(MapLayout.ServicesMap);
        backends.Update(1u, Backend.For(IPAddress.Parse(BackendA), BackendPort, ProtocolType.Tcp));
        var frontend = ServiceKey.For(IPAddress.Parse(ClusterIp), 80, ProtocolType.Tcp);
        services.Update(frontend.WithSlot(1), ServiceValue.ForSlot(1));
        services.Update(frontend, ServiceValue.Master(1, revNatId: 1));

        var result = shared.Program(TcPrograms.Ingress).TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ClusterIp, 80)));

        Assert.Equal(IPAddress.Parse(BackendA), TestPackets.Parse(result.Frame).Destination);
        // Control: this test's own tc object (its own maps) does not know the service.
        Assert.Equal(IPAddress.Parse(ClusterIp), TestPackets.Parse(Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, ClusterIp, 80))).Frame).Destination);
    }

    [KernelFact]
    public void Ingress_TimePerPacket_Printed()
    {
        AddService(ClusterIp, 80, ProtocolType.Tcp, revNatId: 1, flags: 0, BackendA, BackendB);
        var flow = TestPackets.Build(TestPackets.Tcp(Client, 40000, ClusterIp, 80));
        var other = TestPackets.Build(TestPackets.Tcp(Client, 40000, BackendA, 22));
        var reply = TestPackets.Build(TestPackets.Tcp(BackendA, BackendPort, Client, 40000));
        var first = Ingress.TestRun(flow);
        var backend = TestPackets.Parse(first.Frame).Destination;
        if (!backend.Equals(IPAddress.Parse(BackendA))) reply = TestPackets.Build(TestPackets.Tcp(BackendB, BackendPort, Client, 40000));

        var known = Ingress.TestRun(flow, repeat: 100_000);
        var untouched = Ingress.TestRun(other, repeat: 100_000);
        var reversed = Egress.TestRun(reply, repeat: 100_000);

        Assert.Equal(backend, TestPackets.Parse(known.Frame).Destination);
        Assert.Equal(IPAddress.Parse(ClusterIp), TestPackets.Parse(reversed.Frame).Source);
        Console.WriteLine($"tc per packet (mean of 100,000 test runs): ingress known flow {known.DurationNs} ns, ingress not a service {untouched.DurationNs} ns, egress reply {reversed.DurationNs} ns; new connection (one run) {first.DurationNs} ns");
    }

    public void Dispose() => _tc?.Dispose();

    /// <summary>A local-sources prefix in its family's trie (pp_localsrc4_v1 or pp_localsrc6_v1).</summary>
    private void AddLocalSources(string text, uint flags)
    {
        var prefix = Model.IpPrefix.Parse(text);
        var value = new LocalSource4Value { Flags = flags };
        if (prefix.Family == Model.IpFamily.IPv4) _tc.Map(MapLayout.LocalSourcesMap).Update(LocalSource4Key.For(prefix), value);
        else _tc.Map(MapLayout.LocalSources6Map).Update(LocalSource6Key.For(prefix), value);
    }

    private void AddService(string address, int port, ProtocolType protocol, uint revNatId, ushort flags, params string[] backendAddresses) =>
        AddService(address, port, protocol, revNatId, flags, backendAddresses, MapLayout.ScopeInternal, firstBackendId: revNatId * 100);

    private void AddService(string address, int port, ProtocolType protocol, uint revNatId, ushort flags, string backendA, string backendB, uint affinityTimeout)
    {
        AddService(address, port, protocol, revNatId, flags, [backendA, backendB], MapLayout.ScopeInternal, firstBackendId: revNatId * 100, affinityTimeout);
    }

    private void AddService(string address, int port, ProtocolType protocol, uint revNatId, ushort flags, string[] backendAddresses, byte scope, uint firstBackendId, uint affinityTimeout = 0)
    {
        var services = _tc.Map(MapLayout.ServicesMap);
        var backends = _tc.Map(MapLayout.BackendsMap);
        var frontend = ServiceKey.For(IPAddress.Parse(address), port, protocol) with { Scope = scope };
        for (var i = 0; i < backendAddresses.Length; i++)
        {
            var id = firstBackendId + (uint)i;
            backends.Update(id, Backend.For(IPAddress.Parse(backendAddresses[i]), BackendPort, protocol));
            services.Update(frontend.WithSlot(i + 1), ServiceValue.ForSlot(id));
        }
        services.Update(frontend, ServiceValue.Master(backendAddresses.Length, revNatId, flags, affinityTimeout));
    }
}
