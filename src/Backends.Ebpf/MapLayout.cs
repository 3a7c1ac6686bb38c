using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Runtime.InteropServices;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The C# side of bpf/proxyplanes.h: map names and [StructLayout(Sequential)] mirrors of its structs,
/// field for field (PascalCase here is snake_case there). tests/Backends.Ebpf.Tests compiles the
/// header and checks every size and offset against these. Addresses and ports are stored in network
/// byte order, as the programs compare them with the socket's.
/// </summary>
public static class MapLayout
{
    /// <summary>PP_LAYOUT_VERSION: a map name ends in the layout version in which its key or value last changed.</summary>
    public const int Version = 2;

    public const string ServicesMap = "pp_services_v2";
    public const string BackendsMap = "pp_backends_v2";
    public const string AffinityMap = "pp_affinity_v1";
    public const string UdpReverseNatMap = "pp_revnat4_v1";
    public const string UdpReverseNat6Map = "pp_revnat6_v1";

    public const string NodeAddressesMap = "pp_nodeip4_v1";
    public const string ConnectionsMap = "pp_ct4_v1";
    public const string SourceRangesMap = "pp_srcrange_v1";
    public const string NodeAddresses6Map = "pp_nodeip6_v1";
    public const string Connections6Map = "pp_ct6_v1";
    public const string LocalSourcesMap = "pp_localsrc4_v1";
    public const string SourceRanges6Map = "pp_srcrange6_v1";
    public const string LocalSources6Map = "pp_localsrc6_v1";
    public const string SockDeletionsMap = "pp_sockdel_v1";
    public const string SockReopenedMap = "pp_sockvip_v1";
    public const string ConfigMap = "pp_config_v1";

    /// <summary>PP_LOCAL_SOURCE_MASQUERADE: a local source is masqueraded too (--masquerade-all).</summary>
    public const uint LocalSourceMasquerade = 0x0001;

    /// <summary>PP_MARK_MASQUERADE: the skb mark tc ingress sets on a flow to masquerade (<see cref="EbpfNftables"/>).</summary>
    public const uint MarkMasquerade = 0x00100000;

    /// <summary>PP_MARK_REJECT: the skb mark tc ingress sets on a packet to a frontend without endpoints (<see cref="EbpfNftables"/>).</summary>
    public const uint MarkReject = 0x00200000;

    /// <summary>PP_AFFINITY_CLIENT_ADDRESS: set in <see cref="AffinityKey.Client"/> when the client is an IPv4 address (tc), not a netns cookie.</summary>
    public const ulong AffinityClientAddress = 0x8000000000000000UL;

    /// <summary>PP_CT_FORWARD: a connection entry for client → frontend packets; the value is the backend.</summary>
    public const byte ConnectionForward = 0;

    /// <summary>PP_CT_REPLY: a connection entry for backend → client packets; the value is the frontend.</summary>
    public const byte ConnectionReply = 1;

    /// <summary>PP_SVC_FLAG_AFFINITY: ClientIP session affinity on a master entry.</summary>
    public const ushort ServiceFlagAffinity = 0x0001;

    /// <summary>PP_SVC_FLAG_NODEPORT: a node port (key address 0), matched on the node's addresses by the tc programs.</summary>
    public const ushort ServiceFlagNodePort = 0x0002;

    /// <summary>PP_SVC_FLAG_EXTERNAL: an external or load-balancer IP.</summary>
    public const ushort ServiceFlagExternal = 0x0004;

    /// <summary>PP_SVC_FLAG_SOURCE_RANGES: loadBalancerSourceRanges apply; a client outside them is dropped.</summary>
    public const ushort ServiceFlagSourceRanges = 0x0008;

    /// <summary>PP_SVC_FLAG_DROP: a master entry with count 0 drops silently (Core's Drop verdict) instead of refusing.</summary>
    public const ushort ServiceFlagDrop = 0x0010;

    /// <summary>PP_SVC_FLAG_MASQUERADE: external clients of this frontend are masqueraded.</summary>
    public const ushort ServiceFlagMasquerade = 0x0020;

    /// <summary>
    /// PP_SVC_FLAG_SOURCE_RANGES_NODE: with <see cref="ServiceFlagSourceRanges"/>, a range holds a node IP (Core's
    /// <c>SourceRangesAllowNode</c>), so a local socket whose source is a node address passes (pp_egress).
    /// </summary>
    public const ushort ServiceFlagSourceRangesNode = 0x0040;

    /// <summary>
    /// PP_SVC_FLAG_MASQUERADE_LOCAL: with <see cref="ServiceFlagMasquerade"/> on a cluster IP, local clients (pods) are
    /// masqueraded too (Core's <c>SourceMasquerade.AllSources</c>, --masquerade-all): the socket hooks leave a pod's socket to tc.
    /// </summary>
    public const ushort ServiceFlagMasqueradeLocal = 0x0080;

    /// <summary>PP_SCOPE_INTERNAL: the pool for cluster-internal traffic (and for all traffic when the pools agree).</summary>
    public const byte ScopeInternal = 0;

    /// <summary>PP_SCOPE_EXTERNAL: the pool for external traffic, present only when it differs from the internal one.</summary>
    public const byte ScopeExternal = 1;

    /// <summary>An IPv4 address as the 32-bit value whose bytes in memory are the address in network order.</summary>
    public static uint NetworkAddress(IPAddress address)
    {
        if (address.AddressFamily != AddressFamily.InterNetwork) throw new ArgumentException($"{address} is not IPv4 (this map holds IPv4 only)", nameof(address));
        Span<byte> bytes = stackalloc byte[4];
        address.TryWriteBytes(bytes, out _);
        return MemoryMarshal.Read<uint>(bytes);
    }

    /// <summary>A port as the 16-bit value whose bytes in memory are the port in network order.</summary>
    public static ushort NetworkPort(int port) =>
        BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(checked((ushort)port)) : checked((ushort)port);

    public static IPAddress HostAddress(uint networkAddress)
    {
        Span<byte> bytes = stackalloc byte[4];
        MemoryMarshal.Write(bytes, in networkAddress);
        return new IPAddress(bytes);
    }

    public static int HostPort(ushort networkPort) => BitConverter.IsLittleEndian ? BinaryPrimitives.ReverseEndianness(networkPort) : networkPort;
}

/// <summary>Names the C struct in bpf/proxyplanes.h that a type mirrors.</summary>
[AttributeUsage(AttributeTargets.Struct)]
public sealed class CStructAttribute(string name) : Attribute
{
    public string Name { get; } = name;
}

/// <summary>
/// <c>__u32 address[4]</c> of pp_service_key, pp_backend and pp_revnat6_*: an IPv6 address, or an IPv4
/// address mapped (::ffff:a.b.c.d), in network order. A node port's key holds its family's
/// unspecified address (<c>::</c>, <c>::ffff:0.0.0.0</c>).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public record struct MapAddress
{
    public uint Word0;
    public uint Word1;
    public uint Word2;
    public uint Word3;

    public static MapAddress For(IPAddress address)
    {
        ArgumentNullException.ThrowIfNull(address);
        Span<byte> bytes = stackalloc byte[16];
        bytes.Clear();
        if (address.AddressFamily == AddressFamily.InterNetwork)
        {
            // ::ffff:a.b.c.d, as MapToIPv6 writes it, without a new IPAddress per call (a cold sync maps 100,000 endpoints).
            bytes[10] = 0xff;
            bytes[11] = 0xff;
            address.TryWriteBytes(bytes[12..], out _);
        }
        else address.TryWriteBytes(bytes, out _);
        return MemoryMarshal.Read<MapAddress>(bytes);
    }

    /// <summary>An IPv4 address (network order, as pp_ct4_v1 holds it) mapped: ::ffff:a.b.c.d.</summary>
    public static MapAddress Mapped(uint networkAddress) => new() { Word2 = MappedWord2, Word3 = networkAddress };

    /// <summary>The unspecified address of a family, a node port's key address.</summary>
    public static MapAddress Unspecified(AddressFamily family) => For(family == AddressFamily.InterNetwork ? IPAddress.Any : IPAddress.IPv6Any);

    /// <summary>An IPv4 address held mapped (::ffff:a.b.c.d).</summary>
    public readonly bool IsIPv4 => Word0 == 0 && Word1 == 0 && Word2 == MappedWord2;

    /// <summary>0.0.0.0 or :: (a node port's key).</summary>
    public readonly bool IsUnspecified => Word3 == 0 && (IsIPv4 || (Word0 | Word1 | Word2) == 0);

    public readonly IPAddress ToIPAddress()
    {
        Span<byte> bytes = stackalloc byte[16];
        MemoryMarshal.Write(bytes, in this);
        var address = new IPAddress(bytes);
        return IsIPv4 ? address.MapToIPv4() : address;
    }

    public override readonly string ToString() => ToIPAddress().ToString();

    private static readonly uint MappedWord2 = MemoryMarshal.Read<uint>([0, 0, 0xff, 0xff]);
}

/// <summary>struct pp_service_key: a frontend (address, port, protocol) and a slot of it (0 is the master entry).</summary>
[CStruct("pp_service_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct ServiceKey
{
    public MapAddress Address;
    public ushort Port;
    public ushort Slot;
    public byte Proto;
    public byte Scope;
    public ushort Pad;

    public static ServiceKey For(IPAddress address, int port, ProtocolType protocol, int slot = 0) => new()
    {
        Address = MapAddress.For(address),
        Port = MapLayout.NetworkPort(port),
        Proto = (byte)protocol,
        Slot = checked((ushort)slot),
    };

    public readonly ServiceKey WithSlot(int slot) => this with { Slot = checked((ushort)slot) };

    public override readonly string ToString() =>
        $"{EbpfText.Endpoint(Address.ToIPAddress(), Port)}/{(ProtocolType)Proto} slot {Slot}";
}

/// <summary>struct pp_service_value: in slot 0 the backend count and flags, in slots 1..count a backend id.</summary>
[CStruct("pp_service_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct ServiceValue
{
    public uint BackendId;
    public ushort Count;
    public ushort Flags;
    public uint AffinityTimeout;
    public uint RevNatId;

    public static ServiceValue Master(int count, uint revNatId, ushort flags = 0, uint affinityTimeoutSeconds = 0) =>
        new() { Count = checked((ushort)count), RevNatId = revNatId, Flags = flags, AffinityTimeout = affinityTimeoutSeconds };

    public static ServiceValue ForSlot(uint backendId) => new() { BackendId = backendId };
}

/// <summary>struct pp_backend: an endpoint, by its backend id.</summary>
[CStruct("pp_backend")]
[StructLayout(LayoutKind.Sequential)]
public record struct Backend
{
    public MapAddress Address;
    public ushort Port;
    public byte Proto;
    public byte Flags;

    public static Backend For(IPAddress address, int port, ProtocolType protocol) =>
        new() { Address = MapAddress.For(address), Port = MapLayout.NetworkPort(port), Proto = (byte)protocol };
}

/// <summary>struct pp_affinity_key: a client (the netns cookie in socket hooks) of a frontend.</summary>
[CStruct("pp_affinity_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct AffinityKey
{
    public ulong Client;
    public uint RevNatId;
    public uint Pad;
}

/// <summary>struct pp_affinity_value: the backend a client was last given, and when.</summary>
[CStruct("pp_affinity_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct AffinityValue
{
    public ulong LastUsedNs;
    public uint BackendId;
    public uint Pad;
}

/// <summary>struct pp_revnat4_key: a UDP socket (its cookie) and the backend it was sent to.</summary>
[CStruct("pp_revnat4_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct RevNat4Key
{
    public ulong Cookie;
    public uint Address;
    public ushort Port;
    public ushort Pad;
}

/// <summary>struct pp_revnat4_value: the VIP the socket really sent to.</summary>
[CStruct("pp_revnat4_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct RevNat4Value
{
    public uint Address;
    public ushort Port;
    public ushort Flags; // the master's source-range flags (PP_SVC_FLAG_SOURCE_RANGES, _NODE), else 0
    public uint RevNatId;
}

/// <summary>struct pp_revnat6_key: an IPv6 UDP socket (its cookie) and the backend it was sent to.</summary>
[CStruct("pp_revnat6_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct RevNat6Key
{
    public ulong Cookie;
    public MapAddress Address;
    public ushort Port;
    public ushort Pad;
    public uint Reserved;
}

/// <summary>struct pp_revnat6_value: the VIP the IPv6 socket really sent to.</summary>
[CStruct("pp_revnat6_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct RevNat6Value
{
    public MapAddress Address;
    public ushort Port;
    public ushort Flags; // the master's source-range flags (PP_SVC_FLAG_SOURCE_RANGES, _NODE), else 0
    public uint RevNatId;
}

/// <summary>struct pp_node_address: the value of pp_nodeip4_v1, whose key is a node IPv4 address (network order).</summary>
[CStruct("pp_node_address")]
[StructLayout(LayoutKind.Sequential)]
public record struct NodeAddress
{
    public uint Flags;
}

/// <summary>struct pp_ct4_key: a connection of the tc programs, by a packet's 5-tuple as seen and its direction.</summary>
[CStruct("pp_ct4_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct Ct4Key
{
    public uint Saddr;
    public uint Daddr;
    public ushort Sport;
    public ushort Dport;
    public byte Proto;
    public byte Direction;
    public ushort Pad;

    public override readonly string ToString() =>
        $"{(Direction == MapLayout.ConnectionForward ? "forward" : "reply")} {MapLayout.HostAddress(Saddr)}:{MapLayout.HostPort(Sport)} -> {MapLayout.HostAddress(Daddr)}:{MapLayout.HostPort(Dport)}/{(ProtocolType)Proto}";
}

/// <summary>struct pp_ct4_value: the backend (forward) or the frontend the client used (reply).</summary>
[CStruct("pp_ct4_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct Ct4Value
{
    public uint Address;
    public ushort Port;
    public ushort Flags;
    public uint RevNatId;
    public uint BackendId;
}

/// <summary>struct pp_ct6_key: an IPv6 connection of the tc programs, by a packet's 5-tuple as seen and its direction.</summary>
[CStruct("pp_ct6_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct Ct6Key
{
    public MapAddress Saddr;
    public MapAddress Daddr;
    public ushort Sport;
    public ushort Dport;
    public byte Proto;
    public byte Direction;
    public ushort Pad;

    public override readonly string ToString() =>
        $"{(Direction == MapLayout.ConnectionForward ? "forward" : "reply")} {EbpfText.Endpoint(Saddr.ToIPAddress(), Sport)} -> {EbpfText.Endpoint(Daddr.ToIPAddress(), Dport)}/{(ProtocolType)Proto}";
}

/// <summary>struct pp_ct6_value: the backend (forward) or the frontend the client used (reply), IPv6.</summary>
[CStruct("pp_ct6_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct Ct6Value
{
    public MapAddress Address;
    public ushort Port;
    public ushort Flags;
    public uint RevNatId;
    public uint BackendId;
}

/// <summary>struct pp_srcrange4_key: an allowed client prefix of a frontend (loadBalancerSourceRanges), in an LPM trie.</summary>
[CStruct("pp_srcrange4_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct SourceRange4Key
{
    public uint Prefixlen;
    public uint RevNatId;
    public uint Address;

    /// <summary>The key for <paramref name="address"/>/<paramref name="prefixLength"/> of frontend <paramref name="revNatId"/> (the id is always matched whole).</summary>
    public static SourceRange4Key For(uint revNatId, IPAddress address, int prefixLength)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(prefixLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefixLength, 32);
        return new() { Prefixlen = 32 + (uint)prefixLength, RevNatId = revNatId, Address = MapLayout.NetworkAddress(address) };
    }
}

/// <summary>struct pp_srcrange6_key: an allowed client prefix of an IPv6 frontend (loadBalancerSourceRanges), in the LPM trie pp_srcrange6_v1.</summary>
[CStruct("pp_srcrange6_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct SourceRange6Key
{
    public uint Prefixlen;
    public uint RevNatId;
    public MapAddress Address;

    /// <summary>The key for <paramref name="address"/>/<paramref name="prefixLength"/> (IPv6) of frontend <paramref name="revNatId"/>.</summary>
    public static SourceRange6Key For(uint revNatId, IPAddress address, int prefixLength)
    {
        ArgumentNullException.ThrowIfNull(address);
        if (address.AddressFamily != AddressFamily.InterNetworkV6) throw new ArgumentException($"{address} is not IPv6 (this map holds IPv6 only)", nameof(address));
        ArgumentOutOfRangeException.ThrowIfNegative(prefixLength);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(prefixLength, 128);
        return new() { Prefixlen = 32 + (uint)prefixLength, RevNatId = revNatId, Address = MapAddress.For(address) };
    }
}

/// <summary>struct pp_localsrc4_key: a local-sources prefix (Core's detect-local by CIDR) in the LPM trie pp_localsrc4_v1.</summary>
[CStruct("pp_localsrc4_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct LocalSource4Key
{
    public uint Prefixlen;
    public uint Address;

    /// <summary>The key for <paramref name="prefix"/> (IPv4).</summary>
    public static LocalSource4Key For(IpPrefix prefix)
    {
        if (prefix.Family != IpFamily.IPv4) throw new ArgumentException($"{prefix} is not IPv4", nameof(prefix));
        return new() { Prefixlen = (uint)prefix.Length, Address = MapLayout.NetworkAddress(prefix.Address) };
    }

    /// <summary>The prefix this key holds.</summary>
    public readonly IpPrefix Prefix => new(MapLayout.HostAddress(Address), (int)Prefixlen);

    public override readonly string ToString() => Prefix.ToString();
}

/// <summary>struct pp_localsrc6_key: an IPv6 local-sources prefix in the LPM trie pp_localsrc6_v1 (its value a <see cref="LocalSource4Value"/> too).</summary>
[CStruct("pp_localsrc6_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct LocalSource6Key
{
    public uint Prefixlen;
    public MapAddress Address;

    /// <summary>The key for <paramref name="prefix"/> (IPv6).</summary>
    public static LocalSource6Key For(IpPrefix prefix)
    {
        if (prefix.Family != IpFamily.IPv6) throw new ArgumentException($"{prefix} is not IPv6", nameof(prefix));
        return new() { Prefixlen = (uint)prefix.Length, Address = MapAddress.For(prefix.Address) };
    }

    /// <summary>The prefix this key holds.</summary>
    public readonly IpPrefix Prefix => new(Address.ToIPAddress(), (int)Prefixlen);

    public override readonly string ToString() => Prefix.ToString();
}

/// <summary>struct pp_config: the one element of pp_config_v1, what the socket hooks know of the node.</summary>
[CStruct("pp_config")]
[StructLayout(LayoutKind.Sequential)]
public record struct NodeConfig
{
    /// <summary>The node's network namespace cookie (SO_NETNS_COOKIE): a socket of any other namespace is a pod's.</summary>
    public ulong NodeNetns;
}

/// <summary>struct pp_localsrc4_value: <see cref="MapLayout.LocalSourceMasquerade"/> or 0 (the value of pp_localsrc6_v1 too).</summary>
[CStruct("pp_localsrc4_value")]
[StructLayout(LayoutKind.Sequential)]
public record struct LocalSource4Value
{
    public uint Flags;
}

/// <summary>
/// struct pp_sockdel_key: one deletion of a sync as bpf/sockdestroy.c reads it (<see cref="SocketDestroyer"/>). An
/// all-zero frontend address is any address of the port (a node port); an all-zero backend with port 0 is any backend.
/// </summary>
[CStruct("pp_sockdel_key")]
[StructLayout(LayoutKind.Sequential)]
public record struct SockDeleteKey
{
    public MapAddress Frontend;
    public MapAddress Backend;
    public ushort FrontendPort;
    public ushort BackendPort;
}

/// <summary>The tc programs of bpf/tc.c (embedded as tc.o): program names.</summary>
public static class TcPrograms
{
    public const string ObjectName = "tc";
    public const string Ingress = "pp_tc_ingress";
    public const string Egress = "pp_tc_egress";

    /// <summary>
    /// Loads bpf/tc.c's object from this assembly. Pass the socket hooks' object (or pinned maps) as
    /// <paramref name="sharedMaps"/> so both read the same services, backends, affinity entries and node addresses.
    /// </summary>
    public static BpfObject Load(IEnumerable<BpfMap>? sharedMaps = null) => BpfObject.LoadEmbedded(ObjectName, sharedMaps: sharedMaps);

    /// <summary>As <see cref="Load(IEnumerable{BpfMap}?)"/>, with its own maps (connections, source ranges) pinned in <paramref name="pinDirectory"/>.</summary>
    public static BpfObject Load(string pinDirectory, IEnumerable<BpfMap> sharedMaps) => BpfObject.LoadEmbedded(ObjectName, pinDirectory, sharedMaps);
}

/// <summary>The socket hooks of bpf/sock.c (embedded as sock.o): program and map names.</summary>
public static class SockPrograms
{
    public const string ObjectName = "sock";
    public const string Connect4 = "pp_connect4";
    public const string Sendmsg4 = "pp_sendmsg4";
    public const string Recvmsg4 = "pp_recvmsg4";
    public const string Getpeername4 = "pp_getpeername4";
    public const string Connect6 = "pp_connect6";
    public const string Sendmsg6 = "pp_sendmsg6";
    public const string Recvmsg6 = "pp_recvmsg6";
    public const string Getpeername6 = "pp_getpeername6";
    public const string Egress = "pp_egress";

    /// <summary>
    /// All nine, in the order to attach them (replies are reversed before anything is rewritten; the egress drop
    /// is in place before connect and sendmsg leave a dropped frontend's VIP alone).
    /// </summary>
    public static IReadOnlyList<string> All { get; } = [Recvmsg4, Getpeername4, Recvmsg6, Getpeername6, Egress, Sendmsg4, Sendmsg6, Connect4, Connect6];

    /// <summary>Loads bpf/sock.c's object from this assembly.</summary>
    public static BpfObject Load(string? pinDirectory = null) => BpfObject.LoadEmbedded(ObjectName, pinDirectory);
}
