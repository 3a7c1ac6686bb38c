using static ProxyPlanes.Netlink.LinuxUapi;

namespace ProxyPlanes.Netlink.Tests;

/// <summary>
/// nf_tables element batches against the real kernel, in a namespace each test creates (the socket
/// is opened on a thread inside it), checked with <c>nft list</c> there.
/// </summary>
[Collection(KernelNetlinkCollection.Name)]
public sealed class NfTablesKernelTests
{
    private const string Table = """
        table ip t {
          chain c { }
          map m { type ipv4_addr . inet_proto . inet_service : verdict ; }
          set s { type inet_service ; }
          map d { type mark : ipv4_addr . inet_service ; }
        }
        """;

    private static NfTablesDataType Type(string name) => NfTablesDataType.TryGet(name, out var type) ? type : throw new InvalidOperationException(name);

    private static NfTablesElementOperation VipElement(NfTablesElementChange change, string vip, string comment = "ns/a:http cluster IP") =>
        new(change, "m", new NfTablesElement(NfTablesDataType.TryEncode([Type("ipv4_addr"), Type("inet_proto"), Type("inet_service")], [vip, "tcp", "80"], out _)!, $"{vip} . tcp . 80")
        {
            Verdict = NfTablesVerdict.Goto("c"),
            Comment = comment,
        });

    private static async Task<TestNamespace> NamespaceWithTableAsync()
    {
        var ns = new TestNamespace("nft");
        try
        {
            var file = Path.GetTempFileName();
            try
            {
                await File.WriteAllTextAsync(file, Table);
                await ns.ExecAsync("nft", "-f", file);
            }
            finally
            {
                File.Delete(file);
            }
            return ns;
        }
        catch
        {
            ns.Dispose();
            throw;
        }
    }

    [Fact]
    public async Task ApplyElements_AddsWithCommentsAndDeletes_AsNftListsThem()
    {
        using var ns = await NamespaceWithTableAsync();
        using var client = ns.Run(NfTablesClient.Open);

        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t",
        [
            VipElement(NfTablesElementChange.Add, "10.96.0.10"),
            VipElement(NfTablesElementChange.Add, "10.96.0.11", "ns/b:dns"),
            VipElement(NfTablesElementChange.Add, "10.96.0.12", new string('c', NfTablesMessages.CommentMaxBytes)),
            new(NfTablesElementChange.Add, "s", new NfTablesElement(NfTablesDataType.TryEncode([Type("inet_service")], ["32013"], out _)!, "32013")),
            new(NfTablesElementChange.Add, "d", new NfTablesElement(NfTablesDataType.TryEncode([Type("mark")], ["1"], out _)!, "1")
            {
                Data = NfTablesDataType.TryEncode([Type("ipv4_addr"), Type("inet_service")], ["10.244.1.2", "8080"], out _),
            }),
        ]);
        var listing = await ns.ExecAsync("nft", "list", "table", "ip", "t");
        Assert.Contains("10.96.0.10 . tcp . 80 comment \"ns/a:http cluster IP\" : goto c", listing);
        Assert.Contains("10.96.0.11 . tcp . 80 comment \"ns/b:dns\" : goto c", listing);
        Assert.Contains($"10.96.0.12 . tcp . 80 comment \"{new string('c', 128)}\" : goto c", listing); // nft's longest comment
        Assert.Contains("elements = { 32013 }", listing);
        Assert.Contains("elements = { 0x00000001 : 10.244.1.2 . 8080 }", listing);

        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [VipElement(NfTablesElementChange.Delete, "10.96.0.10")]);
        listing = await ns.ExecAsync("nft", "list", "map", "ip", "t", "m");
        Assert.DoesNotContain("10.96.0.10 ", listing);
        Assert.Contains("10.96.0.11 . tcp . 80", listing);
    }

    [Fact]
    public async Task ApplyElements_DeleteOfAMissingElement_NamesItAndAppliesNothing()
    {
        using var ns = await NamespaceWithTableAsync();
        using var client = ns.Run(NfTablesClient.Open);
        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [VipElement(NfTablesElementChange.Add, "10.96.0.10")]);
        var before = await ns.ExecAsync("nft", "list", "table", "ip", "t");

        // The first two are fine on their own; the third fails, so the kernel applies none of them.
        var e = Assert.Throws<NetlinkException>(() => client.ApplyElements(Netfilter.NFPROTO_IPV4, "t",
        [
            VipElement(NfTablesElementChange.Delete, "10.96.0.10"),
            VipElement(NfTablesElementChange.Add, "10.96.0.12"),
            VipElement(NfTablesElementChange.Delete, "10.96.0.99"),
        ]));
        Assert.Equal(Errno.ENOENT, e.Errno);
        Assert.StartsWith("nftables delete element ip t m { 10.96.0.99 . tcp . 80 }: No such file or directory (ENOENT)", e.Message);
        Assert.Equal(before, await ns.ExecAsync("nft", "list", "table", "ip", "t"));

        // Positive control: without the bad element the same batch goes through.
        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [VipElement(NfTablesElementChange.Delete, "10.96.0.10"), VipElement(NfTablesElementChange.Add, "10.96.0.12")]);
        Assert.NotEqual(before, await ns.ExecAsync("nft", "list", "table", "ip", "t"));
    }

    [Fact]
    public async Task ApplyElements_ToAMissingSetOrWithAWrongKey_NamesTheElement()
    {
        using var ns = await NamespaceWithTableAsync();
        using var client = ns.Run(NfTablesClient.Open);
        var element = VipElement(NfTablesElementChange.Add, "10.96.0.10");

        var missing = Assert.Throws<NetlinkException>(() => client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [element with { Set = "service-ips" }]));
        Assert.StartsWith("nftables add element ip t service-ips { 10.96.0.10 . tcp . 80 }: No such file or directory (ENOENT)", missing.Message);

        // A key of the wrong length (a 2-byte port for the 12-byte concatenation): the kernel's EINVAL.
        var wrongKey = element with { Element = element.Element with { Key = [0, 80] } };
        var invalid = Assert.Throws<NetlinkException>(() => client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [wrongKey]));
        Assert.Equal(Errno.EINVAL, invalid.Errno);
        Assert.DoesNotContain("10.96.0.10", await ns.ExecAsync("nft", "list", "table", "ip", "t"));
    }

    [Fact]
    public async Task ApplyElements_AddOfAnExistingKeyWithAnotherVerdict_IsRefusedAsNftWouldBe()
    {
        using var ns = await NamespaceWithTableAsync();
        using var client = ns.Run(NfTablesClient.Open);
        await ns.ExecAsync("nft", "add", "chain", "ip", "t", "other");
        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [VipElement(NfTablesElementChange.Add, "10.96.0.10")]);
        // The same element again is no error (NLM_F_CREATE without NLM_F_EXCL, as `nft add element`).
        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [VipElement(NfTablesElementChange.Add, "10.96.0.10")]);

        var other = VipElement(NfTablesElementChange.Add, "10.96.0.10");
        other = other with { Element = other.Element with { Verdict = NfTablesVerdict.Goto("other") } };
        var e = Assert.Throws<NetlinkException>(() => client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [other]));
        Assert.StartsWith("nftables add element ip t m { 10.96.0.10 . tcp . 80 }:", e.Message);
        var nft = await ns.Namespace.ExecAsync(["nft", "add", "element", "ip", "t", "m", "{ 10.96.0.10 . tcp . 80 : goto other }"], null);
        Assert.False(nft.Succeeded);
        Assert.Contains(e.Errno == Errno.EBUSY ? "Device or resource busy" : "File exists", nft.StandardError);
    }

    [Fact]
    public async Task ApplyElements_TheLargestBatch_IsAcknowledgedWhole()
    {
        using var ns = await NamespaceWithTableAsync();
        using var client = ns.Run(NfTablesClient.Open);
        var ports = Enumerable.Range(1, NetlinkSocket.MaxNetfilterBatchMessages).Select(port =>
            new NfTablesElementOperation(NfTablesElementChange.Add, "s",
                new NfTablesElement(NfTablesDataType.TryEncode([Type("inet_service")], [$"{port}"], out _)!, $"{port}"))).ToList();

        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", ports);

        var listing = await ns.ExecAsync("nft", "-j", "list", "set", "ip", "t", "s");
        Assert.Contains($"{NetlinkSocket.MaxNetfilterBatchMessages}]", listing.Replace(" ", "", StringComparison.Ordinal));
        Assert.Equal(NetlinkSocket.MaxNetfilterBatchMessages, System.Text.RegularExpressions.Regex.Matches(listing, @"[\[,]\s*\d+").Count);
    }

    /// <summary>
    /// A batch larger than <see cref="NetlinkSocket.MaxNetfilterBatchMessages"/> asks for the last ACK
    /// only: still one transaction, a refused element in its middle is named and nothing is applied.
    /// </summary>
    [Fact]
    public async Task ApplyElements_ABatchBeyondTheAcknowledgedSize_IsOneTransaction()
    {
        using var ns = await NamespaceWithTableAsync();
        using var client = ns.Run(NfTablesClient.Open);
        NfTablesElementOperation Port(NfTablesElementChange change, int port) =>
            new(change, "s", new NfTablesElement(NfTablesDataType.TryEncode([Type("inet_service")], [$"{port}"], out _)!, $"{port}"));
        var ports = Enumerable.Range(1, 30_000).Select(p => Port(NfTablesElementChange.Add, p)).ToList();
        var before = await ns.ExecAsync("nft", "list", "set", "ip", "t", "s");
        // Larger than the socket's 64 KiB buffer and one chunk: written into three chunks, sent as one datagram.
        var buffer = new byte[4 * NetlinkSocket.NetfilterBatchChunkBytes];
        var writer = new NetlinkWriter(buffer);
        NetlinkSocket.WriteNetfilterBatch(ref writer, Nfnetlink.NFNL_SUBSYS_NFTABLES, [.. ports.Select(p => NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", p))], 1, acknowledgeEach: false);
        Assert.InRange(writer.Length, 64 * 1024 + NetlinkSocket.NetfilterBatchChunkBytes + 1, 2 * NetlinkSocket.NetfilterBatchChunkBytes);

        var e = Assert.Throws<NetlinkException>(() => client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [.. ports[..15_000], Port(NfTablesElementChange.Delete, 65000), .. ports[15_000..]]));
        Assert.StartsWith("nftables delete element ip t s { 65000 }: No such file or directory (ENOENT)", e.Message);
        Assert.Equal(before, await ns.ExecAsync("nft", "list", "set", "ip", "t", "s"));

        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", ports); // positive control
        var listing = await ns.ExecAsync("nft", "-j", "list", "set", "ip", "t", "s");
        Assert.Equal(30_000, System.Text.RegularExpressions.Regex.Matches(listing, @"[\[,]\s*\d+").Count);
    }

    [Fact]
    public async Task ApplyElements_AVerdictThatMakesALoop_IsRefusedAndNothingStays()
    {
        using var ns = await NamespaceWithTableAsync();
        await ns.ExecAsync("nft", "add", "chain", "ip", "t", "base", "{ type filter hook output priority 0 ; }");
        await ns.ExecAsync("nft", "add", "rule", "ip", "t", "base", "jump", "c");
        await ns.ExecAsync("nft", "add", "rule", "ip", "t", "c", "ip", "daddr", ".", "meta", "l4proto", ".", "th", "dport", "vmap", "@m");
        await ns.ExecAsync("nft", "add", "chain", "ip", "t", "other");
        using var client = ns.Run(NfTablesClient.Open);
        var before = await ns.ExecAsync("nft", "list", "table", "ip", "t");

        // c looks up m, so an element of m that jumps to c is a loop: the kernel refuses it (ELOOP or,
        // from the chain-depth check, EMLINK), naming that element, and the fine one before it goes too.
        var fine = VipElement(NfTablesElementChange.Add, "10.96.0.11");
        fine = fine with { Element = fine.Element with { Verdict = NfTablesVerdict.Goto("other") } };
        var loop = VipElement(NfTablesElementChange.Add, "10.96.0.10");
        loop = loop with { Element = loop.Element with { Verdict = NfTablesVerdict.Jump("c") } };
        var e = Assert.Throws<NetlinkException>(() => client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [fine, loop]));

        Assert.True(e.Errno is Errno.ELOOP or Errno.EMLINK, e.Message);
        Assert.StartsWith("nftables add element ip t m { 10.96.0.10 . tcp . 80 }: ", e.Message);
        Assert.Equal(before, await ns.ExecAsync("nft", "list", "table", "ip", "t"));
        client.ApplyElements(Netfilter.NFPROTO_IPV4, "t", [fine]); // positive control
        Assert.Contains("goto other", await ns.ExecAsync("nft", "list", "table", "ip", "t"));
    }

    [Fact]
    public async Task NetfilterBatch_RefusedAsAWhole_IsNamedByTheBatch()
    {
        using var ns = await NamespaceWithTableAsync();
        using var socket = ns.Run(() => NetlinkSocket.Open(LinuxUapi.Netlink.NETLINK_NETFILTER));
        var element = VipElement(NfTablesElementChange.Add, "10.96.0.10");
        var request = NfTablesMessages.SetElement(Netfilter.NFPROTO_IPV4, "t", element);

        // A batch for a subsystem that does not exist: the kernel answers its begin message only.
        var e = Assert.Throws<NetlinkException>(() => socket.ExecuteNetfilterBatch(200, [request], "test batch"));
        Assert.True(e.Errno is Errno.EINVAL or Errno.EOPNOTSUPP, e.Message);
        Assert.Equal("test batch", e.Operation);
        Assert.DoesNotContain("10.96.0.10", await ns.ExecAsync("nft", "list", "table", "ip", "t"));

        // Positive control: the same request in a batch of nf_tables goes through.
        socket.ExecuteNetfilterBatch(Nfnetlink.NFNL_SUBSYS_NFTABLES, [request], "test batch");
        Assert.Contains("10.96.0.10", await ns.ExecAsync("nft", "list", "table", "ip", "t"));
    }
}
