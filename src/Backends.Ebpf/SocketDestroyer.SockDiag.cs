using System.Net.Sockets;
using ProxyPlanes.Netlink;
using DiagState = ProxyPlanes.Netlink.LinuxUapi.SockDiag;
using Sock = ProxyPlanes.Netlink.LinuxUapi.Socket;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The fallback for kernels without the <c>bpf_sock_destroy</c> kfunc (before 6.5; Debian's 6.1), as Cilium has it:
/// <c>SOCK_DESTROY</c> over NETLINK_SOCK_DIAG (kernel ≥ 4.9 with CONFIG_INET_DIAG_DESTROY). Per network namespace
/// it dumps the connected UDP sockets (state ESTABLISHED) and, when a frontend that left Drop is TCP, the TCP sockets
/// in SYN_SENT of each family, and makes for each the very test bpf/sockdestroy.c makes: a UDP socket connected to a
/// frontend out of Drop (or a node address with that port's node-port frontend out of Drop), or whose reverse entry
/// {cookie, backend, port} (pp_revnat4_v1 / pp_revnat6_v1, read here) names a {frontend, backend} of the deletions,
/// exactly or by a wildcard; a TCP socket in SYN_SENT to a frontend out of Drop. Each selected socket is destroyed
/// by its whole sockid, cookie included (the cookie <c>bpf_get_socket_cookie</c> gave the hooks), so a socket that
/// took the same 4-tuple since the dump is not hit. The application sees what the kfunc gives it: ECONNABORTED.
/// </summary>
public sealed partial class SocketDestroyer
{
    private readonly SockDiagMaps? _diagMaps;

    private SocketDestroyer(SockDiagMaps maps) => _diagMaps = maps;

    /// <summary>This destroyer uses sock_diag SOCK_DESTROY (<see cref="LoadSockDiag"/>), not the iterator programs.</summary>
    public bool UsesSockDiag => _diagMaps is not null;

    /// <summary>
    /// The sock_diag fallback over the socket hooks' maps (<paramref name="sockMaps"/>: sock.o's, of which it reads the
    /// reverse maps and the node addresses), after probing, in the calling thread's network namespace, that the kernel
    /// can destroy UDP and TCP sockets (<see cref="SockDiag.ProbeDestroy"/>; nothing is destroyed). Throws the refusal
    /// as a <see cref="NetlinkException"/>.
    /// </summary>
    public static SocketDestroyer LoadSockDiag(IEnumerable<BpfMap> sockMaps)
    {
        ArgumentNullException.ThrowIfNull(sockMaps);
        var maps = sockMaps.ToList();
        BpfMap Find(string name) => maps.FirstOrDefault(m => m.Name == name) ?? throw new ArgumentException($"the socket hooks' maps have no {name}", nameof(sockMaps));
        var diagMaps = new SockDiagMaps(Find(MapLayout.UdpReverseNatMap), Find(MapLayout.UdpReverseNat6Map), Find(MapLayout.NodeAddressesMap), Find(MapLayout.NodeAddresses6Map));
        using (var diag = SockDiag.Open())
        {
            diag.ProbeDestroy(Sock.IPPROTO_UDP);
            diag.ProbeDestroy(Sock.IPPROTO_TCP);
        }
        return new SocketDestroyer(diagMaps);
    }

    /// <summary>One sock_diag pass over the calling thread's network namespace; returns how many sockets it destroyed.</summary>
    private int DestroyHereBySockDiag(IReadOnlyCollection<SockDeleteKey> keys, IReadOnlyCollection<ServiceKey> frontends, bool udp, bool tcp)
    {
        var maps = _diagMaps!;
        var deletions = keys.ToHashSet();
        var reopened = frontends.ToHashSet();
        using var diag = SockDiag.Open();
        var destroyed = 0;
        foreach (var family in (ReadOnlySpan<int>)[Sock.AF_INET, Sock.AF_INET6])
        {
            if (udp)
            {
                foreach (var socket in diag.List(family, Sock.IPPROTO_UDP, SockDiag.StateMask(DiagState.TCP_ESTABLISHED)))
                    if (SelectsUdp(socket, deletions, reopened, maps) && diag.Destroy(socket)) destroyed++;
            }
            if (tcp)
            {
                foreach (var socket in diag.List(family, Sock.IPPROTO_TCP, SockDiag.StateMask(DiagState.TCP_SYN_SENT)))
                    if (socket.State == DiagState.TCP_SYN_SENT && LeftOnReopened(socket, ProtocolType.Tcp, reopened, maps) && diag.Destroy(socket)) destroyed++;
            }
        }
        return destroyed;
    }

    /// <summary>
    /// What bpf/sockdestroy.c's <c>iter/udp</c> program decides for a UDP socket: connected, and either left on a frontend
    /// out of Drop or connected through the hooks (its reverse entry) to a {frontend, backend} a deletion names.
    /// </summary>
    internal static bool SelectsUdp(InetDiagSocket socket, IReadOnlySet<SockDeleteKey> deletions, IReadOnlySet<ServiceKey> reopened, ISockDiagLookups maps)
    {
        ArgumentNullException.ThrowIfNull(socket);
        if (socket.Id.DestinationPort == 0 || socket.State != DiagState.TCP_ESTABLISHED) return false; // not connected
        if (LeftOnReopened(socket, ProtocolType.Udp, reopened, maps)) return true;
        if (deletions.Count == 0) return false;
        var backend = MapAddress.For(socket.Id.Destination);
        var backendPort = MapLayout.NetworkPort(socket.Id.DestinationPort);
        if (maps.ReverseEntry(socket.Family, socket.Id.Cookie, backend, backendPort) is not { } frontend) return false; // not through a frontend
        return Deleted(new SockDeleteKey { Frontend = frontend.Address, FrontendPort = frontend.Port, Backend = backend, BackendPort = backendPort }, deletions);
    }

    /// <summary>
    /// A socket whose destination is a frontend out of Drop (the master key connect4/6 looked up), or a node address with
    /// that family's node-port frontend of the port out of Drop.
    /// </summary>
    internal static bool LeftOnReopened(InetDiagSocket socket, ProtocolType protocol, IReadOnlySet<ServiceKey> reopened, ISockDiagLookups maps)
    {
        ArgumentNullException.ThrowIfNull(socket);
        if (reopened.Count == 0) return false;
        var destination = MapAddress.For(socket.Id.Destination);
        var key = new ServiceKey { Address = destination, Port = MapLayout.NetworkPort(socket.Id.DestinationPort), Proto = (byte)protocol, Scope = MapLayout.ScopeInternal };
        if (reopened.Contains(key)) return true;
        if (!maps.IsNodeAddress(destination)) return false;
        key.Address = MapAddress.Unspecified(destination.IsIPv4 ? AddressFamily.InterNetwork : AddressFamily.InterNetworkV6);
        return reopened.Contains(key);
    }

    /// <summary>pp_deleted's test: the pair exactly, or a wildcard backend (a frontend gone), a wildcard frontend address (a node port), or both.</summary>
    internal static bool Deleted(SockDeleteKey key, IReadOnlySet<SockDeleteKey> deletions) =>
        deletions.Contains(key) ||
        deletions.Contains(key with { Backend = default, BackendPort = 0 }) ||
        deletions.Contains(key with { Frontend = default, Backend = default, BackendPort = 0 }) ||
        deletions.Contains(key with { Frontend = default });

    /// <summary>The socket hooks' maps the fallback reads: reverse entries and node addresses.</summary>
    internal interface ISockDiagLookups
    {
        /// <summary>The frontend (address, network-order port) the hooks connected the socket through to this backend, or null.</summary>
        (MapAddress Address, ushort Port)? ReverseEntry(int family, ulong cookie, MapAddress backend, ushort backendPort);

        /// <summary>Whether the address is in pp_nodeip4_v1 (IPv4, mapped) or pp_nodeip6_v1.</summary>
        bool IsNodeAddress(MapAddress address);
    }

    private sealed record SockDiagMaps(BpfMap ReverseNat4, BpfMap ReverseNat6, BpfMap NodeAddresses4, BpfMap NodeAddresses6) : ISockDiagLookups
    {
        public (MapAddress Address, ushort Port)? ReverseEntry(int family, ulong cookie, MapAddress backend, ushort backendPort)
        {
            if (family == Sock.AF_INET)
                return ReverseNat4.TryLookup(new RevNat4Key { Cookie = cookie, Address = backend.Word3, Port = backendPort }, out RevNat4Value vip)
                    ? (MapAddress.Mapped(vip.Address), vip.Port)
                    : null;
            return ReverseNat6.TryLookup(new RevNat6Key { Cookie = cookie, Address = backend, Port = backendPort }, out RevNat6Value vip6)
                ? (vip6.Address, vip6.Port)
                : null;
        }

        public bool IsNodeAddress(MapAddress address) => address.IsIPv4
            ? NodeAddresses4.TryLookup(address.Word3, out NodeAddress _)
            : NodeAddresses6.TryLookup(address, out NodeAddress _);
    }
}
