using static ProxyPlanes.Netlink.LinuxUapi;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// nf_tables element messages against bytes nft 1.0.6 sent for the same command
/// (<c>nft --debug=mnl add element ip t m '{ 10.96.0.10 . tcp . 80 comment "ns/a:http cluster IP" : goto c }'</c>),
/// less the NFTA_SET_ELEM_LIST_SET_ID nft adds (the set is named, so the kernel does not need it).
/// </summary>
public sealed class NfTablesEncodingTests
{
    private static readonly NfTablesDataType Ipv4 = Type("ipv4_addr");
    private static readonly NfTablesDataType Proto = Type("inet_proto");
    private static readonly NfTablesDataType Service = Type("inet_service");

    private static NfTablesDataType Type(string name) => NfTablesDataType.TryGet(name, out var type) ? type : throw new InvalidOperationException(name);

    private static byte[] Hex(string hex) => Convert.FromHexString(string.Concat(hex.Where(char.IsAsciiHexDigit)));

    private static byte[] Write(NetlinkRequest request, uint sequence)
    {
        var buffer = new byte[4096];
        var writer = new NetlinkWriter(buffer);
        var start = writer.BeginMessage(request.Type, (ushort)(request.Flags | LinuxUapi.Netlink.NLM_F_REQUEST | LinuxUapi.Netlink.NLM_F_ACK), sequence);
        request.Write(ref writer);
        writer.EndMessage(start);
        return writer.Written.ToArray();
    }

    [Fact]
    public void SetElement_VerdictWithComment_MatchesNftBytes()
    {
        var key = NfTablesDataType.TryEncode([Ipv4, Proto, Service], ["10.96.0.10", "tcp", "80"], out var error);
        Assert.Null(error);
        var element = new NfTablesElement(key!, "10.96.0.10 . tcp . 80") { Verdict = NfTablesVerdict.Goto("c"), Comment = "ns/a:http cluster IP" };
        var request = NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "m", element));

        Assert.Equal("nftables add element ip t m { 10.96.0.10 . tcp . 80 }", request.Operation);
        var expected = Hex("""
            74000000 0c0a 0504 07000000 00000000
            02000000
            06000100 74000000
            06000200 6d000000
            50000380
              4c000180
                14000180 10000100 0a60000a 06000000 00500000
                18000280 14000280 08000100 fffffffc 06000200 63000000
                1b000600 0015 6e732f613a6874747020636c7573746572204950 00 00
            """);
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(Write(request, 7)));
    }

    [Fact]
    public void SetElement_Delete_CarriesTheKeyOnly()
    {
        var key = NfTablesDataType.TryEncode([Proto, Service], ["udp", "53"], out _)!;
        // A value or comment given with a delete is not sent: the kernel finds the element by key.
        var element = new NfTablesElement(key, "udp . 53") { Verdict = NfTablesVerdict.Drop, Comment = "x" };
        var request = NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV6, "proxyplanes", new(NfTablesElementChange.Delete, "service-nodeports", element));

        Assert.Equal("nftables delete element ip6 proxyplanes service-nodeports { udp . 53 }", request.Operation);
        var expected = Hex("""
            54000000 0e0a 0500 01000000 00000000
            0a000000
            10000100 70726f7879706c616e657300
            16000200 736572766963652d6e6f6465706f72747300 0000
            18000380 14000180 10000180 0c000100 11000000 00350000
            """);
        Assert.Equal(Convert.ToHexString(expected), Convert.ToHexString(Write(request, 1)));
    }

    [Fact]
    public void SetElement_DataMapAndPlainVerdicts_EncodeValueAndCode()
    {
        var key = NfTablesDataType.TryEncode([Type("mark")], ["1"], out _)!;
        var data = NfTablesDataType.TryEncode([Ipv4, Service], ["10.0.0.1", "80"], out _)!;
        var bytes = Write(NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "mk", new NfTablesElement(key, "1") { Data = data })), 1);
        // nft: "element 00000001  : 0100000a 00005000" (mark in host order; the data's fields padded).
        Assert.EndsWith(Convert.ToHexString(Hex("""
            24000380 20000180 0c000180 08000100 01000000
            10000280 0c000100 0a000001 00500000
            """)), Convert.ToHexString(bytes));

        var accept = Write(NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "p", new NfTablesElement(key, "1") { Verdict = NfTablesVerdict.Accept })), 1);
        Assert.EndsWith(Convert.ToHexString(Hex("10000280 0c000280 08000100 00000001")), Convert.ToHexString(accept));
    }

    [Fact]
    public void SetElement_TimeoutAndIntervalEnd_AreEncoded()
    {
        var key = NfTablesDataType.TryEncode([Ipv4], ["10.0.0.0"], out _)!;
        var bytes = Write(NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "s",
            new NfTablesElement(key, "10.0.0.0") { IntervalEnd = true, Timeout = TimeSpan.FromSeconds(3) })), 1);
        Assert.EndsWith(Convert.ToHexString(Hex("""
            28000380 24000180 08000300 00000001
            0c000400 00000000 00000bb8
            0c000180 08000100 0a000000
            """)), Convert.ToHexString(bytes));
    }

    private static readonly NfTablesDataType Integer = Type("integer");

    /// <summary>A slot range of <c>typeof numgen random mod 4096 : ip daddr . tcp dport; flags interval</c>, encoded.</summary>
    private static NfTablesElement Slots(uint low, uint? highPlusOne, string address, string port)
    {
        var start = new byte[4];
        Assert.True(Integer.TryEncode(low.ToString(System.Globalization.CultureInfo.InvariantCulture), start));
        byte[]? end = null;
        if (highPlusOne is { } h)
        {
            end = new byte[4];
            Assert.True(Integer.TryEncode(h.ToString(System.Globalization.CultureInfo.InvariantCulture), end));
        }
        return new NfTablesElement(start, $"{low}") { Data = NfTablesDataType.TryEncode([Ipv4, Service], [address, port], out _), IntervalEndKey = end, IntervalOpen = highPlusOne is null };
    }

    /// <summary>NFTA_SET_ELEM_LIST_ELEMENTS of a message: its last attribute.</summary>
    private static string ElementList(byte[] message, int length) => Convert.ToHexString(message.AsSpan(message.Length - length));

    // nft --debug=mnl add element ip t m '{ 12288-14335 : 10.0.0.3 . 80 }' into a map that already
    // holds an element: a start element (key 12288 big-endian, data address . port, each padded to 4
    // bytes) and a closing one (key 14336, NFT_SET_ELEM_INTERVAL_END, no data), no NFTA_SET_ELEM_KEY_END.
    [Fact]
    public void SetElement_IntervalRange_MatchesNftBytes()
    {
        var bytes = Write(NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "m", Slots(12288, 14336, "10.0.0.3", "80"))), 1);
        Assert.Equal(Convert.ToHexString(Hex("""
            3c000380
            20000180 0c000180 08000100 00003000 10000280 0c000100 0a000003 00500000
            18000180 08000300 00000001 0c000180 08000100 00003800
            """)), ElementList(bytes, 60));
    }

    // nft --debug=mnl delete element ip t m '{ 8192-10239 }': both elements, no data.
    [Fact]
    public void SetElement_IntervalRangeDeleted_MatchesNftBytes()
    {
        var bytes = Write(NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Delete, "m", Slots(8192, 10240, "10.0.0.2", "80"))), 1);
        Assert.Equal(Convert.ToHexString(Hex("""
            2c000380
            10000180 0c000180 08000100 00002000
            18000180 08000300 00000001 0c000180 08000100 00002800
            """)), ElementList(bytes, 44));
    }

    // nft --debug=mnl add element ip t m '{ 4294963200-4294967295 : 10.0.0.4 . 80 }': no closing
    // element (HIGH + 1 overflows); NFTNL_SET_ELEM_F_INTERVAL_OPEN in the element's user data instead.
    [Fact]
    public void SetElement_IntervalEndingAtTheMaximum_IsOpen_AsNftWritesIt()
    {
        var bytes = Write(NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "m", Slots(4294963200, null, "10.0.0.4", "80"))), 1);
        Assert.Equal(Convert.ToHexString(Hex("""
            30000380
            2c000180 0c000180 08000100 fffff000 10000280 0c000100 0a000004 00500000
            0a000600 01040100 00000000
            """)), ElementList(bytes, 48));
    }

    [Fact]
    public void NetfilterBatch_WrapsRequestsInBeginAndEnd_OfTheSubsystem()
    {
        var key = NfTablesDataType.TryEncode([Service], ["80"], out _)!;
        var request = NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", new(NfTablesElementChange.Add, "s", new NfTablesElement(key, "80")));
        var buffer = new byte[4096];
        var writer = new NetlinkWriter(buffer);
        NetlinkSocket.WriteNetfilterBatch(ref writer, Nfnetlink.NFNL_SUBSYS_NFTABLES, [request], 100);
        var messages = new List<(ushort Type, ushort Flags, uint Sequence, string Payload)>();
        foreach (var m in new NetlinkMessageReader(writer.Written)) messages.Add((m.Type, m.Flags, m.Sequence, Convert.ToHexString(m.Payload)));

        Assert.Equal((ushort)0x10, messages[0].Type); // NFNL_MSG_BATCH_BEGIN, as nft sends it
        Assert.Equal((ushort)LinuxUapi.Netlink.NLM_F_REQUEST, messages[0].Flags);
        Assert.Equal((100u, "0000000A"), (messages[0].Sequence, messages[0].Payload));
        Assert.Equal((ushort)0x0a0c, messages[1].Type);
        Assert.Equal((ushort)(LinuxUapi.Netlink.NLM_F_REQUEST | LinuxUapi.Netlink.NLM_F_ACK | LinuxUapi.Netlink.NLM_F_CREATE), messages[1].Flags);
        Assert.Equal(101u, messages[1].Sequence);
        // The single inet_service key is 2 bytes, unpadded (nft: len 6).
        Assert.EndsWith("060001000050", messages[1].Payload[..^4]);
        Assert.Equal(((ushort)0x11, 102u, "0000000A"), (messages[2].Type, messages[2].Sequence, messages[2].Payload));
        Assert.Equal(3, messages.Count);
    }

    [Fact]
    public void SetElement_CommentLongerThanNftTakes_IsRefused()
    {
        var key = NfTablesDataType.TryEncode([Service], ["80"], out _)!;
        NetlinkRequest Request(int length) => NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t",
            new(NfTablesElementChange.Add, "s", new NfTablesElement(key, "80") { Comment = new string('c', length) }));
        // User data: TLV type 0, length 129 (the NUL counts), the comment, its NUL.
        Assert.Contains("0081" + string.Concat(Enumerable.Repeat("63", 128)) + "00", Convert.ToHexString(Write(Request(128), 1)));
        Assert.Throws<ArgumentException>(() => Request(129));
    }

    [Theory]
    [InlineData("inet_service", "8080", "1F90")]
    [InlineData("inet_proto", "sctp", "84")]
    [InlineData("inet_proto", "17", "11")]
    [InlineData("ipv6_addr", "fd00::a", "FD00000000000000000000000000000A")]
    [InlineData("mark", "0x4000", "00400000")]
    [InlineData("ether_addr", "02:00:5e:10:00:01", "02005E100001")]
    public void DataType_KnownValue_IsEncodedInNftsByteOrder(string type, string text, string hex)
    {
        var bytes = NfTablesDataType.TryEncode([Type(type)], [text], out var error);
        Assert.Null(error);
        Assert.Equal(hex, Convert.ToHexString(bytes!));
    }

    [Theory]
    [InlineData("ipv4_addr", "10.0.0.0/8")]
    [InlineData("ipv4_addr", "fd00::1")]
    [InlineData("inet_service", "http")]
    [InlineData("inet_service", "70000")]
    [InlineData("inet_proto", "nonsense")]
    public void DataType_ValueItCannotEncode_IsRefusedWithTheReason(string type, string text)
    {
        Assert.Null(NfTablesDataType.TryEncode([Type(type)], [text], out var error));
        Assert.Equal($"'{text}' is not a {type}", error);
    }

    [Fact]
    public void DataType_UnknownTypesAndWrongArity_AreRefused()
    {
        Assert.False(NfTablesDataType.TryGet("ifname", out _));
        Assert.False(NfTablesDataType.TryGet("integer64", out _));
        Assert.Null(NfTablesDataType.TryEncode([Ipv4, Service], ["10.0.0.1"], out var error));
        Assert.Contains("1 fields for 2 types", error);
    }

    [Theory]
    [InlineData("10.244.1.2 . 8080", "0AF401021F900000")]
    [InlineData(" 10.244.1.2  .  8080 ", "0AF401021F900000")] // parts trimmed, as Split(" . ", TrimEntries) does
    [InlineData("10.244.1.2 . 8080 . 1", null)] // more parts than types
    [InlineData("10.244.1.2", null)] // fewer
    [InlineData("10.244.1.2 . http", null)]
    [InlineData("10.244.1.2/32 . 8080", null)]
    [InlineData("10.244.1.2.8080", null)]
    [InlineData("", null)]
    public void DataType_Concatenation_IsEncodedFromNftsTextAsFromItsParts(string text, string? hex)
    {
        var bytes = NfTablesDataType.TryEncodeConcatenation([Ipv4, Service], text);
        Assert.Equal(hex, bytes is null ? null : Convert.ToHexString(bytes));
        // The same bytes as the parts encoded one by one (what the applier did before it stopped splitting).
        var parts = text.Split(" . ", StringSplitOptions.TrimEntries);
        Assert.Equal(hex, NfTablesDataType.TryEncode([Ipv4, Service], parts, out _) is { } expected ? Convert.ToHexString(expected) : null);
    }

    [Theory]
    [InlineData("02:00:5e:10:00:01", "02005E100001")]
    [InlineData("2:0:5e:10:0:1", "02005E100001")]
    [InlineData("02:00:5e:10:00", null)]
    [InlineData("02:00:5e:10:00:01:", null)]
    [InlineData("02:00:5e:10:00:01:02", null)]
    [InlineData("02::5e:10:00:01", null)]
    [InlineData("002:00:5e:10:00:01", null)]
    public void DataType_EtherAddress_SixHexBytes(string text, string? hex)
    {
        var bytes = NfTablesDataType.TryEncode([Type("ether_addr")], [text], out _);
        Assert.Equal(hex, bytes is null ? null : Convert.ToHexString(bytes));
    }

    [Theory]
    [InlineData("goto service-x", -4, "service-x")]
    [InlineData("jump a", -3, "a")]
    [InlineData("drop", 0, null)]
    [InlineData("accept", 1, null)]
    [InlineData("return", -5, null)]
    [InlineData("continue", -1, null)]
    public void Verdict_NftWords_Parse(string text, int code, string? chain)
    {
        Assert.True(NfTablesVerdict.TryParse(text, out var verdict));
        Assert.Equal(new NfTablesVerdict(code, chain), verdict);
        Assert.Equal(text, verdict.ToString());
    }

    [Theory]
    [InlineData("  goto   service-x ", -4, "service-x")]
    [InlineData(" drop", 0, null)]
    public void Verdict_ExtraSpaces_Parse(string text, int code, string? chain)
    {
        Assert.True(NfTablesVerdict.TryParse(text, out var verdict));
        Assert.Equal(new NfTablesVerdict(code, chain), verdict);
    }

    [Theory]
    [InlineData("goto")]
    [InlineData("drop now")]
    [InlineData("10.0.0.1 . 80")]
    [InlineData("")]
    [InlineData("goto a b")]
    [InlineData("jumps a")]
    [InlineData("accept a")]
    [InlineData("Drop")]
    public void Verdict_OtherText_DoesNotParse(string text) => Assert.False(NfTablesVerdict.TryParse(text, out _));
}
