using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// The socket hooks with real sockets. Each test makes its own cgroup v2 child directory and its own
/// network namespace; the programs attach (BPF_LINK_CREATE) to that cgroup only. TCP servers listen on
/// loopback addresses inside the namespace; a client process is moved into the cgroup and then enters
/// the namespace (nsenter --net, which keeps /sys as it is), and connects to the service VIP with
/// bash's /dev/tcp. IPv6 backends listen on two addresses added to the namespace's loopback.
/// Everything is removed on dispose, even when a test fails.
/// </summary>
public sealed class SocketHookTests : IDisposable
{
    private static readonly IPAddress Vip = IPAddress.Parse("10.96.0.10");
    private static readonly IPAddress EmptyVip = IPAddress.Parse("10.96.0.11");
    private static readonly IPAddress Vip6 = IPAddress.Parse("fd00:10:96::10");
    private static readonly IPAddress EmptyVip6 = IPAddress.Parse("fd00:10:96::11");
    private const string Backend6A = "fd00:10:244::2";
    private const string Backend6B = "fd00:10:244::3";
    private const int ServicePort = 80;
    private const int BackendPort = 8080;
    private const int UdpBackendPort = 5353;
    private const int NodePort = 30080;

    // A node address as pp_nodeip4_v1 holds it, and one it does not: neither is routed in the test's namespace,
    // so a connection the hooks leave alone fails with "Network is unreachable".
    private static readonly IPAddress NodeIp = IPAddress.Parse("192.0.2.1");
    private static readonly IPAddress NotNodeIp = IPAddress.Parse("192.0.2.9");

    private readonly CleanupStack _cleanup = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TestCgroup _cgroup;
    private readonly NetworkNamespace _namespace;
    private readonly BpfObject _sock;
    private string? _udpClient;

    public SocketHookTests()
    {
        try
        {
            _cgroup = Track(new TestCgroup(Guid.NewGuid().ToString("N")[..6]));
            _namespace = Track(NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-ebpf"));
            var up = _namespace.ExecAsync("ip", "link", "set", "lo", "up").GetAwaiter().GetResult();
            Assert.True(up.Succeeded, up.StandardError);
            foreach (var address in new[] { Backend6A, Backend6B })
            {
                var added = _namespace.ExecAsync("ip", "-6", "addr", "add", address + "/128", "dev", "lo", "nodad").GetAwaiter().GetResult();
                Assert.True(added.Succeeded, added.StandardError);
            }
            StartServer("127.0.0.2", "backend-a");
            StartServer("127.0.0.3", "backend-b");
            StartServer("127.0.0.4", "not-a-backend");
            StartUdpServer("127.0.0.2", "udp-a");
            StartUdpServer("127.0.0.3", "udp-b");
            StartServer(Backend6A, "backend6-a");
            StartServer(Backend6B, "backend6-b");
            StartUdpServer(Backend6A, "udp6-a");
            StartUdpServer(Backend6B, "udp6-b");
            _sock = Track(SockPrograms.Load());
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_ToServiceVip_SpreadsOverBothBackends()
    {
        Attach(SockPrograms.Connect4);
        AddService(Vip, revNatId: 1, ("127.0.0.2", 1), ("127.0.0.3", 2));

        var replies = Client(Vip, ServicePort, connections: 40);

        Assert.All(replies, reply => Assert.StartsWith("ok ", reply, StringComparison.Ordinal));
        Assert.Contains("ok backend-a", replies);
        Assert.Contains("ok backend-b", replies);
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_ServiceWithoutBackends_RefusedAtOnce()
    {
        Attach(SockPrograms.Connect4);
        AddService(EmptyVip, revNatId: 2);

        var watch = Stopwatch.StartNew();
        var replies = Client(EmptyVip, ServicePort, connections: 3);
        watch.Stop();

        Assert.All(replies, reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
        // A dropped SYN would take a connect timeout (minutes); three refusals, process start included, take milliseconds.
        Assert.True(watch.Elapsed < TimeSpan.FromSeconds(5), $"refusals took {watch.Elapsed}");
        Console.WriteLine($"3 refused connections, client process start included: {watch.Elapsed.TotalMilliseconds:F0} ms");
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_AddressNotAService_IsUntouched()
    {
        Attach(SockPrograms.Connect4);
        AddService(Vip, revNatId: 1, ("127.0.0.2", 1), ("127.0.0.3", 2));

        // A real server that is no backend: reached as addressed.
        Assert.All(Client(IPAddress.Parse("127.0.0.4"), BackendPort, connections: 5), reply => Assert.Equal("ok not-a-backend", reply));
        // The VIP on a port that is no service: not rewritten, so the namespace (no route to 10.96/16) says unreachable.
        Assert.All(Client(Vip, 81, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_ProcessOutsideTheCgroup_IsUntouched()
    {
        Attach(SockPrograms.Connect4);
        AddService(Vip, revNatId: 1, ("127.0.0.2", 1), ("127.0.0.3", 2));

        // Same namespace, but this process's cgroup has no hook: the VIP stays the VIP (unreachable here).
        var error = Assert.Throws<SocketException>(() => _namespace.Run(() =>
        {
            using var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            socket.Connect(Vip, ServicePort);
        }));
        Assert.Equal(SocketError.NetworkUnreachable, error.SocketErrorCode);
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_AfterLinkDisposed_NoLongerRewrites()
    {
        var link = Attach(SockPrograms.Connect4);
        AddService(Vip, revNatId: 1, ("127.0.0.2", 1));
        Assert.Equal(["ok backend-a"], Client(Vip, ServicePort, connections: 1));

        link.Dispose();

        Assert.All(Client(Vip, ServicePort, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_ServiceWithAffinity_KeepsTheClientOnOneBackend()
    {
        Attach(SockPrograms.Connect4);
        var master = ServiceValue.Master(0, revNatId: 3, flags: MapLayout.ServiceFlagAffinity, affinityTimeoutSeconds: 60);
        AddService(Vip, ServicePort, ProtocolType.Tcp, BackendPort, master, ("127.0.0.2", 1), ("127.0.0.3", 2));

        var replies = Client(Vip, ServicePort, connections: 20);

        Assert.Single(replies.Distinct());
        Assert.StartsWith("ok backend-", replies[0], StringComparison.Ordinal);
        var affinity = Assert.Single(_sock.Map(MapLayout.AffinityMap).Keys<AffinityKey>());
        Assert.Equal(3u, affinity.RevNatId);
        Assert.NotEqual(0ul, affinity.Client); // the namespace's cookie
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_NodePortOnANodeAddress_SpreadsOverBothBackends()
    {
        Attach(SockPrograms.Connect4);
        AddNodeAddress(NodeIp);
        AddService(IPAddress.Any, NodePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 7, MapLayout.ServiceFlagNodePort), ("127.0.0.2", 1), ("127.0.0.3", 2));

        var replies = Client(NodeIp, NodePort, connections: 40);

        Assert.All(replies, reply => Assert.StartsWith("ok ", reply, StringComparison.Ordinal));
        Assert.Contains("ok backend-a", replies);
        Assert.Contains("ok backend-b", replies);
    }

    /// <summary>
    /// connect6 serves a node port on an address of pp_nodeip6_v1 (key ::), as tc ingress does; another address
    /// and loopback stay untouched.
    /// </summary>
    [KernelFact(needsCgroup: true)]
    public void Connect6_NodePortOnANodeAddress_Served_ElsewhereUntouched()
    {
        var nodeIp6 = IPAddress.Parse("2001:db8:5::1");
        Attach(SockPrograms.Connect6);
        _sock.Map(MapLayout.NodeAddresses6Map).Update(MapAddress.For(nodeIp6), default(NodeAddress));
        AddService(IPAddress.IPv6Any, NodePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 9, MapLayout.ServiceFlagNodePort), (Backend6A, 1), (Backend6B, 2));

        var replies = Client(nodeIp6, NodePort, connections: 20);
        Assert.All(replies, reply => Assert.StartsWith("ok backend6-", reply, StringComparison.Ordinal));
        Assert.Contains("ok backend6-a", replies);
        Assert.Contains("ok backend6-b", replies);
        // Not a node address: left alone, so unreachable here; loopback is never a node address.
        Assert.All(Client(IPAddress.Parse("2001:db8:5::9"), NodePort, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
        Assert.All(Client(IPAddress.IPv6Loopback, NodePort, connections: 1), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
    }

    /// <summary>
    /// A pod's socket (its network namespace is not the one pp_config_v1 names) whose verdict masquerades it is left on
    /// the frontend, for tc on the pod's veth; here no route leads there, so the connect says "Network is unreachable".
    /// Cases: a cluster IP under --masquerade-all (masquerade-local), a node port under policy Cluster (masquerade), and
    /// hairpin (the picked backend listens in the pod's own namespace). A backend with no listener here (127.0.0.5:
    /// refused) keeps the fast path for a cluster IP that masquerades off-cluster sources only, and for a node port under
    /// policy Local. Positive controls: the same frontends from the node's namespace (pp_config_v1 naming this
    /// namespace), and with pp_config_v1 never written, are rewritten.
    /// </summary>
    [KernelFact(needsCgroup: true)]
    public void Connect4_PodSocket_LeftOnTheFrontend_OnlyWhenItsVerdictMasqueradesIt()
    {
        Attach(SockPrograms.Connect4);
        AddNodeAddress(NodeIp);
        const ushort masquerade = MapLayout.ServiceFlagMasquerade;
        var offClusterOnly = IPAddress.Parse("10.96.0.20");
        var masqueradeAll = IPAddress.Parse("10.96.0.21");
        var hairpin = IPAddress.Parse("10.96.0.22");
        AddService(offClusterOnly, ServicePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 20, masquerade), ("127.0.0.5", 20));
        AddService(masqueradeAll, ServicePort, ProtocolType.Tcp, BackendPort,
            ServiceValue.Master(0, 21, masquerade | MapLayout.ServiceFlagMasqueradeLocal), ("127.0.0.5", 20));
        AddService(hairpin, ServicePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 22, masquerade), ("127.0.0.2", 1));
        AddService(IPAddress.Any, NodePort, ProtocolType.Tcp, BackendPort,
            ServiceValue.Master(0, 23, MapLayout.ServiceFlagNodePort | masquerade), ("127.0.0.5", 20));
        AddService(IPAddress.Any, NodePort + 1, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 24, MapLayout.ServiceFlagNodePort), ("127.0.0.5", 20));

        // pp_config_v1 never written: every socket is taken for the node's, and rewritten.
        AssertRewritten();

        // This namespace is the node's: rewritten too.
        var here = _namespace.Run(EbpfKernel.NetworkNamespaceCookie);
        Assert.NotEqual(0ul, here);
        var config = _sock.Map(MapLayout.ConfigMap);
        config.Update(0u, new NodeConfig { NodeNetns = here });
        AssertRewritten();

        // Another namespace is the node's: this one is a pod's.
        config.Update(0u, new NodeConfig { NodeNetns = here + 1 });
        Assert.All(Client(offClusterOnly, ServicePort, connections: 1), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
        Assert.All(Client(NodeIp, NodePort + 1, connections: 1), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
        foreach (var (address, port) in new[] { (masqueradeAll, ServicePort), (hairpin, ServicePort), (NodeIp, NodePort) })
            Assert.All(Client(address, port, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));

        void AssertRewritten()
        {
            foreach (var (address, port) in new[] { (offClusterOnly, ServicePort), (masqueradeAll, ServicePort), (NodeIp, NodePort), (NodeIp, NodePort + 1) })
                Assert.All(Client(address, port, connections: 1), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
            Assert.Equal(["ok backend-a"], Client(hairpin, ServicePort, connections: 1));
        }
    }

    /// <summary>
    /// A wildcard listener on the backend's port (0.0.0.0:8091) is no hairpin when the backend's address is not the pod's:
    /// connect4 proves the address with bpf_bind (EADDRNOTAVAIL), so the socket is rewritten to the backend (10.77.0.9, an
    /// unreachable route here: "No route to host"), not left on the VIP ("Network is unreachable"). The control: a backend on
    /// the pod's own address (127.0.0.6, the same wildcard listener) is left on the VIP.
    /// </summary>
    [KernelFact(needsCgroup: true)]
    public void Connect4_PodSocket_WildcardListenerOnTheBackendsPort_IsNoHairpin()
    {
        const int wildcardPort = 8091;
        var route = _namespace.ExecAsync("ip", "route", "add", "unreachable", "10.77.0.0/24").GetAwaiter().GetResult();
        Assert.True(route.Succeeded, route.StandardError);
        var listener = _namespace.Run(() =>
        {
            var server = new TcpListener(IPAddress.Any, wildcardPort);
            server.Start();
            return server;
        });
        _cleanup.Add(new Disposer(listener.Stop));
        Attach(SockPrograms.Connect4);
        var elsewhere = IPAddress.Parse("10.96.0.23");
        var itself = IPAddress.Parse("10.96.0.24");
        AddService(elsewhere, ServicePort, ProtocolType.Tcp, wildcardPort, ServiceValue.Master(0, 25, MapLayout.ServiceFlagMasquerade), ("10.77.0.9", 25));
        AddService(itself, ServicePort, ProtocolType.Tcp, wildcardPort, ServiceValue.Master(0, 26, MapLayout.ServiceFlagMasquerade), ("127.0.0.6", 26));
        _sock.Map(MapLayout.ConfigMap).Update(0u, new NodeConfig { NodeNetns = _namespace.Run(EbpfKernel.NetworkNamespaceCookie) + 1 });

        Assert.All(Client(elsewhere, ServicePort, connections: 2), reply => Assert.Contains("No route to host", reply, StringComparison.Ordinal));
        Assert.All(Client(itself, ServicePort, connections: 2), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
    }

    /// <summary>Hairpin for IPv6 and for UDP (sendmsg4, a bound socket as the backend): a pod's socket is left on the frontend.</summary>
    [KernelFact(needsCgroup: true)]
    public void Connect6_And_Sendmsg4_PodSocket_Hairpin_LeftOnTheFrontend()
    {
        Attach(SockPrograms.Connect6);
        Attach(SockPrograms.Sendmsg4);
        AddService(Vip6, ServicePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 30), (Backend6A, 30));
        AddService(Vip, 53, ProtocolType.Udp, UdpBackendPort, ServiceValue.Master(0, 31), ("127.0.0.2", 31));
        var config = _sock.Map(MapLayout.ConfigMap);
        var here = _namespace.Run(EbpfKernel.NetworkNamespaceCookie);

        config.Update(0u, new NodeConfig { NodeNetns = here });
        Assert.Equal(["ok backend6-a"], Client(Vip6, ServicePort, connections: 1));
        Assert.Equal(["reply udp-a", "from 127.0.0.2:5353"], UdpClient("sendto", Vip, 53));

        config.Update(0u, new NodeConfig { NodeNetns = here + 1 });
        Assert.All(Client(Vip6, ServicePort, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
        Assert.Equal(["sendto: Network is unreachable"], UdpClient("sendto", Vip, 53));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_NodePortElsewhere_IsUntouched()
    {
        Attach(SockPrograms.Connect4);
        AddNodeAddress(NodeIp);
        AddService(IPAddress.Any, NodePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 7, MapLayout.ServiceFlagNodePort), ("127.0.0.2", 1));
        AddService(IPAddress.Any, NodePort + 1, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 8), ("127.0.0.2", 1));

        // The positive control: the node port on the node address is rewritten.
        Assert.Equal(["ok backend-a"], Client(NodeIp, NodePort, connections: 1));
        // An address not in pp_nodeip4_v1: left alone, so unreachable here.
        Assert.All(Client(NotNodeIp, NodePort, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
        // An address-0 entry without the nodeport flag is no node port.
        Assert.All(Client(NodeIp, NodePort + 1, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
        // Loopback is never a node address (no localhost node ports, as in the other modes), and 0.0.0.0 is the
        // kernel's loopback, not the node port's key: both stay local ports where nothing listens.
        Assert.All(Client(IPAddress.Loopback, NodePort, connections: 1), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
        Assert.All(Client(IPAddress.Any, NodePort, connections: 1), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect4_NodePortWithoutBackends_RefusedAtOnce()
    {
        Attach(SockPrograms.Connect4);
        AddNodeAddress(NodeIp);
        AddService(IPAddress.Any, NodePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 7, MapLayout.ServiceFlagNodePort));

        Assert.All(Client(NodeIp, NodePort, connections: 2), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp_NodePortOnANodeAddress_ReplyComesFromTheNodeAddress()
    {
        AttachAll();
        AddNodeAddress(NodeIp);
        AddService(IPAddress.Any, NodePort, ProtocolType.Udp, UdpBackendPort, ServiceValue.Master(0, 9, MapLayout.ServiceFlagNodePort), ("127.0.0.2", 11));

        Assert.Equal(["reply udp-a", $"from {NodeIp}:{NodePort}"], UdpClient("sendto", NodeIp, NodePort));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp_SendtoAndRecvfrom_ReplyComesFromTheVip()
    {
        AttachAll();
        AddUdpService(Vip, revNatId: 4, ("127.0.0.2", 11));

        Assert.Equal(["reply udp-a", "from 10.96.0.10:53"], UdpClient("sendto", Vip, 53));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp_Connected_PeerAndReplyAreTheVip()
    {
        AttachAll();
        AddUdpService(Vip, revNatId: 4, ("127.0.0.2", 11), ("127.0.0.3", 12));

        var lines = UdpClient("connect", Vip, 53);

        Assert.Equal("peer 10.96.0.10:53", lines[0]);
        Assert.Matches("^reply udp-[ab]$", lines[1]);
        Assert.Equal("from 10.96.0.10:53", lines[2]);
    }

    [KernelFact(needsCgroup: true)]
    public void Udp_ReverseHooksNotAttached_ShowTheBackend()
    {
        // The control for the two tests above: without recvmsg4 and getpeername4 the application sees the backend.
        Attach(SockPrograms.Connect4);
        Attach(SockPrograms.Sendmsg4);
        AddUdpService(Vip, revNatId: 4, ("127.0.0.2", 11));

        Assert.Equal(["reply udp-a", "from 127.0.0.2:5353"], UdpClient("sendto", Vip, 53));
        Assert.Equal(["peer 127.0.0.2:5353", "reply udp-a", "from 127.0.0.2:5353"], UdpClient("connect", Vip, 53));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp_ServiceWithoutBackends_SendtoAndConnectRefused()
    {
        AttachAll();
        AddUdpService(EmptyVip, revNatId: 5);

        Assert.Equal(["sendto: Connection refused"], UdpClient("sendto", EmptyVip, 53));
        Assert.Equal(["connect: Connection refused"], UdpClient("connect", EmptyVip, 53));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect6_ToServiceVip_SpreadsOverBothBackends()
    {
        Attach(SockPrograms.Connect6);
        AddService(Vip6, revNatId: 1, (Backend6A, 1), (Backend6B, 2));

        var replies = Client(Vip6, ServicePort, connections: 40);

        Assert.All(replies, reply => Assert.StartsWith("ok ", reply, StringComparison.Ordinal));
        Assert.Contains("ok backend6-a", replies);
        Assert.Contains("ok backend6-b", replies);
    }

    [KernelFact(needsCgroup: true)]
    public void Connect6_ServiceWithoutBackends_RefusedAtOnce()
    {
        Attach(SockPrograms.Connect6);
        AddService(EmptyVip6, revNatId: 2);
        AddService(Vip6, revNatId: 1, (Backend6A, 1));

        Assert.All(Client(EmptyVip6, ServicePort, connections: 3), reply => Assert.Contains("Connection refused", reply, StringComparison.Ordinal));
        // The control: a frontend with a backend in the same map is reached.
        Assert.Equal(["ok backend6-a"], Client(Vip6, ServicePort, connections: 1));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect6_AddressNotAService_OrConnect4Only_IsUntouched()
    {
        Attach(SockPrograms.Connect4);
        AddService(Vip6, revNatId: 1, (Backend6A, 1));
        // connect4 alone never sees an IPv6 socket: the VIP stays the VIP (no route to it in the namespace).
        Assert.All(Client(Vip6, ServicePort, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));

        Attach(SockPrograms.Connect6);
        Assert.Equal(["ok backend6-a"], Client(Vip6, ServicePort, connections: 1));
        // The VIP on a port that is no service: not rewritten.
        Assert.All(Client(Vip6, 81, connections: 1), reply => Assert.Contains("Network is unreachable", reply, StringComparison.Ordinal));
    }

    [KernelFact(needsCgroup: true)]
    public void Connect6_IPv4MappedVipOfADualStackSocket_ReachesTheIPv4Backend()
    {
        AttachAll();
        AddService(Vip, revNatId: 1, ("127.0.0.2", 1));

        // bash connects an AF_INET6 socket to ::ffff:10.96.0.10: connect6 finds the IPv4 frontend's key.
        Assert.Equal(["ok backend-a"], Client(IPAddress.Parse("::ffff:10.96.0.10"), ServicePort, connections: 1));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp6_SendtoAndRecvfrom_ReplyComesFromTheVip()
    {
        AttachAll();
        AddUdpService(Vip6, revNatId: 4, (Backend6A, 11));

        Assert.Equal(["reply udp6-a", "from [fd00:10:96::10]:53"], UdpClient("sendto", Vip6, 53));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp6_Connected_PeerAndReplyAreTheVip()
    {
        AttachAll();
        AddUdpService(Vip6, revNatId: 4, (Backend6A, 11), (Backend6B, 12));

        var lines = UdpClient("connect", Vip6, 53);

        Assert.Equal("peer [fd00:10:96::10]:53", lines[0]);
        Assert.Matches("^reply udp6-[ab]$", lines[1]);
        Assert.Equal("from [fd00:10:96::10]:53", lines[2]);
        Assert.NotEmpty(_sock.Map(MapLayout.UdpReverseNat6Map).Keys<RevNat6Key>());
    }

    [KernelFact(needsCgroup: true)]
    public void Udp6_ReverseHooksNotAttached_ShowTheBackend()
    {
        // The control for the two tests above: without recvmsg6 and getpeername6 the application sees the backend.
        Attach(SockPrograms.Connect6);
        Attach(SockPrograms.Sendmsg6);
        AddUdpService(Vip6, revNatId: 4, (Backend6A, 11));

        Assert.Equal(["reply udp6-a", "from [fd00:10:244::2]:5353"], UdpClient("sendto", Vip6, 53));
        Assert.Equal(["peer [fd00:10:244::2]:5353", "reply udp6-a", "from [fd00:10:244::2]:5353"], UdpClient("connect", Vip6, 53));
    }

    [KernelFact(needsCgroup: true)]
    public void Udp6_ServiceWithoutBackends_SendtoAndConnectRefused()
    {
        AttachAll();
        AddUdpService(EmptyVip6, revNatId: 5);

        Assert.Equal(["sendto: Connection refused"], UdpClient("sendto", EmptyVip6, 53));
        Assert.Equal(["connect: Connection refused"], UdpClient("connect", EmptyVip6, 53));
    }

    /// <summary>
    /// Core's Drop for local clients (a Local traffic policy without local endpoints): count 0 with the drop flag. The
    /// socket keeps the VIP and pp_egress drops its packets as if sent, as kube-proxy's DROP rule: a TCP connect
    /// times out, a UDP sendto succeeds and nothing answers (Reject's ECONNREFUSED is the test above). Control: the
    /// VIP is an address of the namespace with its own servers, which the same clients reach while pp_egress is not
    /// attached, so the silence is the drop. IPv4 (connect4/sendmsg4) and IPv6 (connect6/sendmsg6, pp_egress's IPv6 branch).
    /// </summary>
    [KernelTheory(needsCgroup: true)]
    [InlineData("10.96.0.12")]
    [InlineData("fd00:10:96::12")]
    public async Task DropVerdict_SocketKeepsTheVip_ItsPacketsAreDropped_NotRefused(string dropVip)
    {
        var vip = IPAddress.Parse(dropVip);
        var ipv6 = vip.AddressFamily == AddressFamily.InterNetworkV6;
        var added = await _namespace.ExecAsync("ip", ipv6 ? "-6" : "-4", "addr", "add", dropVip + (ipv6 ? "/128" : "/32"), "dev", "lo", "nodad");
        Assert.True(added.Succeeded, added.StandardError);
        StartServer(dropVip, "vip-server");
        StartUdpServer(dropVip, "vip-udp");
        foreach (var program in SockPrograms.All.Where(p => p != SockPrograms.Egress)) Attach(program);
        var drop = ServiceValue.Master(0, 7) with { Flags = MapLayout.ServiceFlagDrop };
        AddService(vip, BackendPort, ProtocolType.Tcp, BackendPort, drop);
        AddService(vip, UdpBackendPort, ProtocolType.Udp, UdpBackendPort, drop with { RevNatId = 8 });
        var endpoint = ipv6 ? $"[{dropVip}]:{UdpBackendPort}" : $"{dropVip}:{UdpBackendPort}";

        Assert.Equal(["ok vip-server"], ConnectWithin2Seconds(dropVip, BackendPort));
        Assert.Equal(["reply vip-udp", $"from {endpoint}"], UdpClient("sendto", vip, UdpBackendPort));

        Attach(SockPrograms.Egress);

        Assert.Equal(["timed out"], ConnectWithin2Seconds(dropVip, BackendPort));
        Assert.Equal(["recvfrom: Resource temporarily unavailable"], UdpClient("sendto", vip, UdpBackendPort));
        Assert.Equal([$"peer {endpoint}", "recvfrom: Resource temporarily unavailable"], UdpClient("connect", vip, UdpBackendPort));
    }

    /// <summary>
    /// loadBalancerSourceRanges for local sockets (pp_egress, on the source the kernel chose after connect4/6 and
    /// sendmsg4/6 picked a backend). The clients' source here: 127.0.0.1 toward 127.0.0.2/3 (the loopback net's route),
    /// the backend's own address toward fd00:10:244::2/3 (a local address is its own best source). In turn: a range that
    /// does not hold the source drops TCP (connect times out) and UDP (no answer); a range that holds it lets both through
    /// (the positive control, same sockets, same backends); then no range holds it and the master says a range holds a
    /// node IP (Core's SourceRangesAllowNode): dropped while the source is no node address, let through once it is one in
    /// pp_nodeip4_v1 / pp_nodeip6_v1 (the node's own request, kube-proxy's answer for the node).
    /// </summary>
    [KernelTheory(needsCgroup: true)]
    [InlineData("198.51.100.20")]
    [InlineData("2001:db8:ff::20")]
    public void SourceRanges_LocalSocket_DroppedOutside_AllowedInside_OrAsTheNode(string lbIp)
    {
        var vip = IPAddress.Parse(lbIp);
        var ipv6 = vip.AddressFamily == AddressFamily.InterNetworkV6;
        var (backendA, backendB) = ipv6 ? (Backend6A, Backend6B) : ("127.0.0.2", "127.0.0.3");
        var (outside, inside) = ipv6
            ? (new IpPrefix(IPAddress.Parse("2001:db8::"), 64), new IpPrefix(IPAddress.Parse("fd00:10:244::"), 64))
            : (new IpPrefix(IPAddress.Parse("203.0.113.0"), 24), new IpPrefix(IPAddress.Parse("127.0.0.0"), 8));
        AttachAll();
        var flags = (ushort)(MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagSourceRanges);
        AddService(vip, ServicePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 21, flags), (backendA, 1), (backendB, 2));
        AddService(vip, 53, ProtocolType.Udp, UdpBackendPort, ServiceValue.Master(0, 22, flags), (backendA, 3), (backendB, 4));
        SetRange(21, outside);
        SetRange(22, outside);
        var udpFrom = ipv6 ? $"from [{lbIp}]:53" : $"from {lbIp}:53";

        Assert.Equal(["timed out"], ConnectWithin2Seconds(lbIp, ServicePort));
        Assert.Equal(["recvfrom: Resource temporarily unavailable"], UdpClient("sendto", vip, 53));

        SetRange(21, inside);
        SetRange(22, inside);

        Assert.Matches("^ok backend6?-[ab]$", Assert.Single(ConnectWithin2Seconds(lbIp, ServicePort)));
        var udp = UdpClient("sendto", vip, 53);
        Assert.Matches("^reply udp6?-[ab]$", udp[0]);
        Assert.Equal(udpFrom, udp[1]);

        SetRange(21, inside, delete: true);
        SetRange(22, inside, delete: true);
        var asNode = (ushort)(flags | MapLayout.ServiceFlagSourceRangesNode);
        AddService(vip, ServicePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(0, 21, asNode), (backendA, 1), (backendB, 2));
        AddService(vip, 53, ProtocolType.Udp, UdpBackendPort, ServiceValue.Master(0, 22, asNode), (backendA, 3), (backendB, 4));

        Assert.Equal(["timed out"], ConnectWithin2Seconds(lbIp, ServicePort));
        Assert.Equal(["recvfrom: Resource temporarily unavailable"], UdpClient("sendto", vip, 53));

        if (ipv6)
        {
            foreach (var address in new[] { Backend6A, Backend6B })
                _sock.Map(MapLayout.NodeAddresses6Map).Update(MapAddress.For(IPAddress.Parse(address)), default(NodeAddress));
        }
        else
        {
            AddNodeAddress(IPAddress.Loopback);
        }

        Assert.Matches("^ok backend6?-[ab]$", Assert.Single(ConnectWithin2Seconds(lbIp, ServicePort)));
        Assert.Matches("^reply udp6?-[ab]$", UdpClient("sendto", vip, 53)[0]);
    }

    /// <summary>Writes (or deletes) one allowed prefix of a frontend in its family's source-ranges trie.</summary>
    private void SetRange(uint revNatId, IpPrefix prefix, bool delete = false)
    {
        if (prefix.Family == IpFamily.IPv4)
        {
            var key = SourceRange4Key.For(revNatId, prefix.Address, prefix.Length);
            var map = _sock.Map(MapLayout.SourceRangesMap);
            if (delete) Assert.True(map.Delete(key));
            else map.Update(key, 0u);
        }
        else
        {
            var key = SourceRange6Key.For(revNatId, prefix.Address, prefix.Length);
            var map = _sock.Map(MapLayout.SourceRanges6Map);
            if (delete) Assert.True(map.Delete(key));
            else map.Update(key, 0u);
        }
    }

    /// <summary>One TCP connection from the test cgroup and namespace, given 2 s: "ok REPLY", "timed out", or bash's error text.</summary>
    private List<string> ConnectWithin2Seconds(string address, int port)
    {
        const string attempt = """
            out=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2" && read -r reply <&3 && echo "ok $reply"' client "$1" "$2" 2>&1)
            if [ $? -eq 124 ]; then echo "timed out"; else echo "${out//$'\n'/ | }"; fi
            """;
        return InCgroupAndNamespace("bash", "-c", attempt, "client", address, port.ToString(System.Globalization.CultureInfo.InvariantCulture));
    }

    public void Dispose()
    {
        _stop.Cancel();
        _cleanup.Dispose();
        _stop.Dispose();
    }

    private T Track<T>(T resource)
        where T : IDisposable => _cleanup.Track(resource);

    private BpfLink Attach(string program) => Track(_sock.Program(program).AttachToCgroup(_cgroup.Path));

    private void AttachAll()
    {
        foreach (var program in SockPrograms.All) Attach(program);
    }

    private void AddUdpService(IPAddress vip, uint revNatId, params (string Address, uint Id)[] backends) =>
        AddService(vip, 53, ProtocolType.Udp, UdpBackendPort, ServiceValue.Master(0, revNatId), backends);

    /// <summary>tests/Backends.Ebpf.Tests/udp_client.c, compiled once per test into its own directory.</summary>
    private List<string> UdpClient(string mode, IPAddress address, int port)
    {
        if (_udpClient is null)
        {
            var work = Directory.CreateTempSubdirectory("pp-ebpf-udp-");
            _cleanup.Add(new Disposer(() => work.Delete(recursive: true)));
            var binary = Path.Combine(work.FullName, "udp_client");
            var compile = BpfTestSupport.Run("cc", "-Wall", "-Werror", "-O1", "-o", binary,
                Path.Combine(BpfTestSupport.RepoRoot, "tests", "Backends.Ebpf.Tests", "udp_client.c"));
            Assert.True(compile.ExitCode == 0, compile.Error);
            _udpClient = binary;
        }
        return InCgroupAndNamespace(_udpClient, mode, address.ToString(), port.ToString());
    }

    private void AddNodeAddress(IPAddress address) => _sock.Map(MapLayout.NodeAddressesMap).Update(MapLayout.NetworkAddress(address), default(NodeAddress));

    /// <summary>A TCP service port on <see cref="ServicePort"/> with backends on <see cref="BackendPort"/>.</summary>
    private void AddService(IPAddress vip, uint revNatId, params (string Address, uint Id)[] backends) =>
        AddService(vip, ServicePort, ProtocolType.Tcp, BackendPort, ServiceValue.Master(backends.Length, revNatId), backends);

    /// <summary>A service port as a sync writes it: backends (address, id) first, then the slots, then the master entry with the count.</summary>
    private void AddService(IPAddress vip, int port, ProtocolType protocol, int backendPort, ServiceValue master, params (string Address, uint Id)[] backends)
    {
        var services = _sock.Map(MapLayout.ServicesMap);
        var key = ServiceKey.For(vip, port, protocol);
        foreach (var (address, id) in backends)
            _sock.Map(MapLayout.BackendsMap).Update(id, Backend.For(IPAddress.Parse(address), backendPort, protocol));
        for (var slot = 1; slot <= backends.Length; slot++)
            services.Update(key.WithSlot(slot), ServiceValue.ForSlot(backends[slot - 1].Id));
        services.Update(key, master with { Count = (ushort)backends.Length });
    }

    /// <summary>A TCP server in the namespace that answers every connection with one line, its name.</summary>
    private void StartServer(string address, string name)
    {
        var listener = _namespace.Run(() =>
        {
            var server = new TcpListener(IPAddress.Parse(address), BackendPort);
            server.Start();
            return server;
        });
        _cleanup.Add(new Disposer(listener.Stop));
        var reply = Encoding.ASCII.GetBytes(name + "\n");
        _ = Task.Run(async () =>
        {
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    using var client = await listener.AcceptTcpClientAsync(_stop.Token);
                    await client.GetStream().WriteAsync(reply, _stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or IOException)
                {
                    if (_stop.IsCancellationRequested) return;
                }
            }
        });
    }

    /// <summary>A UDP server in the namespace that answers every datagram with its name, to the sender.</summary>
    private void StartUdpServer(string address, string name)
    {
        var socket = _namespace.Run(() =>
        {
            var server = new Socket(IPAddress.Parse(address).AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            server.Bind(new IPEndPoint(IPAddress.Parse(address), UdpBackendPort));
            return server;
        });
        _cleanup.Add(socket);
        var reply = Encoding.ASCII.GetBytes(name);
        _ = Task.Run(async () =>
        {
            var buffer = new byte[512];
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    var received = await socket.ReceiveFromAsync(buffer, new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0), _stop.Token);
                    await socket.SendToAsync(reply, received.RemoteEndPoint, _stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    if (_stop.IsCancellationRequested) return;
                }
            }
        });
    }

    /// <summary>
    /// A TCP client in the test cgroup and namespace (<see cref="InCgroupAndNamespace"/>) that makes
    /// <paramref name="connections"/> connections; one line per connection: "ok REPLY", or bash's error text.
    /// </summary>
    private List<string> Client(IPAddress address, int port, int connections)
    {
        const string loop = """
            for i in $(seq 1 "$3"); do
              out=$( (exec 3<>"/dev/tcp/$1/$2" && read -r reply <&3 && echo "ok $reply") 2>&1 )
              echo "${out//$'\n'/ | }"
            done
            """;
        var lines = InCgroupAndNamespace("bash", "-c", loop, "client", address.ToString(), port.ToString(), connections.ToString());
        Assert.Equal(connections, lines.Count);
        return lines;
    }

    /// <summary>
    /// Runs a program that first joins the test cgroup (a shell writes its own pid to cgroup.procs, so
    /// every socket the program opens is under the hooks), then enters the namespace with nsenter --net
    /// and execs the program. Returns its output lines.
    /// </summary>
    private List<string> InCgroupAndNamespace(string program, params string[] args)
    {
        const string wrapper = """
            echo $$ > "$1/cgroup.procs" || exit 3
            exec nsenter --net="$2" "${@:3}"
            """;
        var start = new ProcessStartInfo("bash") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[] { "-c", wrapper, "wrapper", _cgroup.Path, _namespace.Path, program }.Concat(args))
            start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            process.Kill(entireProcessTree: true);
            Assert.Fail($"the client did not finish in 30 s: {output.Result}");
        }
        Assert.True(process.ExitCode == 0, $"client exit {process.ExitCode}: {error.Result}");
        return [.. output.Result.Split('\n', StringSplitOptions.RemoveEmptyEntries)];
    }

    private sealed class Disposer(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}
