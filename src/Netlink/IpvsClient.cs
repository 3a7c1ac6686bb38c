using System.Net;
using System.Net.Sockets;
using static ProxyPlanes.Netlink.LinuxUapi.IpVs;
using Errno = ProxyPlanes.Netlink.LinuxUapi.Errno;
using Sock = ProxyPlanes.Netlink.LinuxUapi.Socket;

namespace ProxyPlanes.Netlink;

/// <summary>The transport protocol of an IPVS virtual service (its IPPROTO_* number).</summary>
public enum IpvsProtocol : ushort
{
    TCP = Sock.IPPROTO_TCP,
    UDP = Sock.IPPROTO_UDP,
    SCTP = Sock.IPPROTO_SCTP,
}

/// <summary>What identifies a virtual service: address, protocol and port (ipvsadm's -t/-u/--sctp-service ADDR:PORT).</summary>
public readonly record struct IpvsServiceId(IPAddress Address, IpvsProtocol Protocol, ushort Port)
{
    public bool IsIPv6 => Address.AddressFamily == AddressFamily.InterNetworkV6;

    /// <summary><c>10.96.0.10:80/TCP</c>, <c>[fd00::10]:80/UDP</c>.</summary>
    public override string ToString() => $"{(IsIPv6 ? $"[{Address}]" : Address.ToString())}:{Port}/{Protocol}";
}

/// <summary>A virtual service and its settings. <see cref="Flags"/> never holds IP_VS_SVC_F_HASHED (kernel bookkeeping).</summary>
public sealed record IpvsService(IpvsServiceId Id, string Scheduler, uint Flags = 0, uint TimeoutSeconds = 0)
{
    /// <summary>The persistence netmask: /32 for IPv4 (255.255.255.255), a prefix length (128) for IPv6.</summary>
    public uint Netmask { get; init; } = Id.IsIPv6 ? 128u : 0xFFFFFFFFu;

    public bool Persistent => (Flags & IP_VS_SVC_F_PERSISTENT) != 0;

    public override string ToString() => $"{Id} {Scheduler}{(Persistent ? $" persistent {TimeoutSeconds}" : "")}";
}

/// <summary>A real server (destination) of a virtual service, with the connection counts a dump reports.</summary>
public sealed record IpvsDestination(IPAddress Address, ushort Port, int Weight, uint ForwardMethod = IP_VS_CONN_F_MASQ)
{
    public uint UpperThreshold { get; init; }
    public uint LowerThreshold { get; init; }
    public uint ActiveConnections { get; init; }
    public uint InactiveConnections { get; init; }
    public uint PersistentConnections { get; init; }

    public string Endpoint => Address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{Address}]:{Port}" : $"{Address}:{Port}";

    public override string ToString() => $"{Endpoint} weight {Weight}";
}

/// <summary>
/// IPVS's connection timeouts, in seconds, as GET_CONFIG reports them and SET_CONFIG takes them
/// (<c>ipvsadm --set TCP TCPFIN UDP</c>): established TCP, TCP after a FIN, UDP. In a SET, 0 leaves that one alone.
/// </summary>
public readonly record struct IpvsTimeouts(uint TcpSeconds, uint TcpFinSeconds, uint UdpSeconds)
{
    public bool IsEmpty => TcpSeconds == 0 && TcpFinSeconds == 0 && UdpSeconds == 0;

    /// <summary><c>tcp 900s, tcpfin 120s, udp 300s</c> (<c>ipvsadm -L --timeout</c> prints the same three).</summary>
    public override string ToString() => $"tcp {TcpSeconds}s, tcpfin {TcpFinSeconds}s, udp {UdpSeconds}s";
}

/// <summary>What GET_INFO reports: the IPVS version (e.g. 1.2.1) and the connection table size.</summary>
public sealed record IpvsInfo(uint VersionCode, uint ConnectionTableSize)
{
    public string Version => $"{(VersionCode >> 16) & 0xff}.{(VersionCode >> 8) & 0xff}.{VersionCode & 0xff}";
}

/// <summary>
/// The kernel's IPVS table over generic netlink (family "IPVS"), in the network namespace the
/// socket was opened in: list, add, edit and delete virtual services and their destinations.
/// Writes can be batched (<see cref="Apply"/>); every one is acknowledged and a refusal names it:
/// <c>IPVS NEW_SERVICE 10.96.0.10:80/TCP: File exists (EEXIST)</c>.
/// </summary>
public sealed class IpvsClient : IDisposable
{
    /// <summary>What a missing "IPVS" family means.</summary>
    public const string MissingMeaning = "the kernel has no IPVS (modprobe ip_vs)";

    private readonly NetlinkSocket _socket;

    public IpvsClient(NetlinkSocket socket, GenericNetlinkFamily family)
    {
        _socket = socket;
        Family = family;
    }

    public GenericNetlinkFamily Family { get; }

    /// <summary>
    /// Opens a generic netlink socket in the calling thread's network namespace and resolves "IPVS";
    /// throws <see cref="GenericNetlinkFamilyNotFoundException"/> ("the kernel has no IPVS (modprobe ip_vs)") without it.
    /// </summary>
    public static IpvsClient Open()
    {
        var socket = NetlinkSocket.Open(LinuxUapi.Netlink.NETLINK_GENERIC);
        try
        {
            return new IpvsClient(socket, GenericNetlink.ResolveFamily(socket, IPVS_GENL_NAME, MissingMeaning));
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    public IpvsInfo GetInfo() => _socket.Query(
        new NetlinkRequest(Family.Id, 0, (ref NetlinkWriter w) => w.WriteGenericHeader(IPVS_CMD_GET_INFO, IPVS_GENL_VERSION), "IPVS GET_INFO"),
        ParseInfo);

    /// <summary>The connection timeouts (IPVS_CMD_GET_CONFIG) of this namespace's IPVS.</summary>
    public IpvsTimeouts GetTimeouts() => _socket.Query(
        new NetlinkRequest(Family.Id, 0, (ref NetlinkWriter w) => w.WriteGenericHeader(IPVS_CMD_GET_CONFIG, IPVS_GENL_VERSION), "IPVS GET_CONFIG"),
        ParseTimeouts);

    /// <summary>
    /// Sets the connection timeouts (IPVS_CMD_SET_CONFIG); a 0 is not sent, so the kernel keeps that
    /// one. The kernel refuses a timeout above INT_MAX jiffies (EINVAL).
    /// </summary>
    public void SetTimeouts(IpvsTimeouts timeouts)
    {
        if (!timeouts.IsEmpty) _socket.Execute(SetTimeoutsRequest(timeouts));
    }

    public NetlinkRequest SetTimeoutsRequest(IpvsTimeouts timeouts) =>
        new(Family.Id, 0, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(IPVS_CMD_SET_CONFIG, IPVS_GENL_VERSION);
            if (timeouts.TcpSeconds != 0) w.PutU32(IPVS_CMD_ATTR_TIMEOUT_TCP, timeouts.TcpSeconds);
            if (timeouts.TcpFinSeconds != 0) w.PutU32(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, timeouts.TcpFinSeconds);
            if (timeouts.UdpSeconds != 0) w.PutU32(IPVS_CMD_ATTR_TIMEOUT_UDP, timeouts.UdpSeconds);
        }, $"IPVS SET_CONFIG {timeouts}");

    /// <summary>Every virtual service (firewall-mark services are left out).</summary>
    public List<IpvsService> ListServices() => _socket.Dump<IpvsService>(
        new NetlinkRequest(Family.Id, 0, (ref NetlinkWriter w) => w.WriteGenericHeader(IPVS_CMD_GET_SERVICE, IPVS_GENL_VERSION), "IPVS GET_SERVICE (dump)"),
        ParseService);

    /// <summary>
    /// One virtual service (a GET without NLM_F_DUMP), or null when the kernel has none with this id
    /// (ESRCH). Unlike <see cref="ListDestinations"/>, this tells a missing service from an empty one.
    /// </summary>
    public IpvsService? GetService(IpvsServiceId service)
    {
        try
        {
            return _socket.Query(ServiceRequest(IPVS_CMD_GET_SERVICE, "GET_SERVICE", service, null), ParseService);
        }
        catch (NetlinkException e) when (e.Errno == LinuxUapi.Errno.ESRCH)
        {
            return null;
        }
    }

    /// <summary>The destinations of one service (none when there is no such service: the kernel's dump is then empty).</summary>
    public List<IpvsDestination> ListDestinations(IpvsServiceId service) => _socket.Dump<IpvsDestination>(
        new NetlinkRequest(Family.Id, 0, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(IPVS_CMD_GET_DEST, IPVS_GENL_VERSION);
            WriteService(ref w, service, null);
        }, $"IPVS GET_DEST {service} (dump)"),
        m => ParseDestination(m, service.IsIPv6 ? Sock.AF_INET6 : Sock.AF_INET));

    public void AddService(IpvsService service) => _socket.Execute(NewService(service));
    public void EditService(IpvsService service) => _socket.Execute(SetService(service));
    public void DeleteService(IpvsServiceId service) => _socket.Execute(DelService(service));
    public void AddDestination(IpvsServiceId service, IpvsDestination destination) => _socket.Execute(NewDestination(service, destination));
    public void EditDestination(IpvsServiceId service, IpvsDestination destination) => _socket.Execute(SetDestination(service, destination));
    public void DeleteDestination(IpvsServiceId service, IPAddress address, ushort port) => _socket.Execute(DelDestination(service, address, port));

    /// <summary>Sends many writes in few datagrams; throws the first refusal (in order) after all were answered.</summary>
    public void Apply(IReadOnlyList<NetlinkRequest> requests)
    {
        if (requests.Count > 0) _socket.ExecuteBatch(requests);
    }

    /// <summary>Deletes every virtual service (IPVS_CMD_FLUSH).</summary>
    public void Flush() => _socket.Execute(new NetlinkRequest(Family.Id, 0, (ref NetlinkWriter w) => w.WriteGenericHeader(IPVS_CMD_FLUSH, IPVS_GENL_VERSION), "IPVS FLUSH"));

    public NetlinkRequest NewService(IpvsService service) => ServiceRequest(IPVS_CMD_NEW_SERVICE, "NEW_SERVICE", service.Id, service) with
    {
        // The scheduler module is loaded on demand; without it the kernel answers ENOENT.
        Hint = $"the kernel has no IPVS scheduler {service.Scheduler} (modprobe ip_vs_{service.Scheduler})",
        HintErrno = Errno.ENOENT,
    };

    public NetlinkRequest SetService(IpvsService service) => ServiceRequest(IPVS_CMD_SET_SERVICE, "SET_SERVICE", service.Id, service);

    public NetlinkRequest DelService(IpvsServiceId service) => ServiceRequest(IPVS_CMD_DEL_SERVICE, "DEL_SERVICE", service, null);

    public NetlinkRequest NewDestination(IpvsServiceId service, IpvsDestination destination) =>
        DestinationRequest(IPVS_CMD_NEW_DEST, "NEW_DEST", service, destination.Address, destination.Port, destination) with
        {
            // ip_vs_new_dest refuses an IPv4 destination the namespace's routing does not see as unicast.
            Hint = "the kernel does not see the destination as a unicast address (is lo up, is there a route to it?)",
            HintErrno = Errno.EINVAL,
        };

    public NetlinkRequest SetDestination(IpvsServiceId service, IpvsDestination destination) =>
        DestinationRequest(IPVS_CMD_SET_DEST, "SET_DEST", service, destination.Address, destination.Port, destination);

    public NetlinkRequest DelDestination(IpvsServiceId service, IPAddress address, ushort port) =>
        DestinationRequest(IPVS_CMD_DEL_DEST, "DEL_DEST", service, address, port, null);

    private NetlinkRequest ServiceRequest(byte command, string name, IpvsServiceId id, IpvsService? settings) =>
        new(Family.Id, 0, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(command, IPVS_GENL_VERSION);
            WriteService(ref w, id, settings);
        }, $"IPVS {name} {id}");

    private NetlinkRequest DestinationRequest(byte command, string name, IpvsServiceId service, IPAddress address, ushort port, IpvsDestination? settings) =>
        new(Family.Id, 0, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(command, IPVS_GENL_VERSION);
            WriteService(ref w, service, null);
            WriteDestination(ref w, address, port, settings);
        }, $"IPVS {name} {service} -> {(address.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString())}:{port}");

    /// <summary>
    /// IPVS_CMD_ATTR_SERVICE: the identity (AF, PROTOCOL, ADDR as a 16-byte nf_inet_addr, PORT in
    /// network order) and, for NEW/SET, every setting the kernel requires (scheduler, flags with a
    /// full mask, timeout, netmask in host order).
    /// </summary>
    public static void WriteService(ref NetlinkWriter writer, IpvsServiceId id, IpvsService? settings)
    {
        var nest = writer.BeginNested(IPVS_CMD_ATTR_SERVICE);
        writer.PutU16(IPVS_SVC_ATTR_AF, id.IsIPv6 ? (ushort)Sock.AF_INET6 : (ushort)Sock.AF_INET);
        writer.PutU16(IPVS_SVC_ATTR_PROTOCOL, (ushort)id.Protocol);
        writer.PutInetAddress(IPVS_SVC_ATTR_ADDR, id.Address);
        writer.PutBigEndianU16(IPVS_SVC_ATTR_PORT, id.Port);
        if (settings is not null)
        {
            if (settings.Scheduler.Length is 0 or >= IP_VS_SCHEDNAME_MAXLEN)
                throw new ArgumentException($"IPVS scheduler name '{settings.Scheduler}' must have 1 to {IP_VS_SCHEDNAME_MAXLEN - 1} characters");
            writer.PutString(IPVS_SVC_ATTR_SCHED_NAME, settings.Scheduler);
            Span<byte> flags = stackalloc byte[8];
            BitConverter.TryWriteBytes(flags, settings.Flags & ~IP_VS_SVC_F_HASHED);
            BitConverter.TryWriteBytes(flags[4..], uint.MaxValue);
            writer.PutBytes(IPVS_SVC_ATTR_FLAGS, flags);
            writer.PutU32(IPVS_SVC_ATTR_TIMEOUT, settings.TimeoutSeconds);
            writer.PutU32(IPVS_SVC_ATTR_NETMASK, settings.Netmask);
        }
        writer.EndNested(nest);
    }

    /// <summary>IPVS_CMD_ATTR_DEST: address (16 bytes), port (network order), and for NEW/SET the forwarding method, weight, thresholds and address family.</summary>
    public static void WriteDestination(ref NetlinkWriter writer, IPAddress address, ushort port, IpvsDestination? settings)
    {
        var nest = writer.BeginNested(IPVS_CMD_ATTR_DEST);
        writer.PutInetAddress(IPVS_DEST_ATTR_ADDR, address);
        writer.PutBigEndianU16(IPVS_DEST_ATTR_PORT, port);
        if (settings is not null)
        {
            writer.PutU32(IPVS_DEST_ATTR_FWD_METHOD, settings.ForwardMethod & IP_VS_CONN_F_FWD_MASK);
            writer.PutU32(IPVS_DEST_ATTR_WEIGHT, (uint)settings.Weight);
            writer.PutU32(IPVS_DEST_ATTR_U_THRESH, settings.UpperThreshold);
            writer.PutU32(IPVS_DEST_ATTR_L_THRESH, settings.LowerThreshold);
            writer.PutU16(IPVS_DEST_ATTR_ADDR_FAMILY, NetlinkWriter.FamilyOf(address));
        }
        writer.EndNested(nest);
    }

    /// <summary>Reads an IPVS_CMD_NEW_SERVICE message of a dump; null for a firewall-mark service.</summary>
    public static IpvsService? ParseService(NetlinkMessage message)
    {
        if (!message.Attributes(LinuxUapi.GenericNetlink.GENL_HDRLEN).TryFind(IPVS_CMD_ATTR_SERVICE, out var nest))
            throw new NetlinkProtocolException("IPVS service message without IPVS_CMD_ATTR_SERVICE");
        var family = Sock.AF_INET;
        ushort protocol = 0, port = 0;
        uint fwmark = 0, flags = 0, timeout = 0, netmask = 0;
        var scheduler = "";
        // The address is read after the loop: its family may come later in the message.
        ReadOnlySpan<byte> rawAddress = default;
        foreach (var a in nest.Nested)
        {
            switch (a.Type)
            {
                case IPVS_SVC_ATTR_AF: family = a.U16; break;
                case IPVS_SVC_ATTR_PROTOCOL: protocol = a.U16; break;
                case IPVS_SVC_ATTR_ADDR: rawAddress = a.Payload; break;
                case IPVS_SVC_ATTR_PORT: port = a.BigEndianU16; break;
                case IPVS_SVC_ATTR_FWMARK: fwmark = a.U32; break;
                case IPVS_SVC_ATTR_SCHED_NAME: scheduler = a.String; break;
                case IPVS_SVC_ATTR_FLAGS: flags = a.U32; break;
                case IPVS_SVC_ATTR_TIMEOUT: timeout = a.U32; break;
                case IPVS_SVC_ATTR_NETMASK: netmask = a.U32; break;
            }
        }
        if (fwmark != 0 || rawAddress.IsEmpty) return null;
        var address = new NetlinkAttribute(IPVS_SVC_ATTR_ADDR, rawAddress).Address(family);
        return new IpvsService(new IpvsServiceId(address, (IpvsProtocol)protocol, port), scheduler, flags & ~IP_VS_SVC_F_HASHED, timeout) { Netmask = netmask };
    }

    /// <summary>Reads an IPVS_CMD_NEW_DEST message of a dump; the address family is the destination's own, else the service's.</summary>
    public static IpvsDestination ParseDestination(NetlinkMessage message, int serviceFamily)
    {
        if (!message.Attributes(LinuxUapi.GenericNetlink.GENL_HDRLEN).TryFind(IPVS_CMD_ATTR_DEST, out var nest))
            throw new NetlinkProtocolException("IPVS destination message without IPVS_CMD_ATTR_DEST");
        var family = serviceFamily;
        ushort port = 0;
        uint method = 0, upper = 0, lower = 0, active = 0, inactive = 0, persistent = 0;
        var weight = 0;
        ReadOnlySpan<byte> rawAddress = default;
        foreach (var a in nest.Nested)
        {
            switch (a.Type)
            {
                case IPVS_DEST_ATTR_ADDR: rawAddress = a.Payload; break;
                case IPVS_DEST_ATTR_ADDR_FAMILY: family = a.U16; break;
                case IPVS_DEST_ATTR_PORT: port = a.BigEndianU16; break;
                case IPVS_DEST_ATTR_FWD_METHOD: method = a.U32; break;
                case IPVS_DEST_ATTR_WEIGHT: weight = a.S32; break;
                case IPVS_DEST_ATTR_U_THRESH: upper = a.U32; break;
                case IPVS_DEST_ATTR_L_THRESH: lower = a.U32; break;
                case IPVS_DEST_ATTR_ACTIVE_CONNS: active = a.U32; break;
                case IPVS_DEST_ATTR_INACT_CONNS: inactive = a.U32; break;
                case IPVS_DEST_ATTR_PERSIST_CONNS: persistent = a.U32; break;
            }
        }
        if (rawAddress.IsEmpty) throw new NetlinkProtocolException("IPVS destination without an address");
        var address = new NetlinkAttribute(IPVS_DEST_ATTR_ADDR, rawAddress).Address(family);
        return new IpvsDestination(address, port, weight, method & IP_VS_CONN_F_FWD_MASK)
        {
            UpperThreshold = upper,
            LowerThreshold = lower,
            ActiveConnections = active,
            InactiveConnections = inactive,
            PersistentConnections = persistent,
        };
    }

    /// <summary>Reads GET_CONFIG's answer: the three timeouts as top-level u32 attributes.</summary>
    public static IpvsTimeouts ParseTimeouts(NetlinkMessage message)
    {
        uint tcp = 0, tcpFin = 0, udp = 0;
        foreach (var a in message.Attributes(LinuxUapi.GenericNetlink.GENL_HDRLEN))
        {
            switch (a.Type)
            {
                case IPVS_CMD_ATTR_TIMEOUT_TCP: tcp = a.U32; break;
                case IPVS_CMD_ATTR_TIMEOUT_TCP_FIN: tcpFin = a.U32; break;
                case IPVS_CMD_ATTR_TIMEOUT_UDP: udp = a.U32; break;
            }
        }
        return new IpvsTimeouts(tcp, tcpFin, udp);
    }

    public static IpvsInfo ParseInfo(NetlinkMessage message)
    {
        uint version = 0, size = 0;
        foreach (var a in message.Attributes(LinuxUapi.GenericNetlink.GENL_HDRLEN))
        {
            if (a.Type == IPVS_INFO_ATTR_VERSION) version = a.U32;
            else if (a.Type == IPVS_INFO_ATTR_CONN_TAB_SIZE) size = a.U32;
        }
        return new IpvsInfo(version, size);
    }

    public void Dispose() => _socket.Dispose();
}
