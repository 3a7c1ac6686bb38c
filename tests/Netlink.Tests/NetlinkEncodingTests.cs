using System.Net;
using static ProxyPlanes.Netlink.LinuxUapi;
using Genl = ProxyPlanes.Netlink.LinuxUapi.GenericNetlink;
using Nl = ProxyPlanes.Netlink.LinuxUapi.Netlink;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// Messages written and read against byte vectors made by hand from the kernel's struct layouts
/// (nlmsghdr, genlmsghdr, nlattr, ifinfomsg, ifaddrmsg): lengths, padding, nesting, byte order.
/// </summary>
public sealed class NetlinkEncodingTests
{
    private static byte[] Write(ushort type, ushort flags, uint sequence, NetlinkRequestWriter write)
    {
        var buffer = new byte[4096];
        var writer = new NetlinkWriter(buffer);
        var start = writer.BeginMessage(type, flags, sequence);
        write(ref writer);
        writer.EndMessage(start);
        return writer.Written.ToArray();
    }

    [Fact]
    public void GetFamily_IPVS_MatchesVector()
    {
        var bytes = Write(Genl.GENL_ID_CTRL, Nl.NLM_F_REQUEST, 1, (ref NetlinkWriter w) => ProxyPlanes.Netlink.GenericNetlink.WriteGetFamily(ref w, "IPVS"));

        Assert.Equal(Hex.Parse("""
            20 00 00 00  10 00  01 00  01 00 00 00  00 00 00 00
            03 01 00 00
            09 00 02 00  49 50 56 53 00 00 00 00
            """), bytes);
    }

    [Fact]
    public void NewService_PersistentTcp_MatchesVector()
    {
        var service = new IpvsService(new IpvsServiceId(IPAddress.Parse("10.96.0.10"), IpvsProtocol.TCP, 80), "rr", IpVs.IP_VS_SVC_F_PERSISTENT, 10800);

        var bytes = Write(0x23, Nl.NLM_F_REQUEST | Nl.NLM_F_ACK, 7, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(IpVs.IPVS_CMD_NEW_SERVICE, IpVs.IPVS_GENL_VERSION);
            IpvsClient.WriteService(ref w, service.Id, service);
        });

        Assert.Equal(Hex.Parse("""
            68 00 00 00  23 00  05 00  07 00 00 00  00 00 00 00
            01 01 00 00
            54 00 01 80
              06 00 01 00  02 00 00 00
              06 00 02 00  06 00 00 00
              14 00 03 00  0a 60 00 0a  00 00 00 00  00 00 00 00  00 00 00 00
              06 00 04 00  00 50 00 00
              07 00 06 00  72 72 00 00
              0c 00 07 00  01 00 00 00  ff ff ff ff
              08 00 08 00  30 2a 00 00
              08 00 09 00  ff ff ff ff
            """), bytes);
    }

    [Fact]
    public void NewDestination_IPv6_MatchesVector()
    {
        var id = new IpvsServiceId(IPAddress.Parse("fd00::10"), IpvsProtocol.UDP, 53);
        var destination = new IpvsDestination(IPAddress.Parse("fd00::2"), 8053, 1);

        var bytes = Write(0x23, Nl.NLM_F_REQUEST | Nl.NLM_F_ACK, 2, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(IpVs.IPVS_CMD_NEW_DEST, IpVs.IPVS_GENL_VERSION);
            IpvsClient.WriteService(ref w, id, null);
            IpvsClient.WriteDestination(ref w, destination.Address, destination.Port, destination);
        });

        Assert.Equal(Hex.Parse("""
            8c 00 00 00  23 00  05 00  02 00 00 00  00 00 00 00
            05 01 00 00
            30 00 01 80
              06 00 01 00  0a 00 00 00
              06 00 02 00  11 00 00 00
              14 00 03 00  fd 00 00 00  00 00 00 00  00 00 00 00  00 00 00 10
              06 00 04 00  00 35 00 00
            48 00 02 80
              14 00 01 00  fd 00 00 00  00 00 00 00  00 00 00 00  00 00 00 02
              06 00 02 00  1f 75 00 00
              08 00 03 00  00 00 00 00
              08 00 04 00  01 00 00 00
              08 00 05 00  00 00 00 00
              08 00 06 00  00 00 00 00
              06 00 0b 00  0a 00 00 00
            """), bytes);
    }

    [Fact]
    public void NewLink_Dummy_MatchesVector()
    {
        var bytes = Write(Rtnetlink.RTM_NEWLINK, Nl.NLM_F_REQUEST | Nl.NLM_F_ACK | Nl.NLM_F_CREATE | Nl.NLM_F_EXCL, 3,
            (ref NetlinkWriter w) => RouteNetlink.WriteCreateLink(ref w, "kube-ipvs0", "dummy"));

        Assert.Equal(Hex.Parse("""
            40 00 00 00  10 00  05 06  03 00 00 00  00 00 00 00
            00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00
            0f 00 03 00  6b 75 62 65  2d 69 70 76  73 30 00 00
            10 00 12 80
              0a 00 01 00  64 75 6d 6d  79 00 00 00
            """), bytes);
    }

    [Fact]
    public void NewAddress_IPv4AndIPv6_MatchVectors()
    {
        var v4 = Write(Rtnetlink.RTM_NEWADDR, Nl.NLM_F_REQUEST, 4, (ref NetlinkWriter w) => RouteNetlink.WriteAddress(ref w, 5, IPAddress.Parse("10.96.0.10"), 32, 0));
        Assert.Equal(Hex.Parse("""
            28 00 00 00  14 00  01 00  04 00 00 00  00 00 00 00
            02 20 00 00  05 00 00 00
            08 00 02 00  0a 60 00 0a
            08 00 01 00  0a 60 00 0a
            """), v4);

        var v6 = Write(Rtnetlink.RTM_NEWADDR, Nl.NLM_F_REQUEST, 5, (ref NetlinkWriter w) => RouteNetlink.WriteAddress(ref w, 5, IPAddress.Parse("fd00::10"), 128, IfAddr.IFA_F_NODAD));
        Assert.Equal(Hex.Parse("""
            34 00 00 00  14 00  01 00  05 00 00 00  00 00 00 00
            0a 80 02 00  05 00 00 00
            14 00 01 00  fd 00 00 00  00 00 00 00  00 00 00 00  00 00 00 10
            08 00 08 00  02 00 00 00
            """), v6);
    }

    [Fact]
    public void ParseService_DumpMessage_StripsHashedAndSkipsStats()
    {
        // As the kernel sends it: a 16-byte address, HASHED set, a nested stats attribute.
        var message = Hex.Parse("""
            80 00 00 00  23 00  02 00  09 00 00 00  11 22 33 44
            01 01 00 00
            6c 00 01 00
              06 00 01 00  02 00 00 00
              06 00 02 00  11 00 00 00
              14 00 03 00  0a 60 00 0a  00 00 00 00  00 00 00 00  00 00 00 00
              06 00 04 00  00 35 00 00
              07 00 06 00  72 72 00 00
              0c 00 07 00  03 00 00 00  ff ff ff ff
              08 00 08 00  60 00 00 00
              08 00 09 00  ff ff ff ff
              18 00 0a 80
                08 00 01 00  05 00 00 00
                0c 00 04 00  01 00 00 00  00 00 00 00
            """);

        var parsed = ParseOne(message, m => IpvsClient.ParseService(m));

        Assert.Equal(new IpvsServiceId(IPAddress.Parse("10.96.0.10"), IpvsProtocol.UDP, 53), parsed!.Id);
        Assert.Equal("rr", parsed.Scheduler);
        Assert.Equal(IpVs.IP_VS_SVC_F_PERSISTENT, parsed.Flags);
        Assert.Equal(96u, parsed.TimeoutSeconds);
        Assert.Equal(0xFFFFFFFFu, parsed.Netmask);
    }

    [Fact]
    public void ParseDestination_DumpMessage_ReadsCounts()
    {
        var message = Hex.Parse("""
            54 00 00 00  23 00  02 00  09 00 00 00  00 00 00 00
            05 01 00 00
            40 00 02 00
              14 00 01 00  0a f4 01 02  00 00 00 00  00 00 00 00  00 00 00 00
              06 00 02 00  1f 90 00 00
              08 00 03 00  00 00 00 00
              08 00 04 00  00 00 00 00
              08 00 07 00  03 00 00 00
              08 00 08 00  02 00 00 00
            """);

        var parsed = ParseOne(message, m => IpvsClient.ParseDestination(m, Socket.AF_INET));

        Assert.Equal(IPAddress.Parse("10.244.1.2"), parsed.Address);
        Assert.Equal(8080, parsed.Port);
        Assert.Equal(0, parsed.Weight);
        Assert.Equal(3u, parsed.ActiveConnections);
        Assert.Equal(2u, parsed.InactiveConnections);
    }

    [Fact]
    public void ParseError_CappedAckWithExtendedMessage_ReadsCodeAndText()
    {
        var message = Hex.Parse("""
            3c 00 00 00  02 00  00 03  09 00 00 00  00 00 00 00
            ef ff ff ff
            68 00 00 00  23 00  05 00  09 00 00 00  00 00 00 00
            17 00 01 00  53 65 72 76  69 63 65 20  61 6c 72 65  61 64 79 20  69 6e 00 00
            """);

        var (errno, text) = ParseOne(message, m => NetlinkSocket.ParseError(m));

        Assert.Equal(Errno.EEXIST, errno);
        Assert.Equal("Service already in", text);
    }

    [Fact]
    public void Exception_NamesOperationErrorAndSymbol()
    {
        var e = new NetlinkException(Errno.EEXIST, "IPVS NEW_SERVICE 10.96.0.10:80/TCP");

        Assert.Equal("IPVS NEW_SERVICE 10.96.0.10:80/TCP: File exists (EEXIST)", e.Message);
        Assert.Equal("EEXIST", e.ErrnoName);
    }

    [Fact]
    public void Exception_WithKernelMessageAndHint_AppendsBoth()
    {
        var e = new NetlinkException(Errno.EOPNOTSUPP, "rtnetlink RTM_NEWLINK kube-ipvs0 type dummy", "Unknown device type", "the kernel has no dummy link type (modprobe dummy)");

        Assert.Equal("rtnetlink RTM_NEWLINK kube-ipvs0 type dummy: Operation not supported (EOPNOTSUPP): Unknown device type; the kernel has no dummy link type (modprobe dummy)", e.Message);
    }

    [Fact]
    public void Reader_SeveralMessagesInOneDatagram_YieldsEach()
    {
        var datagram = Hex.Parse("""
            14 00 00 00  03 00  02 00  01 00 00 00  00 00 00 00  00 00 00 00
            14 00 00 00  03 00  02 00  02 00 00 00  00 00 00 00  00 00 00 00
            """);
        var sequences = new List<uint>();

        foreach (var message in new NetlinkMessageReader(datagram)) sequences.Add(message.Sequence);

        Assert.Equal([1u, 2u], sequences);
    }

    [Theory]
    [InlineData("40 00 00 00  03 00  02 00  01 00 00 00  00 00 00 00")] // longer than the datagram
    [InlineData("08 00 00 00  03 00  02 00  01 00 00 00  00 00 00 00")] // shorter than a header
    public void Reader_BadLength_Throws(string hex)
    {
        var datagram = Hex.Parse(hex);

        Assert.Throws<NetlinkProtocolException>(() =>
        {
            foreach (var _ in new NetlinkMessageReader(datagram)) { }
        });
    }

    [Fact]
    public void Attributes_BadLength_Throws()
    {
        var attributes = Hex.Parse("10 00 01 00  01 02 03 04");

        Assert.Throws<NetlinkProtocolException>(() =>
        {
            foreach (var _ in new NetlinkAttributes(attributes)) { }
        });
    }

    [Fact]
    public void Writer_NestedAttributesWithOddLengths_RoundTrip()
    {
        var buffer = new byte[256];
        var writer = new NetlinkWriter(buffer);
        var outer = writer.BeginNested(1);
        writer.PutU8(2, 7);
        var inner = writer.BeginNested(3);
        writer.PutString(4, "abcde");
        writer.PutBigEndianU16(5, 0x1234);
        writer.EndNested(inner);
        writer.PutU64(6, 0x0102030405060708);
        writer.EndNested(outer);

        var written = writer.Written.ToArray();
        Assert.Equal(0, written.Length % 4);
        var seen = new List<string>();
        foreach (var a in new NetlinkAttributes(written))
        {
            Assert.True(a.IsNested);
            foreach (var b in a.Nested)
            {
                switch (b.Type)
                {
                    case 2: seen.Add($"u8 {b.U8}"); break;
                    case 3:
                        foreach (var c in b.Nested) seen.Add(c.Type == 4 ? $"str {c.String}" : $"be16 {c.BigEndianU16:x}");
                        break;
                    case 6: seen.Add($"u64 {b.U64:x}"); break;
                }
            }
        }
        Assert.Equal(["u8 7", "str abcde", "be16 1234", "u64 102030405060708"], seen);
    }

    [Fact]
    public void Writer_Overflow_Throws()
    {
        var threw = false;
        try
        {
            var writer = new NetlinkWriter(new byte[16]);
            writer.BeginMessage(1, 0, 0);
            writer.PutU32(1, 1);
        }
        catch (InvalidOperationException)
        {
            threw = true;
        }
        Assert.True(threw);
    }

    [Fact]
    public void ServiceAndDestination_WrittenThenParsed_RoundTrip()
    {
        var service = new IpvsService(new IpvsServiceId(IPAddress.Parse("fd00:10:96::1"), IpvsProtocol.SCTP, 9000), "wlc");
        var destination = new IpvsDestination(IPAddress.Parse("fd00:10:244::7"), 9001, 3);

        var serviceMessage = Write(0x23, 0, 1, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(IpVs.IPVS_CMD_NEW_SERVICE, 1);
            IpvsClient.WriteService(ref w, service.Id, service);
        });
        var destinationMessage = Write(0x23, 0, 1, (ref NetlinkWriter w) =>
        {
            w.WriteGenericHeader(IpVs.IPVS_CMD_NEW_DEST, 1);
            IpvsClient.WriteDestination(ref w, destination.Address, destination.Port, destination);
        });

        Assert.Equal(service, ParseOne(serviceMessage, m => IpvsClient.ParseService(m)));
        Assert.Equal(destination, ParseOne(destinationMessage, m => IpvsClient.ParseDestination(m, Socket.AF_INET6)));
    }

    private static T ParseOne<T>(byte[] datagram, NetlinkMessageParser<T> parse)
    {
        var results = new List<T>();
        foreach (var message in new NetlinkMessageReader(datagram)) results.Add(parse(message));
        return Assert.Single(results);
    }
}

internal static class Hex
{
    public static byte[] Parse(string text) =>
        Convert.FromHexString(string.Concat(text.Where(Uri.IsHexDigit)));
}
