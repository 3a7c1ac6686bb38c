using System.Buffers.Binary;
using System.Net;
using static ProxyPlanes.Netlink.LinuxUapi.Netlink;
using static ProxyPlanes.Netlink.LinuxUapi.SockDiag;
using Errno = ProxyPlanes.Netlink.LinuxUapi.Errno;
using Sock = ProxyPlanes.Netlink.LinuxUapi.Socket;

namespace ProxyPlanes.Netlink;

/// <summary>
/// struct inet_diag_sockid: a socket's 4-tuple, the interface it is bound to (0: none) and its cookie (the number
/// <c>bpf_get_socket_cookie</c> gives for it). Ports in host order here (network order on the wire).
/// </summary>
public readonly record struct InetDiagSocketId(IPAddress Source, int SourcePort, IPAddress Destination, int DestinationPort, uint Interface, ulong Cookie)
{
    public override string ToString() => $"{Source}:{SourcePort} -> {Destination}:{DestinationPort} cookie {Cookie}";
}

/// <summary>One socket of a SOCK_DIAG_BY_FAMILY dump (struct inet_diag_msg): its family, protocol, state and identity.</summary>
public sealed record InetDiagSocket(int Family, int Protocol, int State, InetDiagSocketId Id, uint Inode)
{
    public override string ToString() => $"{NetlinkErrors.ProtocolText(Protocol)} {Id}";
}

/// <summary>
/// sock_diag (NETLINK_SOCK_DIAG) for TCP and UDP sockets, in the network namespace the socket was opened in:
/// <see cref="List"/> dumps the sockets of a family and protocol in some states (SOCK_DIAG_BY_FAMILY with
/// struct inet_diag_req_v2), <see cref="Destroy"/> aborts one by its whole identity, cookie included (SOCK_DESTROY:
/// kernel ≥ 4.9 with CONFIG_INET_DIAG_DESTROY, CAP_NET_ADMIN; TCP gets a reset-less abort, UDP ECONNABORTED on its
/// next call). The kernel loads inet_diag, tcp_diag and udp_diag on the first request when they are modules.
/// </summary>
public sealed class SockDiag : IDisposable
{
    private readonly NetlinkSocket _socket;

    public SockDiag(NetlinkSocket socket)
    {
        if (socket.Protocol != NETLINK_SOCK_DIAG) throw new ArgumentException("a NETLINK_SOCK_DIAG socket is needed", nameof(socket));
        _socket = socket;
    }

    /// <summary>Opens a sock_diag socket in the calling thread's network namespace.</summary>
    public static SockDiag Open() => new(NetlinkSocket.Open(NETLINK_SOCK_DIAG));

    /// <summary>The idiag_states bit of each of <paramref name="states"/> (TCP_ESTABLISHED, TCP_SYN_SENT, ...).</summary>
    public static uint StateMask(params ReadOnlySpan<int> states)
    {
        var mask = 0u;
        foreach (var state in states) mask |= 1u << state;
        return mask;
    }

    /// <summary>
    /// The sockets of <paramref name="family"/> (AF_INET, AF_INET6) and <paramref name="protocol"/> (IPPROTO_TCP,
    /// IPPROTO_UDP) whose state is in <paramref name="states"/> (<see cref="StateMask"/>; a connected UDP socket is
    /// TCP_ESTABLISHED). A kernel without that protocol's diag module says ENOENT.
    /// </summary>
    public List<InetDiagSocket> List(int family, int protocol, uint states) =>
        _socket.Dump<InetDiagSocket>(
            new NetlinkRequest(SOCK_DIAG_BY_FAMILY, 0, (ref NetlinkWriter w) => WriteRequest(ref w, family, protocol, states, null),
                $"sock_diag SOCK_DIAG_BY_FAMILY {FamilyText(family)} {NetlinkErrors.ProtocolText(protocol)} states 0x{states:x}")
            {
                Hint = $"the kernel has no socket diagnostics for {NetlinkErrors.ProtocolText(protocol)} (CONFIG_INET_DIAG and that protocol's diag module)",
                HintErrno = Errno.ENOENT,
            },
            m => Parse(m, protocol));

    /// <summary>
    /// Aborts <paramref name="socket"/> (SOCK_DESTROY with its whole sockid, cookie included, so another socket that took
    /// the same 4-tuple meanwhile is not hit). False when it is gone (ENOENT) or the 4-tuple is another socket's now
    /// (ESTALE); a refusal (EOPNOTSUPP: no CONFIG_INET_DIAG_DESTROY; EPERM: no CAP_NET_ADMIN) throws one line.
    /// </summary>
    public bool Destroy(InetDiagSocket socket)
    {
        ArgumentNullException.ThrowIfNull(socket);
        try
        {
            _socket.Execute(DestroyRequest(socket.Family, socket.Protocol, socket.Id, $"sock_diag SOCK_DESTROY {socket}"));
            return true;
        }
        catch (NetlinkException e) when (e.Errno is Errno.ENOENT or Errno.ESTALE)
        {
            return false;
        }
    }

    /// <summary>
    /// Whether this kernel can destroy <paramref name="protocol"/> sockets: a dump that matches no state (the diag module
    /// is there: a missing one says ENOENT), then a SOCK_DESTROY of an identity no socket has (all zeros, cookie 0: no
    /// socket is bound to port 0 and none has cookie 0), which a kernel that destroys answers ENOENT and one without
    /// CONFIG_INET_DIAG_DESTROY EOPNOTSUPP. Throws the refusal as one line; nothing is destroyed.
    /// </summary>
    public void ProbeDestroy(int protocol)
    {
        List(Sock.AF_INET, protocol, 0);
        var nobody = new InetDiagSocketId(IPAddress.Any, 0, IPAddress.Any, 0, 0, 0);
        try
        {
            _socket.Execute(DestroyRequest(Sock.AF_INET, protocol, nobody, $"sock_diag SOCK_DESTROY {NetlinkErrors.ProtocolText(protocol)} (probe)"));
        }
        catch (NetlinkException e) when (e.Errno == Errno.ENOENT)
        {
            return; // looked up and not found: destroy is built in
        }
        throw new NetlinkException(Errno.EINVAL, $"sock_diag SOCK_DESTROY {NetlinkErrors.ProtocolText(protocol)} (probe)", "a socket that cannot exist was destroyed");
    }

    private static NetlinkRequest DestroyRequest(int family, int protocol, InetDiagSocketId id, string operation) =>
        new(SOCK_DESTROY, 0, (ref NetlinkWriter w) => WriteRequest(ref w, family, protocol, 0, id), operation)
        {
            Hint = "the kernel was built without CONFIG_INET_DIAG_DESTROY",
            HintErrno = Errno.EOPNOTSUPP,
        };

    /// <summary>
    /// struct inet_diag_req_v2 (no attributes): family, protocol, no extensions, <paramref name="states"/>, and
    /// <paramref name="id"/> (all zeros for a dump; ports and addresses in network order, an IPv4 address in the first 4
    /// bytes of its 16, the cookie as two host-order halves, low first).
    /// </summary>
    internal static void WriteRequest(ref NetlinkWriter writer, int family, int protocol, uint states, InetDiagSocketId? id)
    {
        Span<byte> request = stackalloc byte[INET_DIAG_REQ_V2_LEN];
        request.Clear();
        request[0] = checked((byte)family);
        request[1] = checked((byte)protocol);
        BitConverter.TryWriteBytes(request[4..], states);
        if (id is { } sockid) WriteSocketId(request[8..], sockid);
        writer.WriteBytes(request);
    }

    private static void WriteSocketId(Span<byte> target, InetDiagSocketId id)
    {
        BinaryPrimitives.WriteUInt16BigEndian(target, checked((ushort)id.SourcePort));
        BinaryPrimitives.WriteUInt16BigEndian(target[2..], checked((ushort)id.DestinationPort));
        if (!id.Source.TryWriteBytes(target[4..20], out _) || !id.Destination.TryWriteBytes(target[20..36], out _))
            throw new ArgumentException($"cannot encode {id}", nameof(id));
        BitConverter.TryWriteBytes(target[36..], id.Interface);
        BitConverter.TryWriteBytes(target[40..], (uint)id.Cookie);
        BitConverter.TryWriteBytes(target[44..], (uint)(id.Cookie >> 32));
    }

    /// <summary>struct inet_diag_msg (attributes after it are not read).</summary>
    internal static InetDiagSocket Parse(NetlinkMessage message, int protocol)
    {
        var payload = message.Payload;
        if (payload.Length < INET_DIAG_MSG_LEN)
            throw new NetlinkProtocolException($"sock_diag message of {payload.Length} bytes, too few for struct inet_diag_msg ({INET_DIAG_MSG_LEN})");
        var family = payload[0];
        var length = family == Sock.AF_INET6 ? 16 : family == Sock.AF_INET ? 4
            : throw new NetlinkProtocolException($"sock_diag message of address family {family}");
        var id = payload[4..];
        var cookie = BitConverter.ToUInt32(id[40..]) | ((ulong)BitConverter.ToUInt32(id[44..]) << 32);
        return new InetDiagSocket(family, protocol, payload[1],
            new InetDiagSocketId(new IPAddress(id[4..(4 + length)]), BinaryPrimitives.ReadUInt16BigEndian(id),
                new IPAddress(id[20..(20 + length)]), BinaryPrimitives.ReadUInt16BigEndian(id[2..]), BitConverter.ToUInt32(id[36..]), cookie),
            BitConverter.ToUInt32(payload[68..]));
    }

    private static string FamilyText(int family) => family switch
    {
        Sock.AF_INET => "inet",
        Sock.AF_INET6 => "inet6",
        _ => $"family {family}",
    };

    public void Dispose() => _socket.Dispose();
}
