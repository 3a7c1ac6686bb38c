using System.Globalization;
using System.Net;
using System.Net.Sockets;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>What identifies an IPVS virtual server: address, protocol, port.</summary>
public readonly record struct VirtualServerKey(IPAddress Address, Protocol Protocol, int Port) : IComparable<VirtualServerKey>
{
    public IpFamily Family => NodeAddresses.FamilyOf(Address);

    public int CompareTo(VirtualServerKey other)
    {
        var c = Family.CompareTo(other.Family);
        if (c != 0) return c;
        c = IpvsText.CompareAddresses(Address, other.Address);
        if (c != 0) return c;
        c = Port.CompareTo(other.Port);
        return c != 0 ? c : Protocol.CompareTo(other.Protocol);
    }

    /// <summary>ipvsadm's service option: <c>-t 10.96.0.10:80</c>, <c>-u [fd00::10]:53</c>, <c>--sctp-service 10.96.0.10:9</c>.</summary>
    public string IpvsadmService => $"{IpvsText.ProtocolOption(Protocol)} {IpvsText.HostPort(Address, Port)}";

    /// <summary><c>10.96.0.10:80/TCP</c>, as the netlink layer names services in errors.</summary>
    public override string ToString() => $"{IpvsText.HostPort(Address, Port)}/{Protocol}";
}

/// <summary>What identifies a destination (real server) of a virtual server.</summary>
public readonly record struct RealServerKey(IPAddress Address, int Port) : IComparable<RealServerKey>
{
    public int CompareTo(RealServerKey other)
    {
        var c = IpvsText.CompareAddresses(Address, other.Address);
        return c != 0 ? c : Port.CompareTo(other.Port);
    }

    public override string ToString() => IpvsText.HostPort(Address, Port);
}

/// <summary>
/// A virtual server's settings: the scheduler, the flags (persistence for ClientIP affinity, the
/// scheduler flags <c>mh</c> needs) and the persistence timeout.
/// </summary>
public sealed record VirtualServer(VirtualServerKey Key, string Scheduler, uint Flags = 0, int TimeoutSeconds = 0)
{
    public const uint FlagPersistent = 0x0001;
    public const uint FlagSched1 = 0x0008;
    public const uint FlagSched2 = 0x0010;
    public const uint FlagSched3 = 0x0020;

    public bool Persistent => (Flags & FlagPersistent) != 0;

    /// <summary>ipvsadm's options after the service: <c>-s rr -p 10800 -b mh-port</c>.</summary>
    public string IpvsadmOptions
    {
        get
        {
            var text = $"-s {Scheduler}";
            if (Persistent) text += $" -p {TimeoutSeconds.ToString(CultureInfo.InvariantCulture)}";
            var schedulerFlags = IpvsText.SchedulerFlags(Scheduler, Flags);
            if (schedulerFlags.Length > 0) text += $" -b {schedulerFlags}";
            return text;
        }
    }
}

/// <summary>A destination the kernel reported: its weight, forwarding method and connection counts.</summary>
public sealed record KernelDestination(RealServerKey Key, int Weight, uint ForwardMethod = 0, long ActiveConnections = 0, long InactiveConnections = 0)
{
    public long Connections => ActiveConnections + InactiveConnections;
}

/// <summary>A virtual server as the kernel holds it, with its destinations.</summary>
public sealed record KernelVirtualServer(VirtualServer Definition, IReadOnlyList<KernelDestination> Destinations);

/// <summary>
/// One step of a sync, in the order the applier runs them. <see cref="ToString"/> is a shell line
/// (or a heredoc for the restore steps) that does the same by hand, so a plan reads as a script:
/// <c>ip addr add …</c>, <c>ipvsadm -A …</c>, <c>ipset restore</c>, <c>iptables-restore</c>.
/// </summary>
public abstract record IpvsOperation
{
    /// <summary>The group of consecutive operations the applier sends together (netlink batches).</summary>
    internal abstract OperationKind Kind { get; }
}

internal enum OperationKind { Link, Address, Ipvs, Ipset, Iptables }

/// <summary>Creates the dummy link the service addresses are bound to (left down, as kube-proxy leaves it).</summary>
public sealed record CreateLink(string Name, string LinkKind = "dummy") : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Link;
    public override string ToString() => $"ip link add {Name} type {LinkKind}";
}

/// <summary>Deletes the dummy link (cleanup).</summary>
public sealed record DeleteLink(string Name) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Link;
    public override string ToString() => $"ip link del {Name}";
}

public sealed record AddAddress(string Link, IPAddress Address) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Address;
    public int PrefixLength => Address.AddressFamily == AddressFamily.InterNetworkV6 ? 128 : 32;
    public override string ToString() => $"ip addr add {Address}/{PrefixLength} dev {Link}";
}

public sealed record DeleteAddress(string Link, IPAddress Address) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Address;
    public int PrefixLength => Address.AddressFamily == AddressFamily.InterNetworkV6 ? 128 : 32;
    public override string ToString() => $"ip addr del {Address}/{PrefixLength} dev {Link}";
}

public sealed record AddService(VirtualServer Server) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipvs;
    public override string ToString() => $"ipvsadm -A {Server.Key.IpvsadmService} {Server.IpvsadmOptions}";
}

public sealed record EditService(VirtualServer Server) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipvs;
    public override string ToString() => $"ipvsadm -E {Server.Key.IpvsadmService} {Server.IpvsadmOptions}";
}

public sealed record DeleteService(VirtualServerKey Key) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipvs;
    public override string ToString() => $"ipvsadm -D {Key.IpvsadmService}";
}

/// <summary>Adds a masquerading (NAT) destination.</summary>
public sealed record AddDestination(VirtualServerKey Service, RealServerKey Destination, int Weight) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipvs;
    public override string ToString() => $"ipvsadm -a {Service.IpvsadmService} -r {Destination} -m -w {Weight}";
}

/// <summary>Changes a destination's weight (0: no new connections, while existing ones drain).</summary>
public sealed record EditDestination(VirtualServerKey Service, RealServerKey Destination, int Weight) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipvs;
    public override string ToString() => $"ipvsadm -e {Service.IpvsadmService} -r {Destination} -m -w {Weight}";
}

public sealed record DeleteDestination(VirtualServerKey Service, RealServerKey Destination) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipvs;
    public override string ToString() => $"ipvsadm -d {Service.IpvsadmService} -r {Destination}";
}

/// <summary>One <c>ipset restore</c> run: create, add, del, destroy lines.</summary>
public sealed record IpsetRestore(string Script) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Ipset;
    public override string ToString() => $"ipset restore <<'EOF'\n{Script}EOF";
}

/// <summary>One <c>iptables-restore --noflush</c> (ip6tables-restore for IPv6) of the helper rules; each table commits atomically.</summary>
public sealed record IptablesRestore(IpFamily Family, string Script) : IpvsOperation
{
    internal override OperationKind Kind => OperationKind.Iptables;
    public string Tool => Family == IpFamily.IPv4 ? "iptables-restore" : "ip6tables-restore";
    public override string ToString() => $"{Tool} -w 5 --noflush <<'EOF'\n{Script}EOF";
}

/// <summary>Formatting shared by the model and the planner.</summary>
public static class IpvsText
{
    public static string HostPort(IPAddress address, int port) =>
        address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";

    public static string ProtocolOption(Protocol protocol) => protocol switch
    {
        Protocol.TCP => "-t",
        Protocol.UDP => "-u",
        _ => "--sctp-service",
    };

    public static string ProtocolName(Protocol protocol) => protocol switch
    {
        Protocol.TCP => "tcp",
        Protocol.UDP => "udp",
        _ => "sctp",
    };

    /// <summary>ipvsadm's names of the scheduler flags (-b): sh-fallback, sh-port, mh-fallback, mh-port.</summary>
    public static string SchedulerFlags(string scheduler, uint flags)
    {
        var names = new List<string>();
        if (scheduler is "sh" or "mh")
        {
            if ((flags & VirtualServer.FlagSched1) != 0) names.Add($"{scheduler}-fallback");
            if ((flags & VirtualServer.FlagSched2) != 0) names.Add($"{scheduler}-port");
        }
        else
        {
            if ((flags & VirtualServer.FlagSched1) != 0) names.Add("flag-1");
            if ((flags & VirtualServer.FlagSched2) != 0) names.Add("flag-2");
        }
        if ((flags & VirtualServer.FlagSched3) != 0) names.Add("flag-3");
        return string.Join(',', names);
    }

    public static int CompareAddresses(IPAddress a, IPAddress b)
    {
        Span<byte> x = stackalloc byte[16], y = stackalloc byte[16];
        a.TryWriteBytes(x, out var lx);
        b.TryWriteBytes(y, out var ly);
        return lx != ly ? lx.CompareTo(ly) : x[..lx].SequenceCompareTo(y[..ly]);
    }

    public static IComparer<IPAddress> AddressComparer { get; } = Comparer<IPAddress>.Create(CompareAddresses);
}
