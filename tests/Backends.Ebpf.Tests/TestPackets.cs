using System.Buffers.Binary;
using System.Net;
using System.Net.Sockets;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>An IPv4 (or, with IPv6 addresses, IPv6) TCP or UDP packet as the tests build and read it (host-order ports).</summary>
public sealed record Ipv4Packet(ProtocolType Protocol, IPAddress Source, int SourcePort, IPAddress Destination, int DestinationPort)
{
    public override string ToString() => $"{Source}:{SourcePort} -> {Destination}:{DestinationPort}/{Protocol}";
}

/// <summary>
/// Ethernet + IPv4 (or IPv6) + TCP/UDP frames with correct checksums, for BPF_PROG_TEST_RUN, and the
/// parser that reads a program's output back and checks its IPv4 header and TCP/UDP checksums.
/// </summary>
public static class TestPackets
{
    private const int EthernetLength = 14;
    private const int Ipv4Length = 20;
    private const int Ipv6Length = 40;
    private static readonly byte[] Payload = "hello, service"u8.ToArray();

    public static Ipv4Packet Tcp(string source, int sourcePort, string destination, int destinationPort) =>
        new(ProtocolType.Tcp, IPAddress.Parse(source), sourcePort, IPAddress.Parse(destination), destinationPort);

    public static Ipv4Packet Udp(string source, int sourcePort, string destination, int destinationPort) =>
        new(ProtocolType.Udp, IPAddress.Parse(source), sourcePort, IPAddress.Parse(destination), destinationPort);

    /// <summary>A frame: a TCP SYN (with a payload, so the checksum covers data too) or a UDP datagram.</summary>
    public static byte[] Build(Ipv4Packet packet)
    {
        if (packet.Source.AddressFamily == AddressFamily.InterNetworkV6) return Build6(packet);
        var l4Length = (packet.Protocol == ProtocolType.Tcp ? 20 : 8) + Payload.Length;
        var frame = new byte[EthernetLength + Ipv4Length + l4Length];
        var span = frame.AsSpan();
        // Ethernet: locally administered MACs, type IPv4.
        new byte[] { 0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00 }.CopyTo(span);

        var ip = span.Slice(EthernetLength, Ipv4Length);
        ip[0] = 0x45;
        BinaryPrimitives.WriteUInt16BigEndian(ip[2..], (ushort)(Ipv4Length + l4Length));
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], 0x1234);
        BinaryPrimitives.WriteUInt16BigEndian(ip[6..], 0x4000); // DF
        ip[8] = 64;
        ip[9] = (byte)packet.Protocol;
        packet.Source.TryWriteBytes(ip[12..], out _);
        packet.Destination.TryWriteBytes(ip[16..], out _);
        BinaryPrimitives.WriteUInt16BigEndian(ip[10..], Checksum(ip, 0));

        WriteL4(packet, ip, span[(EthernetLength + Ipv4Length)..], l4Length);
        return frame;
    }

    /// <summary>As <see cref="Build"/> with an IPv6 header (no extension headers): Ethernet type 0x86dd.</summary>
    private static byte[] Build6(Ipv4Packet packet)
    {
        var l4Length = (packet.Protocol == ProtocolType.Tcp ? 20 : 8) + Payload.Length;
        var frame = new byte[EthernetLength + Ipv6Length + l4Length];
        var span = frame.AsSpan();
        new byte[] { 0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x86, 0xdd }.CopyTo(span);
        var ip = span.Slice(EthernetLength, Ipv6Length);
        ip[0] = 0x60;
        BinaryPrimitives.WriteUInt16BigEndian(ip[4..], (ushort)l4Length);
        ip[6] = (byte)packet.Protocol;
        ip[7] = 64;
        packet.Source.TryWriteBytes(ip[8..], out _);
        packet.Destination.TryWriteBytes(ip[24..], out _);
        WriteL4(packet, ip, span[(EthernetLength + Ipv6Length)..], l4Length);
        return frame;
    }

    /// <summary>The TCP SYN or UDP header, the payload and the checksum over <paramref name="ip"/>'s pseudo header.</summary>
    private static void WriteL4(Ipv4Packet packet, ReadOnlySpan<byte> ip, Span<byte> l4, int l4Length)
    {
        BinaryPrimitives.WriteUInt16BigEndian(l4, (ushort)packet.SourcePort);
        BinaryPrimitives.WriteUInt16BigEndian(l4[2..], (ushort)packet.DestinationPort);
        if (packet.Protocol == ProtocolType.Tcp)
        {
            BinaryPrimitives.WriteUInt32BigEndian(l4[4..], 1000); // sequence
            l4[12] = 5 << 4;                                      // data offset
            l4[13] = 0x02;                                        // SYN
            BinaryPrimitives.WriteUInt16BigEndian(l4[14..], 65535);
            Payload.CopyTo(l4[20..]);
            BinaryPrimitives.WriteUInt16BigEndian(l4[16..], L4Checksum(ip, l4));
        }
        else
        {
            BinaryPrimitives.WriteUInt16BigEndian(l4[4..], (ushort)l4Length);
            Payload.CopyTo(l4[8..]);
            var checksum = L4Checksum(ip, l4);
            BinaryPrimitives.WriteUInt16BigEndian(l4[6..], checksum == 0 ? (ushort)0xffff : checksum);
        }
    }

    /// <summary>Reads a frame back; fails the test when the IPv4 header or the TCP/UDP checksum is wrong, or the payload changed.</summary>
    public static Ipv4Packet Parse(byte[] frame)
    {
        var span = frame.AsSpan();
        if (BinaryPrimitives.ReadUInt16BigEndian(span[12..]) == 0x86dd) return Parse6(span);
        Assert.Equal(0x0800, BinaryPrimitives.ReadUInt16BigEndian(span[12..]));
        var ip = span.Slice(EthernetLength, Ipv4Length);
        var totalLength = BinaryPrimitives.ReadUInt16BigEndian(ip[2..]);
        Assert.True(Checksum(ip, 0) == 0, "IPv4 header checksum is wrong");
        var protocol = (ProtocolType)ip[9];
        var l4 = span.Slice(EthernetLength + Ipv4Length, totalLength - Ipv4Length);
        Assert.True(L4Checksum(ip, l4) == 0, $"{protocol} checksum is wrong");
        Assert.Equal(Payload, l4[(protocol == ProtocolType.Tcp ? 20 : 8)..].ToArray());
        return new Ipv4Packet(
            protocol,
            new IPAddress(ip.Slice(12, 4)),
            BinaryPrimitives.ReadUInt16BigEndian(l4),
            new IPAddress(ip.Slice(16, 4)),
            BinaryPrimitives.ReadUInt16BigEndian(l4[2..]));
    }

    /// <summary>As <see cref="Parse"/> for an IPv6 frame: the TCP/UDP checksum over the IPv6 pseudo header.</summary>
    private static Ipv4Packet Parse6(ReadOnlySpan<byte> span)
    {
        var ip = span.Slice(EthernetLength, Ipv6Length);
        var protocol = (ProtocolType)ip[6];
        var l4 = span.Slice(EthernetLength + Ipv6Length, BinaryPrimitives.ReadUInt16BigEndian(ip[4..]));
        Assert.True(L4Checksum(ip, l4) == 0, $"{protocol} checksum is wrong (IPv6)");
        Assert.Equal(Payload, l4[(protocol == ProtocolType.Tcp ? 20 : 8)..].ToArray());
        return new Ipv4Packet(protocol, new IPAddress(ip.Slice(8, 16)), BinaryPrimitives.ReadUInt16BigEndian(l4),
            new IPAddress(ip.Slice(24, 16)), BinaryPrimitives.ReadUInt16BigEndian(l4[2..]));
    }

    /// <summary>The Internet checksum of the pseudo header (IPv4 or IPv6, by the header's version) and the segment (0 when a segment with its checksum in place is correct).</summary>
    private static ushort L4Checksum(ReadOnlySpan<byte> ip, ReadOnlySpan<byte> l4)
    {
        if (ip[0] >> 4 == 6)
        {
            Span<byte> pseudo6 = stackalloc byte[40];
            ip.Slice(8, 32).CopyTo(pseudo6);
            BinaryPrimitives.WriteUInt32BigEndian(pseudo6[32..], (uint)l4.Length);
            pseudo6[39] = ip[6];
            return Checksum(l4, Sum(pseudo6));
        }
        Span<byte> pseudo = stackalloc byte[12];
        ip.Slice(12, 8).CopyTo(pseudo);
        pseudo[9] = ip[9];
        BinaryPrimitives.WriteUInt16BigEndian(pseudo[10..], (ushort)l4.Length);
        return Checksum(l4, Sum(pseudo));
    }

    private static ushort Checksum(ReadOnlySpan<byte> data, uint initial)
    {
        var sum = initial + Sum(data);
        while (sum >> 16 != 0) sum = (sum & 0xffff) + (sum >> 16);
        return (ushort)~sum;
    }

    private static uint Sum(ReadOnlySpan<byte> data)
    {
        uint sum = 0;
        for (var i = 0; i + 1 < data.Length; i += 2) sum += BinaryPrimitives.ReadUInt16BigEndian(data[i..]);
        if (data.Length % 2 == 1) sum += (uint)data[^1] << 8;
        return sum;
    }
}
