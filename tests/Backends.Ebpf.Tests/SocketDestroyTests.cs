using System.Net;
using System.Net.Sockets;
using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.NodeTools.Conntrack;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;
using Xunit.Abstractions;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// Connected UDP sockets of a removed endpoint, destroyed after the sync (<see cref="SocketDestroyer"/>,
/// bpf/sockdestroy.c). Real sockets: <see cref="EbpfKernel"/> opened in a network namespace the test makes, its
/// socket hooks on a cgroup the test makes, its pins in a private bpffs; the servers listen on loopback
/// addresses of that namespace, and a client process (tests/Backends.Ebpf.Tests/udp_holder.c) in the cgroup
/// and the namespace keeps its sockets open across the sync.
/// </summary>
public sealed class SocketDestroyTests : IDisposable
{
    private const int UdpPort = 53;
    private const int UdpBackendPort = 5353;
    private const int TcpPort = 80;
    private const int TcpBackendPort = 8080;

    // 24 sockets over two backends: the chance that all land on one is 2 in 2^24.
    private const int Sockets = 24;

    private readonly CleanupStack _cleanup = new();
    private readonly CancellationTokenSource _stop = new();
    private readonly TestCgroup _cgroup;
    private readonly TestBpfFs _bpfFs;
    private readonly NetworkNamespace _namespace;
    private readonly DirectoryInfo _work = Directory.CreateTempSubdirectory("pp-ebpf-holder-");
    private readonly ITestOutputHelper _output;

    public SocketDestroyTests(ITestOutputHelper output)
    {
        _output = output;
        _cleanup.Add(new Disposer(() => _work.Delete(recursive: true)));
        try
        {
            _cgroup = Track(new TestCgroup(Guid.NewGuid().ToString("N")[..6]));
            _bpfFs = Track(new TestBpfFs());
            _namespace = Track(NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-sockd"));
            Assert.True(_namespace.ExecAsync("ip", "link", "set", "lo", "up").GetAwaiter().GetResult().Succeeded);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public static TheoryData<string, string, string, string> Families => new()
    {
        { "10.96.0.53", "10.96.0.80", "127.0.0.2", "127.0.0.3" },
        { "fd00:10:96::53", "fd00:10:96::80", "fd00:10:244::2", "fd00:10:244::3" },
    };

    /// <summary>
    /// A UDP cluster IP with endpoints A and B; the client holds <see cref="Sockets"/> sockets connected to it (the
    /// hooks put each on A or B), one UDP socket connected to A directly and one TCP connection through a TCP
    /// service to A. A sync takes A off both services. Every UDP socket the hooks had put on A is aborted
    /// (ECONNABORTED) and its reconnect reaches B; every socket on B keeps B; the direct socket (not through a
    /// frontend) and the TCP connection keep A; the metric counts the aborted ones.
    /// </summary>
    [KernelTheory(needsCgroup: true, needsSocketDestroy: true)]
    [MemberData(nameof(Families))]
    public Task EndpointRemoved_SocketsTheHooksGaveIt_Aborted_ReconnectReachesTheOther_OthersKept(string vip, string tcpVip, string addressA, string addressB) =>
        EndpointRemoved(vip, tcpVip, addressA, addressB, sockDiag: false);

    /// <summary>
    /// <see cref="EndpointRemoved_SocketsTheHooksGaveIt_Aborted_ReconnectReachesTheOther_OthersKept"/> through the
    /// sock_diag fallback (what a kernel before 6.5 uses), forced on this kernel: the same sockets aborted, the same kept.
    /// </summary>
    [KernelTheory(needsCgroup: true)]
    [MemberData(nameof(Families))]
    public Task EndpointRemoved_SockDiagFallback_SocketsTheHooksGaveIt_Aborted_ReconnectReachesTheOther_OthersKept(string vip, string tcpVip, string addressA, string addressB) =>
        EndpointRemoved(vip, tcpVip, addressA, addressB, sockDiag: true);

    private async Task EndpointRemoved(string vip, string tcpVip, string addressA, string addressB, bool sockDiag)
    {
        if (addressA.Contains(':'))
        {
            foreach (var address in new[] { addressA, addressB })
                Assert.True((await _namespace.ExecAsync("ip", "-6", "addr", "add", address + "/128", "dev", "lo", "nodad")).Succeeded);
        }
        StartUdpServer(addressA, "udp-a");
        StartUdpServer(addressB, "udp-b");
        StartTcpServer(addressA, "tcp-a");
        using var metrics = new ProxyMetrics();
        var kernel = OpenKernel(sockDiag);
        Assert.True(kernel.DestroysSockets);
        var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
        await backend.SyncAsync(StateBuilder.Full(State(vip, tcpVip, addressA, addressB)), default);

        var go = Path.Combine(_work.FullName, "go");
        var holder = Track(_namespace.StartProcess(HolderBinary(),
            [Sockets.ToString(), vip, UdpPort.ToString(), addressA, UdpBackendPort.ToString(), tcpVip, TcpPort.ToString(), go], cgroup: _cgroup));
        var before = await LinesUntilAsync(holder, "ready");
        var onA = Socket(before, "udp-a");
        var onB = Socket(before, "udp-b");
        Assert.True(onA.Count + onB.Count == Sockets, string.Join('\n', before));
        Assert.NotEmpty(onA);
        Assert.NotEmpty(onB);
        Assert.Contains("before direct udp-a", before);
        Assert.Contains("before tcp tcp-a", before);

        var changed = new[] { StateBuilder.Name("dns", "dns", Protocol.UDP), StateBuilder.Name("web") };
        await backend.SyncAsync(StateBuilder.Partial(State(vip, tcpVip, addressB), changed), default);
        await File.WriteAllTextAsync(go, "");
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30))) await holder.WaitForExitAsync(timeout.Token);

        var after = holder.StandardOutputLines.Skip(before.Count).ToList();
        var report = string.Join('\n', holder.StandardOutputLines.Concat(holder.StandardErrorLines));
        Assert.True(holder.ExitCode == 0, report);
        foreach (var socket in onA)
        {
            Assert.Contains($"after {socket} aborted", after);
            Assert.Contains($"after {socket} reconnected udp-b", after);
        }
        foreach (var socket in onB) Assert.Contains($"after {socket} kept udp-b", after);
        Assert.Contains("after direct kept udp-a", after);
        Assert.Contains("after tcp tcp-a", after);
        Assert.Equal(onA.Count, after.Count(l => l.EndsWith(" aborted", StringComparison.Ordinal)));
        Assert.Contains($"{EbpfMetrics.SocketsDestroyedTotal} {onA.Count}", await metrics.ExportTextAsync());
        if (!sockDiag) Assert.Empty(kernel.SocketDeletions!.Keys<SockDeleteKey>()); // emptied after the pass
    }

    /// <summary>
    /// <see cref="EbpfKernel"/> opened in the test's namespace on its cgroup and bpffs (removed at the end); with
    /// <paramref name="sockDiag"/> forced onto the sock_diag fallback, which it then says it uses (no pp_sockdel_v1).
    /// </summary>
    private EbpfKernel OpenKernel(bool sockDiag)
    {
        var kernel = Track(_namespace.Run(() => EbpfKernel.Open(new EbpfLocation(_bpfFs.Path, _cgroup.Path), NullLogger.Instance, sockDiag)));
        _cleanup.Add(new Disposer(() => EbpfKernel.Remove(_bpfFs.Path, NullLogger.Instance)));
        Assert.Equal(sockDiag, kernel.DestroysSocketsBySockDiag);
        Assert.Equal(sockDiag, kernel.SocketDeletions is null);
        return kernel;
    }

    /// <summary>
    /// The whole frontend gone (a deletion without an endpoint) takes every socket the hooks connected through it,
    /// whichever backend; a deletion of another frontend's endpoint, on the same backend address and port, takes none.
    /// </summary>
    [KernelFact(needsCgroup: true, needsSocketDestroy: true)]
    public Task FrontendRemoved_TakesEverySocketThroughIt_AnotherFrontendsDeletionTakesNone() => FrontendRemoved(sockDiag: false);

    /// <summary><see cref="FrontendRemoved_TakesEverySocketThroughIt_AnotherFrontendsDeletionTakesNone"/> through the sock_diag fallback, forced.</summary>
    [KernelFact(needsCgroup: true)]
    public Task FrontendRemoved_SockDiagFallback_TakesEverySocketThroughIt_AnotherFrontendsDeletionTakesNone() => FrontendRemoved(sockDiag: true);

    private async Task FrontendRemoved(bool sockDiag)
    {
        const string vip = "10.96.0.53";
        StartUdpServer("127.0.0.2", "udp-a");
        StartUdpServer("127.0.0.3", "udp-b");
        StartTcpServer("127.0.0.2", "tcp-a");
        using var metrics = new ProxyMetrics();
        var kernel = OpenKernel(sockDiag);
        var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
        await backend.SyncAsync(StateBuilder.Full(State(vip, "10.96.0.80", "127.0.0.2", "127.0.0.3")), default);

        var go = Path.Combine(_work.FullName, "go");
        var holder = Track(_namespace.StartProcess(HolderBinary(),
            [Sockets.ToString(), vip, UdpPort.ToString(), "127.0.0.2", UdpBackendPort.ToString(), "10.96.0.80", TcpPort.ToString(), go], cgroup: _cgroup));
        var before = await LinesUntilAsync(holder, "ready");
        var name = StateBuilder.Name("dns", "dns", Protocol.UDP);

        var other = new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse("10.96.0.99"), UdpPort, IPAddress.Parse("127.0.0.2"), UdpBackendPort);
        Assert.Equal(0, kernel.DestroySockets([other]));
        var gone = new ConntrackDeletion(name, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, IPAddress.Parse(vip), UdpPort);
        var watch = System.Diagnostics.Stopwatch.StartNew();
        Assert.Equal(Sockets, kernel.DestroySockets([gone]));
        Console.WriteLine($"destroy pass ({(sockDiag ? "sock_diag" : "bpf iterator")}): {Sockets} sockets destroyed, {SocketDestroyer.NamedNamespaces().Count + 1} network namespaces walked, {watch.Elapsed.TotalMilliseconds:F1} ms");

        await File.WriteAllTextAsync(go, "");
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30))) await holder.WaitForExitAsync(timeout.Token);
        var after = holder.StandardOutputLines.Skip(before.Count).ToList();
        Assert.Equal(Sockets, after.Count(l => l.EndsWith(" aborted", StringComparison.Ordinal)));
        Assert.Contains("after direct kept udp-a", after);
    }

    public static TheoryData<string, string, string, string, string> DropFamilies => new()
    {
        { "10.96.0.254/16", "10.96.0.80", "10.96.0.81", "10.96.0.53", "10.96.0.54" },
        { "fd00:10:96::fe/64", "fd00:10:96::80", "fd00:10:96::81", "fd00:10:96::53", "fd00:10:96::54" },
    };

    /// <summary>
    /// The README's Drop edge: a socket that asked a frontend while its verdict was Drop (internalTrafficPolicy Local
    /// without a local endpoint) stays on the VIP; once a sync gives the frontend a local endpoint, nothing would rewrite
    /// it. The client (drop_client.c, in the test's cgroup) holds a TCP socket in SYN_SENT and a connected UDP socket to
    /// each of two Drop services; the VIPs are routed out of a veth whose frames go nowhere, so a SYN that is not dropped
    /// still gets no answer. A partial sync changes both services: one gets its local endpoint (out of Drop), the other
    /// only another remote one (still Drop, the control). Then the first's TCP socket has failed with ECONNABORTED (not
    /// pending: without the pass it still is) and its UDP socket reads ECONNABORTED; the second's TCP socket is still
    /// connecting and its UDP socket reads EAGAIN; a new connect to the first VIP reaches its backend (TCP and UDP). The
    /// metric counts the 2; pp_sockvip_v1 is empty after. IPv4 and IPv6.
    /// </summary>
    [KernelTheory(needsCgroup: true, needsSocketDestroy: true)]
    [MemberData(nameof(DropFamilies))]
    public Task DropToForward_SocketsLeftOnTheVip_Aborted_ReconnectReachesTheBackend_StillDropKept(
        string route, string tcpVip, string tcpOther, string udpVip, string udpOther) =>
        DropToForward(route, tcpVip, tcpOther, udpVip, udpOther, sockDiag: false);

    /// <summary>
    /// <see cref="DropToForward_SocketsLeftOnTheVip_Aborted_ReconnectReachesTheBackend_StillDropKept"/> through the
    /// sock_diag fallback, forced: the TCP socket in SYN_SENT fails at once, the still-Drop ones stay.
    /// </summary>
    [KernelTheory(needsCgroup: true)]
    [MemberData(nameof(DropFamilies))]
    public Task DropToForward_SockDiagFallback_SocketsLeftOnTheVip_Aborted_ReconnectReachesTheBackend_StillDropKept(
        string route, string tcpVip, string tcpOther, string udpVip, string udpOther) =>
        DropToForward(route, tcpVip, tcpOther, udpVip, udpOther, sockDiag: true);

    private async Task DropToForward(string route, string tcpVip, string tcpOther, string udpVip, string udpOther, bool sockDiag)
    {
        var ipv6 = route.Contains(':');
        var backendA = ipv6 ? "fd00:10:244::2" : "127.0.0.2";
        var backendB = ipv6 ? "fd00:10:244::3" : "127.0.0.3";
        if (ipv6)
        {
            foreach (var address in new[] { backendA, backendB })
                Assert.True((await _namespace.ExecAsync("ip", "-6", "addr", "add", address + "/128", "dev", "lo", "nodad")).Succeeded);
        }
        // The VIPs' route: out of a veth (both ends in the test's namespace) without ARP or ND, whose frames the peer
        // drops (not addressed to it). A SYN that pp_egress lets through gets no answer and no error.
        foreach (var command in new[]
        {
            new[] { "ip", "link", "add", "ppdrop0", "type", "veth", "peer", "name", "ppdrop1" },
            ["ip", "link", "set", "ppdrop0", "arp", "off", "up"],
            ["ip", "link", "set", "ppdrop1", "up"],
            ipv6 ? ["ip", "-6", "addr", "add", route, "dev", "ppdrop0", "nodad"] : ["ip", "-4", "addr", "add", route, "dev", "ppdrop0"],
        })
            await _namespace.CheckedExecAsync(command);
        StartUdpServer(backendA, "udp-a");
        StartTcpServer(backendA, "tcp-a");
        using var metrics = new ProxyMetrics();
        var kernel = OpenKernel(sockDiag);
        var backend = new EbpfBackend(kernel, metrics, NullLogger.Instance);
        await backend.SyncAsync(StateBuilder.Full(DropState(tcpVip, tcpOther, udpVip, udpOther, local: null, backendA, backendB)), default);

        var go = Path.Combine(_work.FullName, "go");
        var client = Track(_namespace.StartProcess(DropClientBinary(),
            [tcpVip, tcpOther, TcpPort.ToString(), udpVip, udpOther, UdpPort.ToString(), go], cgroup: _cgroup));
        await LinesUntilAsync(client, "ready");

        var changed = new[] { StateBuilder.Name("web-a"), StateBuilder.Name("web-b"), StateBuilder.Name("dns-a", "dns", Protocol.UDP), StateBuilder.Name("dns-b", "dns", Protocol.UDP) };
        await backend.SyncAsync(StateBuilder.Partial(DropState(tcpVip, tcpOther, udpVip, udpOther, local: backendA, backendA, backendB), changed), default);
        await File.WriteAllTextAsync(go, "");
        using (var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30))) await client.WaitForExitAsync(timeout.Token);

        var report = string.Join('\n', client.StandardOutputLines.Concat(client.StandardErrorLines));
        _output.WriteLine(report);
        Assert.True(client.ExitCode == 0, report);
        Assert.Equal(["ready", "t1 ECONNABORTED", "t2 pending", "u1 ECONNABORTED", "u2 EAGAIN", "again tcp tcp-a", "again udp udp-a"], client.StandardOutputLines);
        Assert.Contains($"{EbpfMetrics.SocketsDestroyedTotal} 2", await metrics.ExportTextAsync());
        if (!sockDiag) Assert.Empty(kernel.SocketReopened!.Keys<ServiceKey>());
    }

    /// <summary>
    /// <see cref="SocketDestroyer.ReopenedFrontends"/>: a master written without the drop flag that had it before; not
    /// one that had none before (Reject or new), not one still Drop, not a slot, not the external scope.
    /// </summary>
    [Fact]
    public void ReopenedFrontends_OnlyInternalMastersThatLeaveDrop()
    {
        var name = StateBuilder.Name("web");
        var drop = ServiceValue.Master(0, 1, MapLayout.ServiceFlagDrop);
        var key = ServiceKey.For(IPAddress.Parse("10.96.0.80"), 80, ProtocolType.Tcp);
        var rejected = ServiceKey.For(IPAddress.Parse("10.96.0.81"), 80, ProtocolType.Tcp);
        var still = ServiceKey.For(IPAddress.Parse("10.96.0.82"), 80, ProtocolType.Tcp);
        var external = key with { Scope = MapLayout.ScopeExternal };
        var fresh = ServiceKey.For(IPAddress.Parse("10.96.0.83"), 80, ProtocolType.Tcp);
        var previous = new Dictionary<ServiceKey, ServiceValue>
        {
            [key] = drop, [rejected] = ServiceValue.Master(0, 2), [still] = drop with { RevNatId = 3 }, [external] = drop with { RevNatId = 4 },
        };
        MapWrite[] writes =
        [
            new ServiceUpdate(key.WithSlot(1), ServiceValue.ForSlot(1), name),
            new ServiceUpdate(key, ServiceValue.Master(1, 1), name),
            new ServiceUpdate(rejected, ServiceValue.Master(1, 2), name),
            new ServiceUpdate(still, drop with { RevNatId = 3, Flags = MapLayout.ServiceFlagDrop | MapLayout.ServiceFlagAffinity }, name),
            new ServiceUpdate(external, ServiceValue.Master(1, 4), name),
            new ServiceUpdate(fresh, ServiceValue.Master(1, 5), name),
        ];
        Assert.Equal([key], SocketDestroyer.ReopenedFrontends(writes, previous));
    }

    /// <summary>
    /// <see cref="SocketDestroyer.TryLoad"/> is the feature probe the daemon makes at start: where the kernel's BTF has
    /// the bpf_sock_destroy kfunc (the test's own probe) it loads the iterators and says nothing; where not (before 6.5:
    /// the VM lane's Debian 6.1) it falls back to sock_diag SOCK_DESTROY (probed in the test's namespace, where it runs)
    /// and says so in exactly one info line, and the socket hooks it shares maps with are loaded all the same.
    /// <c>EbpfInVmTests</c> reads the "socket destroy" line this prints.
    /// </summary>
    [KernelFact]
    public void TryLoad_LoadsWhereTheKernelHasTheKfunc_ElseFallsBackToSockDiagInOneLine()
    {
        using var sock = SockPrograms.Load();
        var logger = new ListLogger();
        using var destroyer = _namespace.Run(() => SocketDestroyer.TryLoad(sock.Maps, logger));

        Assert.NotNull(destroyer);
        if (BpfTestSupport.KernelHasSocketDestroy)
        {
            Assert.False(destroyer.UsesSockDiag);
            Assert.NotNull(destroyer.Deletions);
            Assert.Empty(logger.Entries);
            _output.WriteLine($"socket destroy: bpf_sock_destroy on kernel {BpfTestSupport.KernelVersion}");
        }
        else
        {
            Assert.True(destroyer.UsesSockDiag);
            var line = AssertFallbackLine(logger);
            Assert.Contains("bpf_sock_destroy", line, StringComparison.Ordinal); // why: libbpf's refusal
            _output.WriteLine($"socket destroy: sock_diag on kernel {BpfTestSupport.KernelVersion}: {line}");
        }
    }

    /// <summary>Forced (the tests' switch): the sock_diag fallback even where the kfunc is there, said in the same one line; no iterator maps.</summary>
    [KernelFact]
    public void TryLoad_ForcedSockDiag_UsesIt_SaysSoInOneLine()
    {
        using var sock = SockPrograms.Load();
        var logger = new ListLogger();
        using var destroyer = _namespace.Run(() => SocketDestroyer.TryLoad(sock.Maps, logger, forceSockDiag: true));

        Assert.NotNull(destroyer);
        Assert.True(destroyer.UsesSockDiag);
        Assert.Null(destroyer.Deletions);
        Assert.Null(destroyer.Reopened);
        Assert.EndsWith(": not tried", AssertFallbackLine(logger), StringComparison.Ordinal);
    }

    private static string AssertFallbackLine(ListLogger logger)
    {
        var line = Assert.Single(logger.Entries);
        Assert.Equal(Microsoft.Extensions.Logging.LogLevel.Information, line.Level);
        Assert.StartsWith("eBPF: sockets are destroyed through sock_diag SOCK_DESTROY on this kernel", line.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', line.Message);
        return line.Message;
    }

    /// <summary>
    /// The sock_diag fallback's choice, as bpf/sockdestroy.c makes it, over fake map lookups: a connected UDP socket goes
    /// when its reverse entry names a deleted {frontend, backend} (exactly, any backend of a gone frontend, a node port's
    /// any address) or it sits on a frontend out of Drop (by the VIP, or a node address with the node port's key); kept:
    /// no reverse entry (connected directly), another frontend's deletion, another cookie, an unconnected socket, a node
    /// port key for an address that is not the node's.
    /// </summary>
    [Fact]
    public void SockDiagSelection_SameSocketsAsTheIterator()
    {
        var vip = IPAddress.Parse("10.96.0.53");
        var pod = IPAddress.Parse("10.244.1.2");
        var node = IPAddress.Parse("192.0.2.10");
        var lookups = new FakeLookups { Node = MapAddress.For(node) };
        lookups.Reverse[(7, MapAddress.For(pod), MapLayout.NetworkPort(5353))] = (MapAddress.For(vip), MapLayout.NetworkPort(53));
        InetDiagSocket Udp(ulong cookie, IPAddress destination, int port, int state = 1) =>
            new(AfInet, 17, state, new InetDiagSocketId(IPAddress.Parse("10.244.0.9"), 40000, destination, port, 0, cookie), 0);
        var exact = new SockDeleteKey { Frontend = MapAddress.For(vip), FrontendPort = MapLayout.NetworkPort(53), Backend = MapAddress.For(pod), BackendPort = MapLayout.NetworkPort(5353) };
        HashSet<ServiceKey> none = [];
        HashSet<SockDeleteKey> noDeletions = [];

        Assert.True(SocketDestroyer.SelectsUdp(Udp(7, pod, 5353), new HashSet<SockDeleteKey> { exact }, none, lookups));
        Assert.True(SocketDestroyer.SelectsUdp(Udp(7, pod, 5353), new HashSet<SockDeleteKey> { exact with { Backend = default, BackendPort = 0 } }, none, lookups));
        Assert.True(SocketDestroyer.SelectsUdp(Udp(7, pod, 5353), new HashSet<SockDeleteKey> { exact with { Frontend = default } }, none, lookups));
        Assert.False(SocketDestroyer.SelectsUdp(Udp(8, pod, 5353), new HashSet<SockDeleteKey> { exact }, none, lookups)); // no reverse entry
        Assert.False(SocketDestroyer.SelectsUdp(Udp(7, pod, 5353), new HashSet<SockDeleteKey> { exact with { Frontend = MapAddress.For(IPAddress.Parse("10.96.0.99")) } }, none, lookups));
        Assert.False(SocketDestroyer.SelectsUdp(Udp(7, pod, 5353, state: 7), new HashSet<SockDeleteKey> { exact }, none, lookups)); // TCP_CLOSE: not connected

        var reopened = new HashSet<ServiceKey> { ServiceKey.For(vip, 53, ProtocolType.Udp) };
        var nodePort = new HashSet<ServiceKey> { ServiceKey.For(IPAddress.Any, 30053, ProtocolType.Udp) };
        Assert.True(SocketDestroyer.SelectsUdp(Udp(9, vip, 53), noDeletions, reopened, lookups));
        Assert.False(SocketDestroyer.SelectsUdp(Udp(9, vip, 54), noDeletions, reopened, lookups));
        Assert.True(SocketDestroyer.SelectsUdp(Udp(9, node, 30053), noDeletions, nodePort, lookups));
        Assert.False(SocketDestroyer.SelectsUdp(Udp(9, IPAddress.Parse("192.0.2.11"), 30053), noDeletions, nodePort, lookups)); // not a node address
        var syn = new InetDiagSocket(AfInet, 6, 2, new InetDiagSocketId(IPAddress.Parse("10.244.0.9"), 40000, vip, 53, 0, 9), 0);
        Assert.False(SocketDestroyer.LeftOnReopened(syn, ProtocolType.Tcp, reopened, lookups)); // the UDP frontend, not TCP
        Assert.True(SocketDestroyer.LeftOnReopened(syn, ProtocolType.Tcp, new HashSet<ServiceKey> { ServiceKey.For(vip, 53, ProtocolType.Tcp) }, lookups));
    }

    private const int AfInet = 2;

    private sealed class FakeLookups : SocketDestroyer.ISockDiagLookups
    {
        public Dictionary<(ulong Cookie, MapAddress Backend, ushort Port), (MapAddress Address, ushort Port)> Reverse { get; } = [];

        public MapAddress Node { get; init; }

        public (MapAddress Address, ushort Port)? ReverseEntry(int family, ulong cookie, MapAddress backend, ushort backendPort) =>
            Reverse.TryGetValue((cookie, backend, backendPort), out var vip) ? vip : null;

        public bool IsNodeAddress(MapAddress address) => address == Node;
    }

    /// <summary>What pp_sockdel_v1 gets of each kind of deletion: UDP only, nothing for a port that just got endpoints.</summary>
    [Fact]
    public void KeyFor_UdpDeletions_ExactOrWildcard_NothingElse()
    {
        var name = StateBuilder.Name("dns", "dns", Protocol.UDP);
        var vip = IPAddress.Parse("10.96.0.53");
        var pod = IPAddress.Parse("10.244.1.2");

        var exact = SocketDestroyer.KeyFor(new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, vip, 53, pod, 5353));
        Assert.Equal(new SockDeleteKey { Frontend = MapAddress.For(vip), FrontendPort = MapLayout.NetworkPort(53), Backend = MapAddress.For(pod), BackendPort = MapLayout.NetworkPort(5353) }, exact);
        var nodePort = SocketDestroyer.KeyFor(new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.UDP, IpFamily.IPv4, null, 30053, pod, 5353));
        Assert.Equal(default, nodePort!.Value.Frontend);
        var frontend = SocketDestroyer.KeyFor(new ConntrackDeletion(name, ConntrackDeletionReason.FrontendRemoved, Protocol.UDP, IpFamily.IPv4, vip, 53));
        Assert.Equal(new SockDeleteKey { Frontend = MapAddress.For(vip), FrontendPort = MapLayout.NetworkPort(53) }, frontend);

        Assert.Null(SocketDestroyer.KeyFor(new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.TCP, IpFamily.IPv4, vip, 53, pod, 5353)));
        Assert.Null(SocketDestroyer.KeyFor(new ConntrackDeletion(name, ConntrackDeletionReason.EndpointRemoved, Protocol.SCTP, IpFamily.IPv4, vip, 53, pod, 5353)));
        Assert.Null(SocketDestroyer.KeyFor(new ConntrackDeletion(name, ConntrackDeletionReason.ServiceNewlyActive, Protocol.UDP, IpFamily.IPv4, vip, 53)));
    }

    /// <summary>
    /// A destroy pass the kernel refuses never fails the sync: the maps are written, the refusal is one warning line
    /// naming the deletions and counted in <c>..._map_update_failures_total{map="pp_sockdel_v1"}</c>, nothing is counted
    /// as destroyed. Control: the sync before it, which removed nothing, never asked for a pass.
    /// </summary>
    [Fact]
    public async Task DestroyRefused_SyncSucceeds_OneWarning_CountedAsAFailure()
    {
        var maps = new RefusingMaps();
        using var metrics = new ProxyMetrics();
        var logger = new ListLogger();
        var backend = new EbpfBackend(maps, metrics, logger);
        await backend.SyncAsync(StateBuilder.Full(State("10.96.0.53", "10.96.0.80", "10.244.1.2", "10.244.1.3")), default);
        Assert.Equal(0, maps.Passes);

        await backend.SyncAsync(StateBuilder.Partial(State("10.96.0.53", "10.96.0.80", "10.244.1.3"), StateBuilder.Name("dns", "dns", Protocol.UDP), StateBuilder.Name("web")), default);

        Assert.Equal(1, maps.Passes);
        Assert.True(maps.Writes > 0);
        var warning = Assert.Single(logger.Entries, e => e.Level == Microsoft.Extensions.Logging.LogLevel.Warning);
        Assert.Contains("could not destroy the connected UDP sockets of (udp 10.96.0.53:53 reply-src 10.244.1.2:5353", warning.Message, StringComparison.Ordinal);
        Assert.Contains("EPERM", warning.Message, StringComparison.Ordinal);
        var text = await metrics.ExportTextAsync();
        Assert.Contains("proxyplanes_ebpf_map_update_failures_total{map=\"pp_sockdel_v1\"} 1", text);
        Assert.Contains($"{EbpfMetrics.SocketsDestroyedTotal} 0", text);
    }

    /// <summary>dns: a UDP cluster IP on port 53 with the given endpoints on 5353; web: a TCP cluster IP on 80 with the first endpoint only, on 8080.</summary>
    private static DesiredState State(string vip, string tcpVip, params string[] endpoints) => StateBuilder.State(null,
        StateBuilder.Port(StateBuilder.Info("dns", vip, port: UdpPort, portName: "dns", protocol: Protocol.UDP), [.. endpoints.Select(e => StateBuilder.Endpoint(e, UdpBackendPort))]),
        StateBuilder.Port(StateBuilder.Info("web", tcpVip, port: TcpPort), [.. endpoints.Take(endpoints.Length > 1 ? 1 : 0).Select(e => StateBuilder.Endpoint(e, TcpBackendPort))]));

    /// <summary>
    /// web-a, web-b (TCP, port 80 → 8080) and dns-a, dns-b (UDP, 53 → 5353), each internalTrafficPolicy Local with an
    /// external IP (<see cref="External"/>: Core then uses the cluster endpoints, so a Local policy without local ones is
    /// Drop, not Reject): before,
    /// every endpoint is remote (Drop); with <paramref name="local"/>, web-a and dns-a get it as a local endpoint and web-b,
    /// dns-b get <paramref name="remote"/> besides the first (another remote one: still Drop).
    /// </summary>
    private static DesiredState DropState(string tcpVip, string tcpOther, string udpVip, string udpOther, string? local, string remote, string other)
    {
        ServicePortState Port(string service, string vip, int port, string portName, Protocol protocol, int backendPort, bool opened) =>
            StateBuilder.Port(StateBuilder.Info(service, vip, port, portName, protocol) with { InternalPolicyLocal = true, ExternalIPs = new([IPAddress.Parse(External(vip))]) },
                opened && local is not null
                    ? [StateBuilder.Endpoint(local, backendPort, local: true)]
                    : local is not null
                        ? [StateBuilder.Endpoint(remote, backendPort, local: false), StateBuilder.Endpoint(other, backendPort, local: false)]
                        : [StateBuilder.Endpoint(remote, backendPort, local: false)]);
        return StateBuilder.State(null,
            Port("web-a", tcpVip, TcpPort, "http", Protocol.TCP, TcpBackendPort, opened: true),
            Port("web-b", tcpOther, TcpPort, "http", Protocol.TCP, TcpBackendPort, opened: false),
            Port("dns-a", udpVip, UdpPort, "dns", Protocol.UDP, UdpBackendPort, opened: true),
            Port("dns-b", udpOther, UdpPort, "dns", Protocol.UDP, UdpBackendPort, opened: false));
    }

    /// <summary>An external IP for a VIP's service: 203.0.113.N or 2001:db8::N, N the VIP's last part.</summary>
    private static string External(string vip) =>
        vip.Contains(':') ? "2001:db8::" + vip.Split(':')[^1] : "203.0.113." + vip.Split('.')[^1];

    /// <summary>The socket numbers whose "before N NAME" line names <paramref name="server"/>.</summary>
    private static List<string> Socket(IReadOnlyList<string> lines, string server) =>
        [.. lines.Where(l => l.StartsWith("before ", StringComparison.Ordinal) && l.EndsWith(" " + server, StringComparison.Ordinal))
            .Select(l => l.Split(' ')[1]).Where(n => n != "direct" && n != "tcp")];

    /// <summary>The holder's output up to and including <paramref name="marker"/> (at most 30 s; it failing first fails the test).</summary>
    private static async Task<IReadOnlyList<string>> LinesUntilAsync(SandboxProcess process, string marker)
    {
        for (var i = 0; i < 3000; i++)
        {
            var lines = process.StandardOutputLines;
            if (lines.Contains(marker)) return lines;
            if (process.HasExited) Assert.Fail($"the holder exited before \"{marker}\": {string.Join('\n', lines.Concat(process.StandardErrorLines))}");
            await Task.Delay(10);
        }
        Assert.Fail($"no \"{marker}\" from the holder within 30 s: {string.Join('\n', process.StandardOutputLines)}");
        return [];
    }

    /// <summary>tests/Backends.Ebpf.Tests/udp_holder.c, compiled into this test's directory.</summary>
    private string HolderBinary() => Compile("udp_holder");

    /// <summary>tests/Backends.Ebpf.Tests/drop_client.c, compiled into this test's directory.</summary>
    private string DropClientBinary() => Compile("drop_client");

    private string Compile(string program)
    {
        var binary = Path.Combine(_work.FullName, program);
        var compile = BpfTestSupport.Run("cc", "-Wall", "-Werror", "-O1", "-o", binary,
            Path.Combine(BpfTestSupport.RepoRoot, "tests", "Backends.Ebpf.Tests", program + ".c"));
        Assert.True(compile.ExitCode == 0, compile.Error);
        return binary;
    }

    /// <summary>A UDP server in the namespace that answers every datagram with its name.</summary>
    private void StartUdpServer(string address, string name)
    {
        var socket = Track(_namespace.Run(() =>
        {
            var server = new Socket(IPAddress.Parse(address).AddressFamily, SocketType.Dgram, ProtocolType.Udp);
            server.Bind(new IPEndPoint(IPAddress.Parse(address), UdpBackendPort));
            return server;
        }));
        var reply = Encoding.ASCII.GetBytes(name);
        var any = new IPEndPoint(socket.AddressFamily == AddressFamily.InterNetworkV6 ? IPAddress.IPv6Any : IPAddress.Any, 0);
        _ = Task.Run(async () =>
        {
            var buffer = new byte[512];
            while (!_stop.IsCancellationRequested)
            {
                try
                {
                    var received = await socket.ReceiveFromAsync(buffer, any, _stop.Token);
                    await socket.SendToAsync(reply, received.RemoteEndPoint, _stop.Token);
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException)
                {
                    if (_stop.IsCancellationRequested) return;
                }
            }
        });
    }

    /// <summary>A TCP server in the namespace that answers every line of a connection with its name, until the client closes.</summary>
    private void StartTcpServer(string address, string name)
    {
        var listener = _namespace.Run(() =>
        {
            var server = new TcpListener(IPAddress.Parse(address), TcpBackendPort);
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
                    var client = await listener.AcceptTcpClientAsync(_stop.Token);
                    _ = Task.Run(async () =>
                    {
                        using (client)
                        {
                            using var reader = new StreamReader(client.GetStream());
                            while (await reader.ReadLineAsync(_stop.Token) is not null) await client.GetStream().WriteAsync(reply, _stop.Token);
                        }
                    });
                }
                catch (Exception e) when (e is OperationCanceledException or SocketException or ObjectDisposedException or IOException)
                {
                    if (_stop.IsCancellationRequested) return;
                }
            }
        });
    }

    public void Dispose()
    {
        _stop.Cancel();
        _cleanup.Dispose();
        _stop.Dispose();
    }

    private T Track<T>(T resource)
        where T : IDisposable => _cleanup.Track(resource);

    /// <summary>Maps in memory whose socket destroy pass the kernel refuses (EPERM).</summary>
    private sealed class RefusingMaps : IEbpfMaps
    {
        private EbpfMapContents _contents = EbpfMapContents.Empty;

        public int Passes { get; private set; }

        public int Writes { get; private set; }

        public EbpfMapContents Read() => _contents;

        public void Write(MapWrite write)
        {
            Writes++;
            _contents = EbpfPlannerTests.Apply(_contents, [write]);
        }

        public bool Intact() => true;

        /// <summary>As <see cref="EbpfKernel"/>: a pass only when a deletion concerns sockets (the first sync's "newly active" ones do not).</summary>
        public int DestroySockets(IReadOnlyList<ConntrackDeletion> deletions, IReadOnlyList<ServiceKey>? reopened = null)
        {
            if (!deletions.Any(d => SocketDestroyer.KeyFor(d) is not null)) return 0;
            Passes++;
            throw new BpfException(1, "bpf(BPF_ITER_CREATE) on iterator pp_sock_destroy_udp");
        }
    }

    private sealed class Disposer(Action action) : IDisposable
    {
        public void Dispose() => action();
    }
}
