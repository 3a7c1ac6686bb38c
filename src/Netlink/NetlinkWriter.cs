using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;
using System.Text;
using static ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink;

/// <summary>
/// Writes netlink messages into a caller's buffer: the nlmsghdr, a family header (genlmsghdr,
/// ifinfomsg, ifaddrmsg) and attributes, nested ones included, each padded to 4 bytes as the
/// kernel expects. Lengths are filled in when a message or nest ends. Host byte order unless a
/// method says big-endian (network order).
/// </summary>
public ref struct NetlinkWriter
{
    private readonly Span<byte> _buffer;
    private int _length;

    public NetlinkWriter(Span<byte> buffer)
    {
        _buffer = buffer;
        _length = 0;
    }

    /// <summary>Bytes written so far (complete messages once <see cref="EndMessage"/> ran).</summary>
    public readonly ReadOnlySpan<byte> Written => _buffer[.._length];

    public readonly int Length => _length;

    /// <summary>Starts a message; returns its offset for <see cref="EndMessage"/>.</summary>
    public int BeginMessage(ushort type, ushort flags, uint sequence, uint portId = 0)
    {
        Align();
        var start = _length;
        var header = Reserve(NLMSG_HDRLEN);
        BitConverter.TryWriteBytes(header, 0u);
        BitConverter.TryWriteBytes(header[4..], type);
        BitConverter.TryWriteBytes(header[6..], flags);
        BitConverter.TryWriteBytes(header[8..], sequence);
        BitConverter.TryWriteBytes(header[12..], portId);
        return start;
    }

    /// <summary>Pads the message and sets its nlmsg_len to what was written since <paramref name="start"/>.</summary>
    public void EndMessage(int start)
    {
        // The length counts the last attribute's padding, as the kernel's nla_put and libmnl do.
        Align();
        BitConverter.TryWriteBytes(_buffer[start..], (uint)(_length - start));
    }

    /// <summary>struct genlmsghdr: command, version, reserved.</summary>
    public void WriteGenericHeader(byte command, byte version)
    {
        var header = Reserve(LinuxUapi.GenericNetlink.GENL_HDRLEN);
        header[0] = command;
        header[1] = version;
        header[2] = 0;
        header[3] = 0;
    }

    /// <summary>struct nfgenmsg: the netfilter family (NFPROTO_*), NFNETLINK_V0, and res_id in network byte order.</summary>
    public void WriteNetfilterHeader(byte family, ushort resourceId)
    {
        var header = Reserve(LinuxUapi.Nfnetlink.NFGENMSG_LEN);
        header[0] = family;
        header[1] = LinuxUapi.Nfnetlink.NFNETLINK_V0;
        BinaryPrimitives.WriteUInt16BigEndian(header[2..], resourceId);
    }

    /// <summary>struct ifinfomsg.</summary>
    public void WriteInterfaceInfo(byte family, ushort type, int index, uint flags, uint change)
    {
        var header = Reserve(LinuxUapi.Rtnetlink.IFINFOMSG_LEN);
        header[0] = family;
        header[1] = 0;
        BitConverter.TryWriteBytes(header[2..], type);
        BitConverter.TryWriteBytes(header[4..], index);
        BitConverter.TryWriteBytes(header[8..], flags);
        BitConverter.TryWriteBytes(header[12..], change);
    }

    /// <summary>struct ifaddrmsg.</summary>
    public void WriteInterfaceAddress(byte family, byte prefixLength, byte flags, byte scope, int index)
    {
        var header = Reserve(LinuxUapi.Rtnetlink.IFADDRMSG_LEN);
        header[0] = family;
        header[1] = prefixLength;
        header[2] = flags;
        header[3] = scope;
        BitConverter.TryWriteBytes(header[4..], index);
    }

    /// <summary>Raw bytes, padded to 4.</summary>
    public void WriteBytes(scoped ReadOnlySpan<byte> bytes)
    {
        bytes.CopyTo(Reserve(bytes.Length));
        Align();
    }

    public void PutBytes(ushort type, scoped ReadOnlySpan<byte> value) => value.CopyTo(PutHeader(type, value.Length));

    public void PutU8(ushort type, byte value) => PutHeader(type, 1)[0] = value;

    public void PutU16(ushort type, ushort value) => BitConverter.TryWriteBytes(PutHeader(type, 2), value);

    public void PutU32(ushort type, uint value) => BitConverter.TryWriteBytes(PutHeader(type, 4), value);

    public void PutU64(ushort type, ulong value) => BitConverter.TryWriteBytes(PutHeader(type, 8), value);

    /// <summary>A 16-bit value in network byte order (ports).</summary>
    public void PutBigEndianU16(ushort type, ushort value) => BinaryPrimitives.WriteUInt16BigEndian(PutHeader(type, 2), value);

    /// <summary>A 64-bit value in network byte order (nf_tables timeouts).</summary>
    public void PutBigEndianU64(ushort type, ulong value) => BinaryPrimitives.WriteUInt64BigEndian(PutHeader(type, 8), value);

    /// <summary>A 32-bit value in network byte order.</summary>
    public void PutBigEndianU32(ushort type, uint value) => BinaryPrimitives.WriteUInt32BigEndian(PutHeader(type, 4), value);

    /// <summary>A NUL-terminated string (NLA_NUL_STRING / NLA_STRING with the terminator the kernel accepts).</summary>
    public void PutString(ushort type, string value)
    {
        var count = Encoding.UTF8.GetByteCount(value);
        var payload = PutHeader(type, count + 1);
        Encoding.UTF8.GetBytes(value, payload);
        payload[count] = 0;
    }

    /// <summary>An address: 4 bytes for IPv4, 16 for IPv6.</summary>
    public void PutAddress(ushort type, IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (!address.TryWriteBytes(bytes, out var written)) throw new ArgumentException($"cannot encode {address}", nameof(address));
        PutBytes(type, bytes[..written]);
    }

    /// <summary>
    /// An address in a fixed 16-byte field (union nf_inet_addr): IPv4 in the first 4 bytes, zeros after.
    /// </summary>
    public void PutInetAddress(ushort type, IPAddress address)
    {
        var payload = PutHeader(type, 16);
        payload.Clear();
        if (!address.TryWriteBytes(payload, out _)) throw new ArgumentException($"cannot encode {address}", nameof(address));
    }

    /// <summary>Starts a nested attribute (NLA_F_NESTED is set); returns its offset for <see cref="EndNested"/>.</summary>
    public int BeginNested(ushort type)
    {
        Align();
        var start = _length;
        PutHeader((ushort)(type | NLA_F_NESTED), 0);
        return start;
    }

    public void EndNested(int start)
    {
        Align();
        BitConverter.TryWriteBytes(_buffer[start..], checked((ushort)(_length - start)));
    }

    private Span<byte> PutHeader(ushort type, int payloadLength)
    {
        Align();
        var attribute = Reserve(NLA_HDRLEN + payloadLength);
        BitConverter.TryWriteBytes(attribute, checked((ushort)(NLA_HDRLEN + payloadLength)));
        BitConverter.TryWriteBytes(attribute[2..], type);
        var payload = attribute[NLA_HDRLEN..];
        // Padding is written by the next Align; the payload itself is the caller's.
        return payload;
    }

    private Span<byte> Reserve(int count)
    {
        if (_length + count > _buffer.Length)
            throw new InvalidOperationException($"netlink message does not fit in {_buffer.Length} bytes");
        var span = _buffer.Slice(_length, count);
        _length += count;
        return span;
    }

    private void Align()
    {
        var aligned = NetlinkAlign(_length);
        if (aligned > _buffer.Length) throw new InvalidOperationException($"netlink message does not fit in {_buffer.Length} bytes");
        _buffer[_length..aligned].Clear();
        _length = aligned;
    }

    /// <summary>Rounds up to the 4-byte alignment of messages and attributes (NLMSG_ALIGN, NLA_ALIGN).</summary>
    public static int NetlinkAlign(int length) => (length + NLMSG_ALIGNTO - 1) & ~(NLMSG_ALIGNTO - 1);

    internal static byte FamilyOf(IPAddress address) =>
        address.AddressFamily == AddressFamily.InterNetworkV6 ? (byte)LinuxUapi.Socket.AF_INET6 : (byte)LinuxUapi.Socket.AF_INET;
}
