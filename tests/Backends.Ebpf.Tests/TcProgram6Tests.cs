using System.Net;
using System.Net.Sockets;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// bpf/tc.c on crafted Ethernet + IPv6 + TCP/UDP frames (BPF_PROG_TEST_RUN), as <see cref="TcProgramTests"/>
/// does for IPv4: each test loads its own object (fresh maps); the output's TCP/UDP checksum is
/// checked over the IPv6 pseudo header. (The local-source tests run for both families in <see cref="TcProgramTests"/>.)
/// </summary>
public sealed class TcProgram6Tests : IDisposable
{
    private const string Client = "2001:db8:100::10";
    private const string OtherClient = "2001:db8:200::7";
    private const string LoadBalancerIp = "2001:db8:ff::100";
    private const string ClusterIp = "fd00:10:96::10";
    private const string NodeIp = "2001:db8::1";
    private const string NotNodeIp = "2001:db8::2";
    private const string BackendA = "fd00:10:244:1::2";
    private const string BackendB = "fd00:10:244:1::3";
    private const int BackendPort = 8080;
    private const int NodePort = 30080;

    private readonly BpfObject _tc;

    public TcProgram6Tests()
    {
        _tc = Environment.IsPrivilegedProcess ? TcPrograms.Load() : null!;
    }

    private BpfProgram Ingress => _tc.Program(TcPrograms.Ingress);

    private BpfProgram Egress => _tc.Program(TcPrograms.Egress);

    [KernelTheory]
    [InlineData(ProtocolType.Tcp)]
    [InlineData(ProtocolType.Udp)]
    public void Ingress_ClusterIpFromOffNodeClient_DnatToTheBackend_EgressReplyFromTheFrontend_ValidChecksums(ProtocolType protocol)
    {
        AddService(ClusterIp, 80, protocol, revNatId: 1, flags: 0, BackendA);

        var result = Ingress.TestRun(TestPackets.Build(new(protocol, IPAddress.Parse(Client), 40000, IPAddress.Parse(ClusterIp), 80)));
        var reply = Egress.TestRun(TestPackets.Build(new(protocol, IPAddress.Parse(BackendA), BackendPort, IPAddress.Parse(Client), 40000)));

        Assert.Equal(TestRunResult.TcActOk, result.Verdict);
        Assert.Equal(new Ipv4Packet(protocol, IPAddress.Parse(Client), 40000, IPAddress.Parse(BackendA), BackendPort), TestPackets.Parse(result.Frame));
        Assert.Equal(0u, result.Mark);
        Assert.Equal(new Ipv4Packet(protocol, IPAddress.Parse(ClusterIp), 80, IPAddress.Parse(Client), 40000), TestPackets.Parse(reply.Frame));
        Assert.Equal(2, _tc.Map(MapLayout.Connections6Map).Keys<Ct6Key>().Count); // forward and reply
        Assert.Empty(_tc.Map(MapLayout.ConnectionsMap).Keys<Ct4Key>());

        // Control: the same backend answering another client port (no connection) leaves as it is.
        var unrelated = new Ipv4Packet(protocol, IPAddress.Parse(BackendA), BackendPort, IPAddress.Parse(Client), 40001);
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
            Assert.Equal(first, TestPackets.Parse(Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, port, ClusterIp, 80))).Frame).Destination);
        }

        // 40 flows over 2 backends: both used (a 2^-39 chance of failing by luck).
        Assert.Equal([IPAddress.Parse(BackendA), IPAddress.Parse(BackendB)], firstBackends.OrderBy(a => a.ToString()));
    }

    [KernelFact]
    public void Ingress_NodePort_OnANodeAddressForwarded_OnAnotherAddressUntouched()
    {
        AddService("::", NodePort, ProtocolType.Tcp, revNatId: 9, MapLayout.ServiceFlagNodePort | MapLayout.ServiceFlagMasquerade, BackendB);
        // An IPv4 node port on the same port must not answer for IPv6.
        AddService("0.0.0.0", NodePort + 1, ProtocolType.Tcp, revNatId: 10, MapLayout.ServiceFlagNodePort, BackendA);
        _tc.Map(MapLayout.NodeAddresses6Map).Update(MapAddress.For(IPAddress.Parse(NodeIp)), default(NodeAddress));

        var toNode = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, NodeIp, NodePort)));
        var notNode = TestPackets.Tcp(Client, 40000, NotNodeIp, NodePort);
        var toOther = Ingress.TestRun(TestPackets.Build(notNode));
        var v4Port = TestPackets.Tcp(Client, 40000, NodeIp, NodePort + 1);
        var toV4Port = Ingress.TestRun(TestPackets.Build(v4Port));
        var reply = Egress.TestRun(TestPackets.Build(TestPackets.Tcp(BackendB, BackendPort, Client, 40000)));

        Assert.Equal(IPAddress.Parse(BackendB), TestPackets.Parse(toNode.Frame).Destination);
        Assert.Equal(MapLayout.MarkMasquerade, toNode.Mark);
        Assert.Equal(notNode, TestPackets.Parse(toOther.Frame));
        Assert.Equal(v4Port, TestPackets.Parse(toV4Port.Frame));
        Assert.Equal(TestPackets.Tcp(NodeIp, NodePort, Client, 40000), TestPackets.Parse(reply.Frame)); // the address the client used
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
        Assert.Equal(rejectPacket, TestPackets.Parse(rejected.Frame));
        Assert.Empty(_tc.Map(MapLayout.Connections6Map).Keys<Ct6Key>());
    }

    [KernelFact]
    public void Ingress_Affinity_OneClientKeepsOneBackendOverNewFlows()
    {
        AddService(ClusterIp, 80, ProtocolType.Tcp, revNatId: 6, MapLayout.ServiceFlagAffinity, [BackendA, BackendB], affinityTimeout: 60);

        var backends = Enumerable.Range(42000, 30)
            .Select(port => TestPackets.Parse(Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, port, ClusterIp, 80))).Frame).Destination)
            .ToHashSet();

        Assert.Single(backends);
        var key = Assert.Single(_tc.Map(MapLayout.AffinityMap).Keys<AffinityKey>());
        Assert.Equal(6u, key.RevNatId);
        Assert.NotEqual(0ul, key.Client & MapLayout.AffinityClientAddress);
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
        })
        {
            var frame = TestPackets.Build(packet);
            var result = Ingress.TestRun(frame);
            Assert.Equal(TestRunResult.TcActOk, result.Verdict);
            Assert.Equal(frame, result.Frame);
        }
        Assert.Empty(_tc.Map(MapLayout.Connections6Map).Keys<Ct6Key>());
    }

    [KernelFact]
    public void Ingress_SourceRanges_ClientOutsideDropped_ClientInsideForwarded()
    {
        AddService(LoadBalancerIp, 443, ProtocolType.Tcp, revNatId: 7, MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges, BackendA);
        AddService(LoadBalancerIp, 444, ProtocolType.Tcp, revNatId: 17, MapLayout.ServiceFlagExternal, BackendB);
        _tc.Map(MapLayout.SourceRanges6Map).Update(SourceRange6Key.For(7, IPAddress.Parse("2001:db8:100::"), 48), 0u);
        // Another frontend's range, and an IPv4 range of this frontend's id, must not let the outsider in.
        _tc.Map(MapLayout.SourceRanges6Map).Update(SourceRange6Key.For(8, IPAddress.Parse("2001:db8:200::"), 48), 0u);
        _tc.Map(MapLayout.SourceRangesMap).Update(SourceRange4Key.For(7, IPAddress.Parse("0.0.0.0"), 0), 0u);

        var inside = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(Client, 40000, LoadBalancerIp, 443)));
        var outside = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(OtherClient, 40000, LoadBalancerIp, 443)));
        var unrestricted = Ingress.TestRun(TestPackets.Build(TestPackets.Tcp(OtherClient, 40000, LoadBalancerIp, 444)));

        Assert.Equal(TestRunResult.TcActOk, inside.Verdict);
        Assert.Equal(TestPackets.Tcp(Client, 40000, BackendA, BackendPort), TestPackets.Parse(inside.Frame));
        Assert.Equal(TestRunResult.TcActShot, outside.Verdict);
        Assert.Equal(TestRunResult.TcActOk, unrestricted.Verdict); // the control: a frontend without the flag takes anyone
        Assert.Equal(IPAddress.Parse(BackendB), TestPackets.Parse(unrestricted.Frame).Destination);
        Assert.Equal(4, _tc.Map(MapLayout.Connections6Map).Keys<Ct6Key>().Count); // the dropped client made no connection
    }

    public void Dispose() => _tc?.Dispose();

    private void AddService(string address, int port, ProtocolType protocol, uint revNatId, ushort flags, params string[] backendAddresses) =>
        AddService(address, port, protocol, revNatId, flags, backendAddresses, affinityTimeout: 0);

    private void AddService(string address, int port, ProtocolType protocol, uint revNatId, ushort flags, string[] backendAddresses, uint affinityTimeout)
    {
        var services = _tc.Map(MapLayout.ServicesMap);
        var backends = _tc.Map(MapLayout.BackendsMap);
        var frontend = ServiceKey.For(IPAddress.Parse(address), port, protocol);
        for (var i = 0; i < backendAddresses.Length; i++)
        {
            var id = revNatId * 100 + (uint)i;
            backends.Update(id, Backend.For(IPAddress.Parse(backendAddresses[i]), BackendPort, protocol));
            services.Update(frontend.WithSlot(i + 1), ServiceValue.ForSlot(id));
        }
        services.Update(frontend, ServiceValue.Master(backendAddresses.Length, revNatId, flags, affinityTimeout));
    }
}
