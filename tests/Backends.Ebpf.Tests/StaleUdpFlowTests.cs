using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// Stale UDP flows in the tc programs' connection maps (<see cref="StaleConnections"/>): a client that keeps its
/// source port keeps its <c>pp_ct4_v1</c> (IPv6: <c>pp_ct6_v1</c>) entry, and so its backend, unless the backend deletes
/// the entries a sync left stale, as kube-proxy deletes conntrack entries.
/// </summary>
public sealed class StaleUdpFlowTests
{
    private const string Vip = "10.96.0.53";
    private const string ControlVip = "10.96.0.54";
    private const string Vip6 = "fd00:10:96::53";
    private const string ControlVip6 = "fd00:10:96::54";
    private static readonly TimeSpan ProbeTimeout = TimeSpan.FromSeconds(3);

    /// <summary>
    /// Real packets through <see cref="EbpfBackend"/> and <see cref="EbpfKernel"/> opened in a sandbox's node
    /// namespace (tc on its interfaces, a private bpffs and cgroup): a client asks a UDP cluster IP from a fixed
    /// source port and gets pod A; the endpoint moves to pod B (pod A still answers, so a stale entry would show);
    /// the same socket's next datagram gets pod B. Control: another UDP service's flow to pod A, from the same
    /// client, keeps its entries and its backend. IPv4 and IPv6 (dual-stack services, the client asks the family's
    /// cluster IP; the other family's map stays empty).
    /// </summary>
    [KernelTheory(needsCgroup: true)]
    [InlineData(false)]
    [InlineData(true)]
    public async Task EndpointGone_ClientKeepingItsSourcePort_ReachesTheNewEndpoint_OtherFlowsKeepTheirEntries(bool ipv6)
    {
        await using var sandbox = await ClusterSandbox.CreateAsync();
        var podA = await sandbox.AddPodAsync("dns-a");
        var podB = await sandbox.AddPodAsync("dns-b");
        using var cgroup = new TestCgroup(Guid.NewGuid().ToString("N")[..6]);
        using var bpfFs = new TestBpfFs();
        try
        {
            using var metrics = new ProxyMetrics();
            using var kernel = sandbox.Node.Run(() => EbpfKernel.Open(new EbpfLocation(bpfFs.Path, cgroup.Path), NullLogger.Instance));
            var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
            await backend.SyncAsync(StateBuilder.Full(State(podA, podA)), default);
            var (vip, controlVip) = ipv6 ? (Vip6, ControlVip6) : (Vip, ControlVip);

            using var client = Socket(sandbox, 40053, ipv6);
            using var control = Socket(sandbox, 40054, ipv6);
            Assert.Equal(podA.Name, await AskAsync(client, vip));
            Assert.Equal(podA.Name, await AskAsync(control, controlVip));
            Assert.Equal(4, Entries().Count); // a forward and a reply entry per flow
            Assert.Equal(0, ipv6 ? kernel.Connections.Keys<Ct4Key>().Count : kernel.Connections6.Keys<Ct6Key>().Count); // the other family's map

            await backend.SyncAsync(StateBuilder.Partial(State(podB, podA), StateBuilder.Name("dns", "dns", Protocol.UDP)), default);

            Assert.Equal(podB.Name, await AskAsync(client, vip));
            Assert.Equal(podA.Name, await AskAsync(control, controlVip));
            var entries = Entries();
            Assert.Equal(4, entries.Count); // the control's two and the new flow's two: none to pod A for the changed service
            Assert.DoesNotContain(entries, e => e.Direction == MapLayout.ConnectionReply && e.Source.Equals(IPAddress.Parse(ipv6 ? podA.IPv6 : podA.IP)) && e.DestinationPort == 40053);

            // Every entry of the family's map as (direction, source, destination port).
            List<(byte Direction, IPAddress Source, int DestinationPort)> Entries() => ipv6
                ? [.. kernel.Connections6.Keys<Ct6Key>().Select(Flow)]
                : [.. kernel.Connections.Keys<Ct4Key>().Select(k => (k.Direction, MapLayout.HostAddress(k.Saddr), MapLayout.HostPort(k.Dport)))];
            static (byte, IPAddress, int) Flow(Ct6Key k) => (k.Direction, k.Saddr.ToIPAddress(), MapLayout.HostPort(k.Dport));
        }
        finally
        {
            EbpfKernel.Remove(bpfFs.Path, NullLogger.Instance);
            sandbox.Node.Run(() => EbpfKernel.RemoveNamespaceState(NullLogger.Instance));
        }
    }

    /// <summary>
    /// The matching on a real <c>pp_ct4_v1</c>, both directions of each connection: an endpoint deletion takes the
    /// flows of that frontend to that endpoint only; a node-port deletion (no address) takes the flows that came
    /// through a node port of that number on any node address and nothing sent to a cluster IP on the same port;
    /// a TCP flow is never touched (the planner plans UDP and SCTP only, and the protocol must match).
    /// </summary>
    [KernelFact]
    public void Delete_TakesBothDirectionsOfTheMatchingFlowsOnly()
    {
        using var tc = TcPrograms.Load();
        var connections = tc.Map(MapLayout.ConnectionsMap);
        Connect(connections, "203.0.113.10", 40000, Vip, 53, "10.244.1.2", 8080, ProtocolType.Udp);              // stale: to pod .2
        Connect(connections, "203.0.113.10", 40001, Vip, 53, "10.244.1.3", 8080, ProtocolType.Udp);              // kept: pod .3 stays
        Connect(connections, "203.0.113.10", 40002, Vip, 53, "10.244.1.2", 8080, ProtocolType.Tcp);              // kept: TCP
        Connect(connections, "203.0.113.11", 40003, "203.0.113.1", 30053, "10.244.1.2", 8080, ProtocolType.Udp, nodePort: true); // stale: node port
        Connect(connections, "203.0.113.11", 40004, "10.96.0.99", 30053, "10.244.1.2", 8080, ProtocolType.Udp);  // kept: a cluster IP, not a node port

        var name = StateBuilder.Name("dns", "dns", Protocol.UDP);
        var deleted = StaleConnections.Delete(connections,
        [
            new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse(Vip), 53, IPAddress.Parse("10.244.1.2"), 8080),
            new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, null, 30053, IPAddress.Parse("10.244.1.2"), 8080),
        ]);

        Assert.Equal(4, deleted);
        var left = connections.Keys<Ct4Key>().Where(k => k.Direction == MapLayout.ConnectionForward).Select(k => MapLayout.HostPort(k.Sport)).Order();
        Assert.Equal([40001, 40002, 40004], left);
        Assert.Equal(6, connections.Keys<Ct4Key>().Count); // their reply entries stay too
    }

    /// <summary>
    /// The same on a real <c>pp_ct6_v1</c>: the IPv6 endpoint deletion and the IPv6 node-port deletion take both entries of
    /// their flows; the kept flows (another pod, TCP, a cluster IP on the node port's number) and an IPv4 deletion of the
    /// same endpoint's mapped address touch nothing.
    /// </summary>
    [KernelFact]
    public void Delete6_TakesBothDirectionsOfTheMatchingIPv6FlowsOnly()
    {
        using var tc = TcPrograms.Load();
        var connections = tc.Map(MapLayout.Connections6Map);
        Connect6(connections, "2001:db8::10", 40000, Vip6, 53, "fd00:10:244:1::2", 8080, ProtocolType.Udp);             // stale: to pod ::2
        Connect6(connections, "2001:db8::10", 40001, Vip6, 53, "fd00:10:244:1::3", 8080, ProtocolType.Udp);             // kept: pod ::3 stays
        Connect6(connections, "2001:db8::10", 40002, Vip6, 53, "fd00:10:244:1::2", 8080, ProtocolType.Tcp);             // kept: TCP
        Connect6(connections, "2001:db8::11", 40003, "2001:db8::1", 30053, "fd00:10:244:1::2", 8080, ProtocolType.Udp, nodePort: true); // stale: node port
        Connect6(connections, "2001:db8::11", 40004, "fd00:10:96::99", 30053, "fd00:10:244:1::2", 8080, ProtocolType.Udp); // kept: a cluster IP

        var name = StateBuilder.Name("dns", "dns", Protocol.UDP);
        var ipv4Only = StaleConnections.Delete6(connections,
            [new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse(Vip), 53, IPAddress.Parse("10.244.1.2"), 8080)]);
        var deleted = StaleConnections.Delete6(connections,
        [
            new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv6, IPAddress.Parse(Vip6), 53, IPAddress.Parse("fd00:10:244:1::2"), 8080),
            new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv6, null, 30053, IPAddress.Parse("fd00:10:244:1::2"), 8080),
        ]);

        Assert.Equal(0, ipv4Only);
        Assert.Equal(4, deleted);
        var left = connections.Keys<Ct6Key>().Where(k => k.Direction == MapLayout.ConnectionForward).Select(k => MapLayout.HostPort(k.Sport)).Order();
        Assert.Equal([40001, 40002, 40004], left);
        Assert.Equal(6, connections.Keys<Ct6Key>().Count); // their reply entries stay too
    }

    /// <summary>Both entries tc ingress writes for a new IPv6 connection.</summary>
    private static void Connect6(BpfMap connections, string client, int clientPort, string frontend, int frontendPort, string backend, int backendPort, ProtocolType protocol, bool nodePort = false)
    {
        var flags = nodePort ? MapLayout.ServiceFlagNodePort : (ushort)0;
        MapAddress A(string address) => MapAddress.For(IPAddress.Parse(address));
        connections.Update(
            new Ct6Key { Saddr = A(backend), Daddr = A(client), Sport = MapLayout.NetworkPort(backendPort), Dport = MapLayout.NetworkPort(clientPort), Proto = (byte)protocol, Direction = MapLayout.ConnectionReply },
            new Ct6Value { Address = A(frontend), Port = MapLayout.NetworkPort(frontendPort), Flags = flags, RevNatId = 1 });
        connections.Update(
            new Ct6Key { Saddr = A(client), Daddr = A(frontend), Sport = MapLayout.NetworkPort(clientPort), Dport = MapLayout.NetworkPort(frontendPort), Proto = (byte)protocol, Direction = MapLayout.ConnectionForward },
            new Ct6Value { Address = A(backend), Port = MapLayout.NetworkPort(backendPort), Flags = flags, RevNatId = 1, BackendId = 1 });
    }

    /// <summary>Both entries tc ingress writes for a new connection.</summary>
    private static void Connect(BpfMap connections, string client, int clientPort, string frontend, int frontendPort, string backend, int backendPort, ProtocolType protocol, bool nodePort = false)
    {
        var flags = nodePort ? MapLayout.ServiceFlagNodePort : (ushort)0;
        connections.Update(
            new Ct4Key { Saddr = Address(backend), Daddr = Address(client), Sport = MapLayout.NetworkPort(backendPort), Dport = MapLayout.NetworkPort(clientPort), Proto = (byte)protocol, Direction = MapLayout.ConnectionReply },
            new Ct4Value { Address = Address(frontend), Port = MapLayout.NetworkPort(frontendPort), Flags = flags, RevNatId = 1 });
        connections.Update(
            new Ct4Key { Saddr = Address(client), Daddr = Address(frontend), Sport = MapLayout.NetworkPort(clientPort), Dport = MapLayout.NetworkPort(frontendPort), Proto = (byte)protocol, Direction = MapLayout.ConnectionForward },
            new Ct4Value { Address = Address(backend), Port = MapLayout.NetworkPort(backendPort), Flags = flags, RevNatId = 1, BackendId = 1 });
    }

    private static uint Address(string address) => MapLayout.NetworkAddress(IPAddress.Parse(address));

    /// <summary>dns (the changed service) and dns-control, dual-stack UDP cluster IPs on port 53, one endpoint each (both its addresses) on 8080.</summary>
    private static DesiredState State(SandboxPod dnsEndpoint, SandboxPod controlEndpoint) => StateBuilder.State(null,
        StateBuilder.Port(StateBuilder.Info("dns", $"{Vip},{Vip6}", port: 53, portName: "dns", protocol: Protocol.UDP),
            StateBuilder.Endpoint(dnsEndpoint.IP), StateBuilder.Endpoint(dnsEndpoint.IPv6)),
        StateBuilder.Port(StateBuilder.Info("dns-control", $"{ControlVip},{ControlVip6}", port: 53, portName: "dns", protocol: Protocol.UDP),
            StateBuilder.Endpoint(controlEndpoint.IP), StateBuilder.Endpoint(controlEndpoint.IPv6)));

    /// <summary>A UDP socket of the client namespace bound to a fixed source port: every datagram is the same flow.</summary>
    private static Socket Socket(ClusterSandbox sandbox, int sourcePort, bool ipv6)
    {
        var socket = sandbox.Client.CreateSocket(ipv6 ? AddressFamily.InterNetworkV6 : AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp);
        socket.Bind(new IPEndPoint(ipv6 ? IPAddress.IPv6Any : IPAddress.Any, sourcePort));
        return socket;
    }

    /// <summary>The name of the pod that answered the datagram, or what happened instead.</summary>
    private static async Task<string> AskAsync(Socket socket, string vip)
    {
        await socket.SendToAsync(Encoding.ASCII.GetBytes("who"), new IPEndPoint(IPAddress.Parse(vip), 53));
        var buffer = new byte[2048];
        using var timeout = new CancellationTokenSource(ProbeTimeout);
        try
        {
            var received = await socket.ReceiveFromAsync(buffer, SocketFlags.None, new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0), timeout.Token);
            // "pod=NAME src=SOURCE": the pod (the source is the node's when the cluster IP masquerades off-cluster clients).
            var answer = Encoding.ASCII.GetString(buffer, 0, received.ReceivedBytes).Trim();
            return answer.StartsWith("pod=", StringComparison.Ordinal) ? answer["pod=".Length..].Split(' ')[0] : answer;
        }
        catch (OperationCanceledException)
        {
            return $"no answer from {vip}:53 within {ProbeTimeout.TotalSeconds} s";
        }
    }
}
