using System.Net;
using System.Net.Sockets;
using static ProxyPlanes.Netlink.LinuxUapi.IfAddr;
using static ProxyPlanes.Netlink.LinuxUapi.IfLink;
using static ProxyPlanes.Netlink.LinuxUapi.Netlink;
using static ProxyPlanes.Netlink.LinuxUapi.Rtnetlink;
using Errno = ProxyPlanes.Netlink.LinuxUapi.Errno;
using Sock = ProxyPlanes.Netlink.LinuxUapi.Socket;

namespace ProxyPlanes.Netlink;

/// <summary>A network interface as rtnetlink reports it.</summary>
public sealed record LinkInfo(int Index, string Name, uint Flags, string? Kind)
{
    public bool IsUp => (Flags & LinuxUapi.Interface.IFF_UP) != 0;
    public bool IsLoopback => (Flags & LinuxUapi.Interface.IFF_LOOPBACK) != 0;
}

/// <summary>An address of an interface (ifaddrmsg + IFA_LOCAL/IFA_ADDRESS, IFA_FLAGS).</summary>
public sealed record InterfaceAddress(int InterfaceIndex, IPAddress Address, int PrefixLength, byte Scope, uint Flags, string? Label)
{
    public override string ToString() => $"{Address}/{PrefixLength}";
}

/// <summary>
/// rtnetlink (NETLINK_ROUTE): links (create one of a kind such as dummy, up/down, delete) and their
/// IPv4 and IPv6 addresses (add, list, delete), in the network namespace the socket was opened in.
/// </summary>
public sealed class RouteNetlink : IDisposable
{
    private readonly NetlinkSocket _socket;

    public RouteNetlink(NetlinkSocket socket)
    {
        if (socket.Protocol != NETLINK_ROUTE) throw new ArgumentException("a NETLINK_ROUTE socket is needed", nameof(socket));
        _socket = socket;
    }

    /// <summary>Opens an rtnetlink socket in the calling thread's network namespace.</summary>
    public static RouteNetlink Open() => new(NetlinkSocket.Open(NETLINK_ROUTE));

    public NetlinkSocket Socket => _socket;

    /// <summary>The link called <paramref name="name"/>, or null when there is none.</summary>
    public LinkInfo? FindLink(string name)
    {
        var request = new NetlinkRequest(RTM_GETLINK, 0, (ref NetlinkWriter w) =>
        {
            w.WriteInterfaceInfo(Sock.AF_UNSPEC, 0, 0, 0, 0);
            w.PutString(IFLA_IFNAME, name);
        }, $"rtnetlink RTM_GETLINK {name}");
        try
        {
            return _socket.Query(request, ParseLink);
        }
        catch (NetlinkException e) when (e.Errno == Errno.ENODEV)
        {
            return null;
        }
    }

    /// <summary>Every link of the namespace.</summary>
    public List<LinkInfo> ListLinks() =>
        _socket.Dump<LinkInfo>(new NetlinkRequest(RTM_GETLINK, 0, (ref NetlinkWriter w) => w.WriteInterfaceInfo(Sock.AF_UNSPEC, 0, 0, 0, 0), "rtnetlink RTM_GETLINK (dump)"), ParseLink);

    /// <summary>
    /// Creates link <paramref name="name"/> of <paramref name="kind"/> (RTM_NEWLINK, NLM_F_CREATE |
    /// NLM_F_EXCL, IFLA_LINKINFO { IFLA_INFO_KIND }), down. When the kernel has no such kind
    /// (EOPNOTSUPP), the error says so with <paramref name="missingKindHint"/>.
    /// </summary>
    public LinkInfo CreateLink(string name, string kind, string? missingKindHint = null)
    {
        _socket.Execute(new NetlinkRequest(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, (ref NetlinkWriter w) => WriteCreateLink(ref w, name, kind), $"rtnetlink RTM_NEWLINK {name} type {kind}")
        {
            Hint = missingKindHint ?? $"the kernel has no {kind} link type (modprobe {kind})",
            HintErrno = Errno.EOPNOTSUPP,
        });
        return FindLink(name) ?? throw new NetlinkProtocolException($"link {name} was created but cannot be found");
    }

    /// <summary>The RTM_NEWLINK payload that creates a link of a kind.</summary>
    public static void WriteCreateLink(ref NetlinkWriter writer, string name, string kind)
    {
        writer.WriteInterfaceInfo(Sock.AF_UNSPEC, 0, 0, 0, 0);
        writer.PutString(IFLA_IFNAME, name);
        var info = writer.BeginNested(IFLA_LINKINFO);
        writer.PutString(IFLA_INFO_KIND, kind);
        writer.EndNested(info);
    }

    /// <summary>Sets the link up or down (IFF_UP in ifi_flags, with ifi_change = IFF_UP).</summary>
    public void SetLinkUp(LinkInfo link, bool up)
    {
        var flags = up ? LinuxUapi.Interface.IFF_UP : 0u;
        _socket.Execute(new NetlinkRequest(RTM_NEWLINK, 0,
            (ref NetlinkWriter w) => w.WriteInterfaceInfo(Sock.AF_UNSPEC, 0, link.Index, flags, LinuxUapi.Interface.IFF_UP),
            $"rtnetlink RTM_NEWLINK {link.Name} {(up ? "up" : "down")}"));
    }

    public void DeleteLink(LinkInfo link) =>
        _socket.Execute(new NetlinkRequest(RTM_DELLINK, 0, (ref NetlinkWriter w) => w.WriteInterfaceInfo(Sock.AF_UNSPEC, 0, link.Index, 0, 0), $"rtnetlink RTM_DELLINK {link.Name}"));

    /// <summary>The addresses of the namespace, of one link when <paramref name="link"/> is given, of one family (AF_INET, AF_INET6) or both.</summary>
    public List<InterfaceAddress> ListAddresses(LinkInfo? link = null, int family = Sock.AF_UNSPEC)
    {
        var index = link?.Index ?? 0;
        var addresses = _socket.Dump<InterfaceAddress>(new NetlinkRequest(RTM_GETADDR, 0,
            (ref NetlinkWriter w) => w.WriteInterfaceAddress((byte)family, 0, 0, 0, index),
            $"rtnetlink RTM_GETADDR {link?.Name ?? "(all links)"} (dump)"), ParseAddress);
        // Kernels without strict checking ignore the filter: apply it here too.
        return addresses.Where(a => (index == 0 || a.InterfaceIndex == index) && (family == Sock.AF_UNSPEC || NetlinkWriter.FamilyOf(a.Address) == family)).ToList();
    }

    /// <summary>
    /// Adds <paramref name="address"/>/<paramref name="prefixLength"/> to the link (RTM_NEWADDR,
    /// NLM_F_CREATE | NLM_F_EXCL: EEXIST when present), scope global. IPv6 addresses skip duplicate
    /// address detection (IFA_F_NODAD) so they are usable at once, also on a link that is down.
    /// </summary>
    public void AddAddress(LinkInfo link, IPAddress address, int prefixLength, uint flags = 0) =>
        _socket.Execute(AddAddressRequest(link, address, prefixLength, flags));

    public void DeleteAddress(LinkInfo link, IPAddress address, int prefixLength) =>
        _socket.Execute(DeleteAddressRequest(link, address, prefixLength));

    /// <summary>The request of <see cref="AddAddress"/>, to send in a batch (<see cref="NetlinkSocket.ExecuteBatch"/>).</summary>
    public static NetlinkRequest AddAddressRequest(LinkInfo link, IPAddress address, int prefixLength, uint flags = 0)
    {
        if (address.AddressFamily == AddressFamily.InterNetworkV6) flags |= IFA_F_NODAD;
        return new NetlinkRequest(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL,
            (ref NetlinkWriter w) => WriteAddress(ref w, link.Index, address, prefixLength, flags),
            $"rtnetlink RTM_NEWADDR {address}/{prefixLength} dev {link.Name}");
    }

    /// <summary>The request of <see cref="DeleteAddress"/>, to send in a batch.</summary>
    public static NetlinkRequest DeleteAddressRequest(LinkInfo link, IPAddress address, int prefixLength) =>
        new(RTM_DELADDR, 0, (ref NetlinkWriter w) => WriteAddress(ref w, link.Index, address, prefixLength, 0),
            $"rtnetlink RTM_DELADDR {address}/{prefixLength} dev {link.Name}");

    /// <summary>The RTM_NEWADDR / RTM_DELADDR payload: ifaddrmsg, IFA_LOCAL (IPv4) and IFA_ADDRESS, IFA_FLAGS.</summary>
    public static void WriteAddress(ref NetlinkWriter writer, int index, IPAddress address, int prefixLength, uint flags)
    {
        var family = NetlinkWriter.FamilyOf(address);
        writer.WriteInterfaceAddress(family, checked((byte)prefixLength), (byte)(flags & 0xff), RT_SCOPE_UNIVERSE, index);
        if (family == Sock.AF_INET) writer.PutAddress(IFA_LOCAL, address);
        writer.PutAddress(IFA_ADDRESS, address);
        if (flags != 0) writer.PutU32(IFA_FLAGS, flags);
    }

    /// <summary>Reads an RTM_NEWLINK message.</summary>
    public static LinkInfo ParseLink(NetlinkMessage message)
    {
        var payload = message.Payload;
        if (payload.Length < IFINFOMSG_LEN) throw new NetlinkProtocolException("RTM_NEWLINK message shorter than ifinfomsg");
        var index = BitConverter.ToInt32(payload[4..]);
        var flags = BitConverter.ToUInt32(payload[8..]);
        string? name = null, kind = null;
        foreach (var attribute in message.Attributes(IFINFOMSG_LEN))
        {
            if (attribute.Type == IFLA_IFNAME) name = attribute.String;
            else if (attribute.Type == IFLA_LINKINFO && attribute.Nested.TryFind(IFLA_INFO_KIND, out var k)) kind = k.String;
        }
        return new LinkInfo(index, name ?? throw new NetlinkProtocolException($"link {index} without a name"), flags, kind);
    }

    /// <summary>Reads an RTM_NEWADDR message. IFA_LOCAL is the address when present (IPv4), else IFA_ADDRESS.</summary>
    public static InterfaceAddress ParseAddress(NetlinkMessage message)
    {
        var payload = message.Payload;
        if (payload.Length < IFADDRMSG_LEN) throw new NetlinkProtocolException("RTM_NEWADDR message shorter than ifaddrmsg");
        var prefixLength = payload[1];
        uint flags = payload[2];
        var scope = payload[3];
        var index = BitConverter.ToInt32(payload[4..]);
        IPAddress? local = null, address = null;
        string? label = null;
        foreach (var attribute in message.Attributes(IFADDRMSG_LEN))
        {
            switch (attribute.Type)
            {
                case IFA_LOCAL: local = attribute.Address(); break;
                case IFA_ADDRESS: address = attribute.Address(); break;
                case IFA_LABEL: label = attribute.String; break;
                case IFA_FLAGS: flags = attribute.U32; break;
            }
        }
        return new InterfaceAddress(index, local ?? address ?? throw new NetlinkProtocolException($"address of link {index} without IFA_ADDRESS"), prefixLength, scope, flags, label);
    }

    public void Dispose() => _socket.Dispose();
}
