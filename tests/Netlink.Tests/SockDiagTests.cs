using System.Net;
using System.Net.Sockets;
using Sock = ProxyPlanes.Netlink.LinuxUapi.Socket;
using Diag = ProxyPlanes.Netlink.LinuxUapi.SockDiag;
using Nl = ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// sock_diag messages against byte vectors made by hand from struct inet_diag_req_v2 / inet_diag_msg (network-order
/// ports and addresses, the cookie as two host-order halves), and the client against the kernel in a namespace the
/// test makes: a connected UDP socket listed with its cookie and destroyed (its next receive fails with ECONNABORTED),
/// a wrong cookie refused, the control socket untouched.
/// </summary>
[Collection(KernelNetlinkCollection.Name)]
public sealed class SockDiagTests
{
    private static byte[] Write(ushort type, ushort flags, NetlinkRequestWriter write)
    {
        var buffer = new byte[4096];
        var writer = new NetlinkWriter(buffer);
        var start = writer.BeginMessage(type, flags, 7);
        write(ref writer);
        writer.EndMessage(start);
        return writer.Written.ToArray();
    }

    [Fact]
    public void WriteRequest_DumpOfConnectedUdp6_MatchesVector()
    {
        var bytes = Write(Diag.SOCK_DIAG_BY_FAMILY, (ushort)(Nl.NLM_F_REQUEST | Nl.NLM_F_DUMP),
            (ref NetlinkWriter w) => ProxyPlanes.Netlink.SockDiag.WriteRequest(ref w, Sock.AF_INET6, Sock.IPPROTO_UDP, ProxyPlanes.Netlink.SockDiag.StateMask(Diag.TCP_ESTABLISHED), null));

        Assert.Equal(Hex.Parse("""
            48 00 00 00  14 00  01 03  07 00 00 00  00 00 00 00
            0a 11 00 00  02 00 00 00
            00 00 00 00
            00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
            00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
            00 00 00 00  00 00 00 00 00 00 00 00
            """), bytes);
    }

    [Fact]
    public void WriteRequest_DestroyOfOneUdp4Socket_MatchesVector()
    {
        var id = new InetDiagSocketId(IPAddress.Parse("10.0.0.1"), 40000, IPAddress.Parse("10.96.0.53"), 53, 3, 0x1122334455667788);
        var bytes = Write(Diag.SOCK_DESTROY, (ushort)(Nl.NLM_F_REQUEST | Nl.NLM_F_ACK),
            (ref NetlinkWriter w) => ProxyPlanes.Netlink.SockDiag.WriteRequest(ref w, Sock.AF_INET, Sock.IPPROTO_UDP, 0, id));

        Assert.Equal(Hex.Parse("""
            48 00 00 00  15 00  05 00  07 00 00 00  00 00 00 00
            02 11 00 00  00 00 00 00
            9c 40  00 35
            0a 00 00 01  00 00 00 00 00 00 00 00 00 00 00 00
            0a 60 00 35  00 00 00 00 00 00 00 00 00 00 00 00
            03 00 00 00  88 77 66 55  44 33 22 11
            """), bytes);
    }

    [Fact]
    public void Parse_InetDiagMsg_Tcp6SynSent_ReadsIdentityAndCookie()
    {
        var message = Hex.Parse("""
            60 00 00 00  14 00  02 00  07 00 00 00  00 00 00 00
            0a 02 01 00
            d4 31  00 50
            fd 00 00 10 02 44 00 00 00 00 00 00 00 00 00 02
            fd 00 00 10 00 96 00 00 00 00 00 00 00 00 00 80
            00 00 00 00  02 00 00 00  01 00 00 00
            00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  39 30 00 00
            08 00 0f 00  00 00 00 00
            """);
        InetDiagSocket? parsed = null;
        foreach (var m in new NetlinkMessageReader(message)) parsed = ProxyPlanes.Netlink.SockDiag.Parse(m, Sock.IPPROTO_TCP);

        Assert.Equal(new InetDiagSocket(Sock.AF_INET6, Sock.IPPROTO_TCP, Diag.TCP_SYN_SENT,
            new InetDiagSocketId(IPAddress.Parse("fd00:10:244::2"), 54321, IPAddress.Parse("fd00:10:96::80"), 80, 0, 0x0000000100000002), 12345), parsed);
    }

    [Fact]
    public void Parse_ShortOrForeignFamily_OneClearLine()
    {
        var shortMessage = Hex.Parse("14 00 00 00  14 00  02 00  07 00 00 00  00 00 00 00  02 01 00 00");
        var e = Assert.Throws<NetlinkProtocolException>(() =>
        {
            foreach (var m in new NetlinkMessageReader(shortMessage)) ProxyPlanes.Netlink.SockDiag.Parse(m, Sock.IPPROTO_UDP);
        });
        Assert.Equal("sock_diag message of 4 bytes, too few for struct inet_diag_msg (72)", e.Message);

        var unix = new byte[Nl.NLMSG_HDRLEN + Diag.INET_DIAG_MSG_LEN];
        BitConverter.TryWriteBytes(unix, (uint)unix.Length);
        unix[Nl.NLMSG_HDRLEN] = 1; // AF_UNIX
        var foreign = Assert.Throws<NetlinkProtocolException>(() =>
        {
            foreach (var m in new NetlinkMessageReader(unix)) ProxyPlanes.Netlink.SockDiag.Parse(m, Sock.IPPROTO_UDP);
        });
        Assert.Equal("sock_diag message of address family 1", foreign.Message);
    }

    /// <summary>
    /// Two UDP sockets connected to a server on loopback, in a namespace the test makes: both listed (state ESTABLISHED,
    /// their own ports, a cookie); a destroy with the first's 4-tuple but the second's cookie is refused (false, nothing
    /// hit), the probe destroys nothing; the first destroyed by its identity reads ECONNABORTED at once, the second
    /// (the control) still talks to the server.
    /// </summary>
    [Fact]
    public async Task Destroy_ConnectedUdpSocket_ReadsConnectionAborted_ControlAndWrongCookieKept()
    {
        using var ns = new TestNamespace("diag");
        await ns.ExecAsync("ip", "link", "set", "lo", "up");
        var server = new IPEndPoint(IPAddress.Loopback, 5353);
        using var listener = ns.Run(() => Bound(server.Address, server.Port));
        using var victim = ns.Run(() => Connected(server));
        using var control = ns.Run(() => Connected(server));
        using var diag = ns.Run(ProxyPlanes.Netlink.SockDiag.Open);

        diag.ProbeDestroy(Sock.IPPROTO_UDP);
        diag.ProbeDestroy(Sock.IPPROTO_TCP);
        var sockets = diag.List(Sock.AF_INET, Sock.IPPROTO_UDP, ProxyPlanes.Netlink.SockDiag.StateMask(Diag.TCP_ESTABLISHED));
        var victimEntry = Assert.Single(sockets, s => s.Id.SourcePort == ((IPEndPoint)victim.LocalEndPoint!).Port);
        var controlEntry = Assert.Single(sockets, s => s.Id.SourcePort == ((IPEndPoint)control.LocalEndPoint!).Port);
        Assert.DoesNotContain(sockets, s => s.Id.SourcePort == server.Port); // the server is not connected
        Assert.Equal(server, new IPEndPoint(victimEntry.Id.Destination, victimEntry.Id.DestinationPort));
        Assert.Equal(Diag.TCP_ESTABLISHED, victimEntry.State);
        Assert.NotEqual(victimEntry.Id.Cookie, controlEntry.Id.Cookie);

        Assert.False(diag.Destroy(victimEntry with { Id = victimEntry.Id with { Cookie = controlEntry.Id.Cookie } }));
        Assert.Equal("pong", RoundTrip(victim, listener));

        Assert.True(diag.Destroy(victimEntry));
        var aborted = Assert.Throws<SocketException>(() => victim.Receive(new byte[16]));
        Assert.Equal(SocketError.ConnectionAborted, aborted.SocketErrorCode);
        Assert.Equal("pong", RoundTrip(control, listener));
    }

    /// <summary>A socket that is not there: Destroy says false (ENOENT), no exception; a dump of a protocol the kernel has no diag module for: one line naming the request.</summary>
    [Fact]
    public void Destroy_GoneSocket_False_ListOfAnUnknownProtocol_OneLine()
    {
        using var ns = new TestNamespace("diag");
        using var diag = ns.Run(ProxyPlanes.Netlink.SockDiag.Open);
        var nobody = new InetDiagSocket(Sock.AF_INET, Sock.IPPROTO_UDP, Diag.TCP_ESTABLISHED,
            new InetDiagSocketId(IPAddress.Loopback, 1, IPAddress.Loopback, 2, 0, 42), 0);
        Assert.False(diag.Destroy(nobody));

        var e = Assert.Throws<NetlinkException>(() => diag.List(Sock.AF_INET, 200, 0));
        Assert.StartsWith("sock_diag SOCK_DIAG_BY_FAMILY inet protocol 200 states 0x0: ", e.Message, StringComparison.Ordinal);
        Assert.DoesNotContain('\n', e.Message);
    }

    private static Socket Bound(IPAddress address, int port)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 };
        socket.Bind(new IPEndPoint(address, port));
        return socket;
    }

    private static Socket Connected(IPEndPoint server)
    {
        var socket = new Socket(AddressFamily.InterNetwork, SocketType.Dgram, ProtocolType.Udp) { ReceiveTimeout = 5000 };
        socket.Connect(server);
        return socket;
    }

    /// <summary>Sends "ping" from <paramref name="client"/>; the server answers "pong" to its address; returns what the client read.</summary>
    private static string RoundTrip(Socket client, Socket server)
    {
        client.Send("ping"u8);
        var buffer = new byte[16];
        EndPoint from = new IPEndPoint(IPAddress.Any, 0);
        var received = server.ReceiveFrom(buffer, ref from);
        Assert.Equal("ping", System.Text.Encoding.ASCII.GetString(buffer, 0, received));
        server.SendTo("pong"u8, from);
        return System.Text.Encoding.ASCII.GetString(buffer, 0, client.Receive(buffer));
    }
}
