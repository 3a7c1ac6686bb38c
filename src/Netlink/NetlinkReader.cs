using System.Buffers.Binary;
using System.Net;
using System.Text;
using static ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink;

/// <summary>One netlink message: its header and payload (after the nlmsghdr).</summary>
public readonly ref struct NetlinkMessage
{
    public NetlinkMessage(ushort type, ushort flags, uint sequence, uint portId, ReadOnlySpan<byte> payload)
    {
        Type = type;
        Flags = flags;
        Sequence = sequence;
        PortId = portId;
        Payload = payload;
    }

    public ushort Type { get; }
    public ushort Flags { get; }
    public uint Sequence { get; }
    public uint PortId { get; }
    public ReadOnlySpan<byte> Payload { get; }

    /// <summary>The generic netlink command (genlmsghdr.cmd).</summary>
    public byte GenericCommand => Payload.Length >= LinuxUapi.GenericNetlink.GENL_HDRLEN ? Payload[0] : throw Short("genlmsghdr");

    /// <summary>The attributes after a fixed family header of <paramref name="headerLength"/> bytes (4 for genetlink, 16 for ifinfomsg, 8 for ifaddrmsg).</summary>
    public NetlinkAttributes Attributes(int headerLength) =>
        Payload.Length >= headerLength ? new NetlinkAttributes(Payload[NetlinkWriter.NetlinkAlign(headerLength)..]) : throw Short($"a {headerLength}-byte header");

    private NetlinkProtocolException Short(string what) => new($"netlink message type {Type} has {Payload.Length} payload bytes, too few for {what}");
}

/// <summary>Iterates the messages of one received datagram, checking every length.</summary>
public ref struct NetlinkMessageReader
{
    private ReadOnlySpan<byte> _rest;

    public NetlinkMessageReader(ReadOnlySpan<byte> datagram)
    {
        _rest = datagram;
        Current = default;
    }

    public NetlinkMessage Current { get; private set; }

    public readonly NetlinkMessageReader GetEnumerator() => this;

    public bool MoveNext()
    {
        if (_rest.Length < NLMSG_HDRLEN)
        {
            if (_rest.Length != 0 && _rest.IndexOfAnyExcept((byte)0) >= 0)
                throw new NetlinkProtocolException($"{_rest.Length} trailing bytes after the last netlink message");
            return false;
        }
        var length = BitConverter.ToUInt32(_rest);
        if (length < NLMSG_HDRLEN || length > _rest.Length)
            throw new NetlinkProtocolException($"netlink message length {length} is invalid ({_rest.Length} bytes left in the datagram)");
        Current = new NetlinkMessage(
            BitConverter.ToUInt16(_rest[4..]), BitConverter.ToUInt16(_rest[6..]),
            BitConverter.ToUInt32(_rest[8..]), BitConverter.ToUInt32(_rest[12..]),
            _rest[NLMSG_HDRLEN..(int)length]);
        var next = Math.Min(NetlinkWriter.NetlinkAlign((int)length), _rest.Length);
        _rest = _rest[next..];
        return true;
    }
}

/// <summary>One attribute: its type (without the NLA_F_* flag bits) and payload.</summary>
public readonly ref struct NetlinkAttribute
{
    public NetlinkAttribute(ushort rawType, ReadOnlySpan<byte> payload)
    {
        RawType = rawType;
        Payload = payload;
    }

    public ushort RawType { get; }
    public ushort Type => (ushort)(RawType & NLA_TYPE_MASK);
    public bool IsNested => (RawType & NLA_F_NESTED) != 0;
    public ReadOnlySpan<byte> Payload { get; }

    public byte U8 => Payload.Length >= 1 ? Payload[0] : throw Short(1);
    public ushort U16 => Payload.Length >= 2 ? BitConverter.ToUInt16(Payload) : throw Short(2);
    public uint U32 => Payload.Length >= 4 ? BitConverter.ToUInt32(Payload) : throw Short(4);
    public ulong U64 => Payload.Length >= 8 ? BitConverter.ToUInt64(Payload) : throw Short(8);
    public int S32 => (int)U32;
    public ushort BigEndianU16 => Payload.Length >= 2 ? BinaryPrimitives.ReadUInt16BigEndian(Payload) : throw Short(2);
    public uint BigEndianU32 => Payload.Length >= 4 ? BinaryPrimitives.ReadUInt32BigEndian(Payload) : throw Short(4);

    /// <summary>A string, up to its NUL terminator if it has one.</summary>
    public string String
    {
        get
        {
            var end = Payload.IndexOf((byte)0);
            return Encoding.UTF8.GetString(end < 0 ? Payload : Payload[..end]);
        }
    }

    /// <summary>The attributes nested in this one.</summary>
    public NetlinkAttributes Nested => new(Payload);

    /// <summary>An address of the given family from the first 4 (IPv4) or 16 (IPv6) bytes.</summary>
    public IPAddress Address(int family)
    {
        var length = family == LinuxUapi.Socket.AF_INET6 ? 16 : 4;
        return Payload.Length >= length ? new IPAddress(Payload[..length]) : throw Short(length);
    }

    /// <summary>An address whose family is given by its length (rtnetlink: 4 or 16 bytes).</summary>
    public IPAddress Address() => Payload.Length is 4 or 16
        ? new IPAddress(Payload)
        : throw new NetlinkProtocolException($"attribute {Type} holds {Payload.Length} bytes, not an IPv4 or IPv6 address");

    private NetlinkProtocolException Short(int needed) => new($"attribute {Type} has {Payload.Length} bytes, {needed} expected");
}

/// <summary>Iterates a run of attributes (a message's, or a nested attribute's), checking every length.</summary>
public ref struct NetlinkAttributes
{
    private ReadOnlySpan<byte> _rest;

    public NetlinkAttributes(ReadOnlySpan<byte> attributes)
    {
        _rest = attributes;
        Current = default;
    }

    public NetlinkAttribute Current { get; private set; }

    public readonly NetlinkAttributes GetEnumerator() => this;

    public bool MoveNext()
    {
        if (_rest.Length < NLA_HDRLEN) return false;
        var length = BitConverter.ToUInt16(_rest);
        if (length < NLA_HDRLEN || length > _rest.Length)
            throw new NetlinkProtocolException($"attribute length {length} is invalid ({_rest.Length} bytes left)");
        Current = new NetlinkAttribute(BitConverter.ToUInt16(_rest[2..]), _rest[NLA_HDRLEN..length]);
        _rest = _rest[Math.Min(NetlinkWriter.NetlinkAlign(length), _rest.Length)..];
        return true;
    }

    /// <summary>The first attribute of <paramref name="type"/>; false when there is none.</summary>
    public readonly bool TryFind(ushort type, out NetlinkAttribute attribute)
    {
        foreach (var a in this)
        {
            if (a.Type == type)
            {
                attribute = a;
                return true;
            }
        }
        attribute = default;
        return false;
    }
}
