using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using static ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink;

/// <summary>
/// One element of an ipset, in the attributes the kernel's set types read (ip_set.h's CADT
/// attributes): <c>hash:ip</c> an address; <c>hash:ip,port</c> address, protocol and port;
/// <c>hash:ip,port,ip</c> and <c>hash:ip,port,net</c> also a second address (with its prefix length
/// for <c>net</c>); <c>bitmap:port</c> a port alone. <see cref="Comment"/> only for a set made with
/// <c>comment</c>, only on add.
/// </summary>
public sealed record IpsetElement(IPAddress? Address = null, int? Port = null, byte? Protocol = null,
    IPAddress? Address2 = null, byte? Cidr2 = null, string? Comment = null);

/// <summary>
/// ipset element changes over NETLINK_NETFILTER (subsystem NFNL_SUBSYS_IPSET), what <c>ipset add</c>
/// and <c>ipset del</c> send, without the process: one message per element, several per datagram
/// (<see cref="NetlinkSocket.ExecuteBatch"/>; not a transaction: the kernel applies each on its own,
/// the first refused one is thrown). With <c>exist</c> (ipset's <c>-exist</c>) the message has no
/// NLM_F_EXCL, so an add of an element already there (its comment is replaced) and a delete of one
/// that is not are no error.
/// </summary>
public sealed class IpsetClient : IDisposable
{
    // include/uapi/linux/netfilter/nfnetlink.h and include/uapi/linux/netfilter/ipset/ip_set.h
    internal const ushort NFNL_SUBSYS_IPSET = 6;
    internal const byte IPSET_PROTOCOL = 7;
    internal const byte IPSET_CMD_ADD = 9;
    internal const byte IPSET_CMD_DEL = 10;
    internal const ushort IPSET_ATTR_PROTOCOL = 1;
    internal const ushort IPSET_ATTR_SETNAME = 2;
    internal const ushort IPSET_ATTR_DATA = 7;
    internal const ushort IPSET_ATTR_IP = 1;
    internal const ushort IPSET_ATTR_PORT = 4;
    internal const ushort IPSET_ATTR_PROTO = 7;
    internal const ushort IPSET_ATTR_IP2 = 20;
    internal const ushort IPSET_ATTR_CIDR2 = 21;
    internal const ushort IPSET_ATTR_COMMENT = 26;
    internal const ushort IPSET_ATTR_IPADDR_IPV4 = 1;
    internal const ushort IPSET_ATTR_IPADDR_IPV6 = 2;
    internal const int IPSET_MAXNAMELEN = 32;

    public IpsetClient(NetlinkSocket socket) => Socket = socket;

    public NetlinkSocket Socket { get; }

    /// <summary>Opens a NETLINK_NETFILTER socket in the calling thread's network namespace.</summary>
    public static IpsetClient Open() => new(NetlinkSocket.Open(LinuxUapi.Netlink.NETLINK_NETFILTER));

    /// <summary><c>ipset add SET ELEMENT [-exist]</c> as a request.</summary>
    public static NetlinkRequest AddRequest(string set, IpsetElement element, bool exist, string operation) =>
        Request(IPSET_CMD_ADD, set, element, exist, operation);

    /// <summary><c>ipset del SET ELEMENT [-exist]</c> as a request (a comment is not sent).</summary>
    public static NetlinkRequest DeleteRequest(string set, IpsetElement element, bool exist, string operation) =>
        Request(IPSET_CMD_DEL, set, element with { Comment = null }, exist, operation);

    /// <summary>Sends the requests, several per datagram; the first refused one is thrown (ipset's own errors are numbers from 4096 on, ip_set.h's enum ipset_errno).</summary>
    public void Apply(IReadOnlyList<NetlinkRequest> requests) => Socket.ExecuteBatch(requests);

    private static NetlinkRequest Request(byte command, string set, IpsetElement element, bool exist, string operation)
    {
        if (set.Length == 0 || set.Length >= IPSET_MAXNAMELEN) throw new ArgumentException($"'{set}' is not an ipset name (1 to {IPSET_MAXNAMELEN - 1} characters)", nameof(set));
        var family = element.Address is null ? LinuxUapi.Netfilter.NFPROTO_UNSPEC
            : element.Address.AddressFamily == AddressFamily.InterNetworkV6 ? LinuxUapi.Netfilter.NFPROTO_IPV6 : LinuxUapi.Netfilter.NFPROTO_IPV4;
        return new NetlinkRequest((ushort)((NFNL_SUBSYS_IPSET << 8) | command), exist ? (ushort)0 : NLM_F_EXCL, (ref NetlinkWriter writer) =>
        {
            writer.WriteNetfilterHeader(family, 0);
            writer.PutU8(IPSET_ATTR_PROTOCOL, IPSET_PROTOCOL);
            writer.PutString(IPSET_ATTR_SETNAME, set);
            var data = writer.BeginNested(IPSET_ATTR_DATA);
            if (element.Address is { } address) PutIp(ref writer, IPSET_ATTR_IP, address);
            if (element.Port is { } port)
            {
                Span<byte> be = stackalloc byte[2];
                BinaryPrimitives.WriteUInt16BigEndian(be, checked((ushort)port));
                writer.PutBytes((ushort)(IPSET_ATTR_PORT | NLA_F_NET_BYTEORDER), be);
            }
            if (element.Protocol is { } protocol) writer.PutU8(IPSET_ATTR_PROTO, protocol);
            if (element.Address2 is { } address2) PutIp(ref writer, IPSET_ATTR_IP2, address2);
            if (element.Cidr2 is { } cidr) writer.PutU8(IPSET_ATTR_CIDR2, cidr);
            if (element.Comment is { } comment) writer.PutString(IPSET_ATTR_COMMENT, comment);
            writer.EndNested(data);
        }, operation);
    }

    /// <summary>An address as ip_set reads it: a nest holding IPADDR_IPV4 / IPADDR_IPV6 in network byte order.</summary>
    private static void PutIp(ref NetlinkWriter writer, ushort type, IPAddress address)
    {
        var nest = writer.BeginNested(type);
        var v6 = address.AddressFamily == AddressFamily.InterNetworkV6;
        writer.PutAddress((ushort)((v6 ? IPSET_ATTR_IPADDR_IPV6 : IPSET_ATTR_IPADDR_IPV4) | NLA_F_NET_BYTEORDER), address);
        writer.EndNested(nest);
    }

    public void Dispose() => Socket.Dispose();
}
