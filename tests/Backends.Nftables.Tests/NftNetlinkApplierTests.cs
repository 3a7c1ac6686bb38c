using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>Which transactions the netlink applier can send itself, without a kernel.</summary>
public sealed class NftNetlinkApplierEncodingTests
{
    private static NftNetlinkApplier ApplierKnowingTheTable()
    {
        var applier = new NftNetlinkApplier(new NftCommandApplier(), openClient: () => throw new InvalidOperationException("no kernel here"));
        applier.Learn(new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Add(new NftTable())
            .Add(new NftMap(NftNames.ServiceIPs) { Type = new(["ipv4_addr", "inet_proto", "inet_service"]), ValueType = "verdict" })
            .Add(new NftSet(NftNames.HealthCheckNodePorts) { Type = new(["inet_service"]) })
            .Add(new NftSet("source-ranges-x") { Type = new(["ipv4_addr"]), Flags = new(["interval"]) })
            .Add(new NftMap("endpoints-x") { Type = new(["mark"]), ValueType = "ipv4_addr" }));
        return applier;
    }

    [Fact]
    public void TryEncode_ElementsOfKnownSets_BecomeNetlinkElements()
    {
        var applier = ApplierKnowingTheTable();
        var tx = new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Delete(new NftElement(NftNames.ServiceIPs, "10.96.0.10", "tcp", "80"))
            .Add(new NftElement(NftNames.ServiceIPs, "10.96.0.11", "udp", "53") { Value = "goto service-x", Comment = "kube-system/dns:dns cluster IP" })
            .Add(new NftElement(NftNames.HealthCheckNodePorts, "32013"))
            .Add(new NftElement("endpoints-x", "1") { Value = "10.244.1.2" });

        var operations = applier.TryEncode(tx);

        Assert.NotNull(operations);
        Assert.Equal(4, operations.Count);
        Assert.Equal(NfTablesElementChange.Delete, operations[0].Change);
        Assert.Equal("10.96.0.10 . tcp . 80", operations[0].Element.Text);
        Assert.Equal("0A60000A0600000000500000", Convert.ToHexString(operations[0].Element.Key));
        Assert.Equal(NfTablesVerdict.Goto("service-x"), operations[1].Element.Verdict);
        Assert.Equal("kube-system/dns:dns cluster IP", operations[1].Element.Comment);
        Assert.Equal("7D0D", Convert.ToHexString(operations[2].Element.Key));
        Assert.Equal("0AF40102", Convert.ToHexString(operations[3].Element.Data!));
    }

    /// <summary>
    /// An endpoint-slot element as the planner writes it carries its map's types, so a partial sync's
    /// element goes over netlink without the map's definition: a range becomes a start element (key
    /// LOW big-endian, data address . port) and a closing key HIGH + 1; a single slot N closes at N + 1;
    /// the range ending at 2^32 − 1 is open.
    /// </summary>
    [Fact]
    public void TryEncode_EndpointSlotRanges_BecomeStartAndClosingElements()
    {
        var applier = new NftNetlinkApplier(new NftCommandApplier(), openClient: () => throw new InvalidOperationException("no kernel here"));
        NftTransaction Tx() => new(IpFamily.IPv4, NftNames.Table);
        var types = new NftElementTypes(new(["integer"]), "ipv4_addr . inet_service", true);
        var map = NftNames.EndpointSlotsMap("tcp", 0);
        var tx = Tx()
            .Delete(new NftElement(map, "8192-10239") { Types = types })
            .Add(new NftElement(map, "12288-14335") { Value = "10.0.0.3 . 80", Types = types })
            .Add(new NftElement(map, "20000") { Value = "10.0.0.5 . 81", Types = types })
            .Add(new NftElement(map, "4294963200-4294967295") { Value = "10.0.0.4 . 80", Types = types });

        var operations = applier.TryEncode(tx, out var reason)?.Elements;

        Assert.Null(reason);
        Assert.NotNull(operations);
        Assert.Equal(("00002000", "00002800"), (Convert.ToHexString(operations[0].Element.Key), Convert.ToHexString(operations[0].Element.IntervalEndKey!)));
        Assert.Null(operations[0].Element.Data);
        Assert.Equal(("00003000", "00003800", "0A00000300500000"),
            (Convert.ToHexString(operations[1].Element.Key), Convert.ToHexString(operations[1].Element.IntervalEndKey!), Convert.ToHexString(operations[1].Element.Data!)));
        Assert.Equal(("00004E20", "00004E21"), (Convert.ToHexString(operations[2].Element.Key), Convert.ToHexString(operations[2].Element.IntervalEndKey!)));
        Assert.Equal(("FFFFF000", null, true), (Convert.ToHexString(operations[3].Element.Key), operations[3].Element.IntervalEndKey, operations[3].Element.IntervalOpen));

        // A prefix of an interval set of addresses: its first address and the one after its last.
        var prefix = applier.TryEncode(Tx().Add(new NftElement("source-ranges-y", "10.0.0.0/8") { Types = new(new(["ipv4_addr"]), null, true) }))!.Single().Element;
        Assert.Equal(("0A000000", "0B000000"), (Convert.ToHexString(prefix.Key), Convert.ToHexString(prefix.IntervalEndKey!)));
        var everything = applier.TryEncode(Tx().Add(new NftElement("source-ranges-y", "0.0.0.0/0") { Types = new(new(["ipv4_addr"]), null, true) }))!.Single().Element;
        Assert.Equal(("00000000", true), (Convert.ToHexString(everything.Key), everything.IntervalOpen));

        // Negative controls: a range that is not one, a prefix with host bits, and an interval set of concatenations go to nft.
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(map, "14335-12288") { Value = "10.0.0.3 . 80", Types = types })));
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement("source-ranges-y", "10.0.0.1/8") { Types = new(new(["ipv4_addr"]), null, true) })));
        applier.TryEncode(Tx().Add(new NftElement("ranges-z", "10.0.0.0/8", "80") { Types = new(new(["ipv4_addr", "inet_service"]), null, true) }), out var concatenated);
        Assert.Contains("not keyed by a 32-bit integer or an address", concatenated);
        // An integer key outside an interval set is host byte order in nft: not encoded here.
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement("counters", "7") { Types = new(new(["integer"]), null, false) })));
    }

    /// <summary>
    /// What each element change carries: an add its value (data or verdict), comment and a range's closing key or
    /// open flag; a delete its key and closing key only (the open flag is user data, which a delete does not send).
    /// </summary>
    [Fact]
    public void TryEncode_ElementChanges_CarryExactlyWhatTheirVerbNeeds()
    {
        var applier = new NftNetlinkApplier(new NftCommandApplier(), openClient: () => throw new InvalidOperationException("no kernel here"));
        NftTransaction Tx() => new(IpFamily.IPv4, NftNames.Table);
        var slots = new NftElementTypes(new(["integer"]), "ipv4_addr . inet_service", true);
        var map = NftNames.EndpointSlotsMap("tcp", 0);
        var open = new NftElement(map, "4294963200-4294967295") { Value = "10.0.0.4 . 80", Types = slots };

        var added = applier.TryEncode(Tx().Add(open))!.Single().Element;
        var deleted = applier.TryEncode(Tx().Delete(open with { Value = null }))!.Single().Element;

        Assert.Equal((true, "0A00000400500000"), (added.IntervalOpen, Convert.ToHexString(added.Data!)));
        Assert.Equal(("FFFFF000", false, null, null, null), (Convert.ToHexString(deleted.Key), deleted.IntervalOpen, deleted.IntervalEndKey, deleted.Data, deleted.Comment));

        var verdicts = new NftElementTypes(new(["ipv4_addr", "inet_proto", "inet_service"]), "verdict", false);
        var service = new NftElement(NftNames.ServiceIPs, "10.96.0.10", "tcp", "80") { Value = "goto service-x", Comment = "ns/web:http cluster IP", Types = verdicts };
        var withVerdict = applier.TryEncode(Tx().Add(service))!.Single().Element;
        Assert.Equal(("0A60000A0600000000500000", "10.96.0.10 . tcp . 80", "ns/web:http cluster IP", "goto service-x", null),
            (Convert.ToHexString(withVerdict.Key), withVerdict.Text, withVerdict.Comment, withVerdict.Verdict?.ToString(), withVerdict.IntervalEndKey));
        var gone = applier.TryEncode(Tx().Delete(service with { Value = null, Comment = null }))!.Single().Element;
        Assert.Equal(("0A60000A0600000000500000", null, null), (Convert.ToHexString(gone.Key), gone.Comment, gone.Verdict));

        // A range of addresses in an interval set: its first address, and the one after its last.
        var range = applier.TryEncode(Tx().Add(new NftElement("source-ranges-y", "10.0.0.5-10.0.1.255") { Types = new(new(["ipv4_addr"]), null, true) }))!.Single().Element;
        Assert.Equal(("0A000005", "0A000200"), (Convert.ToHexString(range.Key), Convert.ToHexString(range.IntervalEndKey!)));
        // A data value with one part too many or too few is not encoded (the transaction goes to nft).
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(map, "12288-14335") { Value = "10.0.0.3 . 80 . 1", Types = slots })));
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(map, "12288-14335") { Value = "10.0.0.3", Types = slots })));
    }

    [Fact]
    public void TryEncode_AnythingElse_GoesThroughNft()
    {
        var applier = ApplierKnowingTheTable();
        NftTransaction Tx() => new(IpFamily.IPv4, NftNames.Table);

        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(NftNames.ServiceIPs, "10.96.0.11", "udp", "53") { Value = "goto service-x" }).Add(new NftRule("service-x", "counter drop"))));
        Assert.Null(applier.TryEncode(Tx().Flush(new NftTable())));
        Assert.Null(applier.TryEncode(Tx().Add(new NftSet("names") { Type = new(["ifname"]) })));
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement("unknown-set", "80"))));
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(NftNames.HealthCheckNodePorts, "http"))));
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(NftNames.ServiceIPs, "10.96.0.11", "udp", "53") { Value = "queue" })));
        Assert.Null(applier.TryEncode(new NftTransaction(IpFamily.IPv6, NftNames.Table).Add(new NftElement(NftNames.HealthCheckNodePorts, "32013"))));
        // Positive control: the same applier does encode a plain element.
        Assert.NotNull(applier.TryEncode(Tx().Add(new NftElement(NftNames.HealthCheckNodePorts, "32013"))));

        // Element-only transactions that go through nft say why; others need no reason.
        applier.TryEncode(Tx().Add(new NftRule("service-x", "counter drop")), out var counter);
        Assert.Equal("rule 'counter drop': 'counter' is not compiled to netlink here", counter);
        applier.TryEncode(Tx().Add(new NftSet("names") { Type = new(["ifname"]) }), out var ifname);
        Assert.Equal("set ip proxyplanes names: the type ifname is not encoded here", ifname);
        applier.TryEncode(Tx().Add(new NftElement(NftNames.HealthCheckNodePorts, "http")), out var value);
        Assert.Equal("cannot encode an element of ip proxyplanes health-check-nodeports (inet_service), e.g. http", value);
        applier.TryEncode(Tx().Add(new NftElement("unknown-set", "80")), out var unknown);
        Assert.Equal("the definition of ip proxyplanes unknown-set is not known", unknown);
        // Positive controls: a rule, a flush and a definition are encoded too.
        Assert.NotNull(applier.TryEncode(Tx().Add(new NftRule("service-x", "drop")).Flush(new NftMap(NftNames.ServiceIPs)).Add(new NftSet("s") { Type = new(["inet_service"]) }), out var none));
        Assert.Null(none);

        // A set deleted by an applied transaction is forgotten.
        applier.Learn(Tx().Delete(new NftSet(NftNames.HealthCheckNodePorts)));
        Assert.Null(applier.TryEncode(Tx().Add(new NftElement(NftNames.HealthCheckNodePorts, "32013"))));
    }
}

/// <summary>
/// The netlink applier against the kernel, in network namespaces each test makes: the same
/// transactions applied by nft in one namespace and by netlink in another leave the same table
/// (<c>nft -j list table</c>, comments included); a refused batch leaves the old table and names the element.
/// </summary>
public sealed partial class NftNetlinkApplierKernelTests(Xunit.Abstractions.ITestOutputHelper output)
{
    private static NetworkNamespace CreateNamespace(string suffix) => NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-{suffix}");

    private static NftNetlinkApplier NetlinkApplier(NetworkNamespace ns) =>
        new(new NftCommandApplier(["ip", "netns", "exec", ns.Name]), NullLogger.Instance, () => ns.Run(NfTablesClient.Open));

    /// <summary>The table as nft's JSON, without the handles (numbered per table, not part of what the table does).</summary>
    private static async Task<string> ListAsync(NetworkNamespace ns)
    {
        var json = (await ns.CheckedExecAsync(["nft", "-j", "list", "table", "ip", NftNames.Table], TimeSpan.FromSeconds(30))).StandardOutput;
        return Handle().Replace(json, "");
    }

    [GeneratedRegex(@",\s*""handle"":\s*\d+")]
    private static partial Regex Handle();

    private static DesiredState TwoServices() => StateBuilder.State(StateBuilder.Network,
        StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false)),
        StateBuilder.Port(StateBuilder.Info("dns", "10.96.0.53", 53, "dns", Protocol.UDP), StateBuilder.Endpoint("10.244.1.9", 53)));

    [Fact]
    public async Task ElementTransaction_ByNetlinkAndByNft_LeavesTheSameTable()
    {
        using var viaNft = CreateNamespace("nfte");
        using var viaNetlink = CreateNamespace("nfnl");
        var nft = new NftCommandApplier(["ip", "netns", "exec", viaNft.Name]);
        using var netlink = NetlinkApplier(viaNetlink);
        var full = new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(TwoServices()), null, null).Transaction;
        await nft.ApplyAsync(full, default);
        await netlink.ApplyAsync(full, default);
        Assert.Equal((1, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));
        Assert.Equal(await ListAsync(viaNft), await ListAsync(viaNetlink));

        var serviceChain = full.Operations.Select(o => o.Object).OfType<NftChain>().First(c => c.Name.StartsWith("service-", StringComparison.Ordinal)).Name;
        var elements = new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Delete(new NftElement(NftNames.ServiceIPs, "10.96.0.53", "udp", "53"))
            .Add(new NftElement(NftNames.ServiceIPs, "10.96.7.7", "tcp", "8443") { Value = $"goto {serviceChain}", Comment = "default/extra:https cluster IP" })
            .Add(new NftElement(NftNames.NoEndpointServices, "10.96.0.53", "udp", "53") { Value = "drop", Comment = "default/dns:dns cluster IP" })
            .Add(new NftElement(NftNames.HealthCheckNodePorts, "32013"));
        await nft.ApplyAsync(elements, default);
        await netlink.ApplyAsync(elements, default);

        Assert.Equal((2, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));
        var listing = await ListAsync(viaNetlink);
        Assert.Contains("default/extra:https cluster IP", listing);
        Assert.Equal(await ListAsync(viaNft), listing);
    }

    /// <summary>
    /// Endpoint slots (interval map elements) over netlink: the planner's own slot elements deleted and
    /// added back with another endpoint, by nft in one namespace and by netlink in the other, leave
    /// the same table.
    /// </summary>
    [Fact]
    public async Task EndpointSlotTransaction_ByNetlinkAndByNft_LeavesTheSameTable()
    {
        using var viaNft = CreateNamespace("nfse");
        using var viaNetlink = CreateNamespace("nfsl");
        var nft = new NftCommandApplier(["ip", "netns", "exec", viaNft.Name]);
        using var netlink = NetlinkApplier(viaNetlink);
        var full = new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(TwoServices()), null, null).Transaction;
        await nft.ApplyAsync(full, default);
        await netlink.ApplyAsync(full, default);
        var slots = full.Operations.Select(o => o.Object).OfType<NftElement>().Where(e => NftNames.IsEndpointSlotsMap(e.Set)).ToList();
        Assert.Equal(3, slots.Count);
        var replaced = slots.First(e => e.Value!.StartsWith("10.244.2.3", StringComparison.Ordinal));

        // Replace one endpoint of a pool (delete + add of its range), and split another range in two.
        var dns = slots.Single(e => e.Set.Contains("-udp-", StringComparison.Ordinal));
        var (low, high) = (long.Parse(dns.KeyText.Split('-')[0]), long.Parse(dns.KeyText.Split('-')[1]));
        var tx = new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Delete(replaced with { Value = null })
            .Add(replaced with { Value = "10.244.3.4 . 8080" })
            .Delete(dns with { Value = null })
            .Add(dns with { Key = new([$"{low}-{low + 2047}"]) })
            .Add(dns with { Key = new([$"{low + 2048}-{high}"]), Value = "10.244.1.10 . 53" });
        await nft.ApplyAsync(tx, default);
        await netlink.ApplyAsync(tx, default);

        Assert.Equal((2, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));
        var listing = await ListAsync(viaNetlink);
        Assert.Contains("[\"10.244.3.4\", 8080]", listing);
        Assert.DoesNotContain("[\"10.244.2.3\", 8080]", listing);
        Assert.Contains("[\"10.244.1.10\", 53]", listing);
        Assert.Equal(await ListAsync(viaNft), listing);
    }

    /// <summary>
    /// The daemon's path: endpoint changes through <see cref="NftablesBackend"/> (partial syncs) go over
    /// netlink (the applier's netlink count grows by one per change, nft's not at all) and leave the
    /// same table as the backend applying everything through nft.
    /// </summary>
    [Fact]
    public async Task EndpointChange_ThroughTheBackend_GoesOverNetlink_AndMatchesNft()
    {
        using var viaNft = CreateNamespace("nfbe");
        using var viaNetlink = CreateNamespace("nfbl");
        using var metrics = new ProxyMetrics();
        using var netlink = NetlinkApplier(viaNetlink);
        var nftBackend = new NftablesBackend([IpFamily.IPv4], new NftCommandApplier(["ip", "netns", "exec", viaNft.Name]), metrics, NullLogger.Instance);
        var netlinkBackend = new NftablesBackend([IpFamily.IPv4], netlink, metrics, NullLogger.Instance);
        var before = TwoServices();
        await nftBackend.SyncAsync(StateBuilder.Full(before), default);
        await netlinkBackend.SyncAsync(StateBuilder.Full(before), default);
        var (netlinkBefore, nftBefore) = (netlink.NetlinkTransactions, netlink.NftTransactions);

        DesiredState[] changes =
        [
            // One endpoint replaced.
            StateBuilder.State(StateBuilder.Network,
                StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.3.4", local: false)),
                StateBuilder.Port(StateBuilder.Info("dns", "10.96.0.53", 53, "dns", Protocol.UDP), StateBuilder.Endpoint("10.244.1.9", 53))),
            // One endpoint added (every range of the pool moves).
            StateBuilder.State(StateBuilder.Network,
                StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.3.4", local: false), StateBuilder.Endpoint("10.244.4.5", local: false)),
                StateBuilder.Port(StateBuilder.Info("dns", "10.96.0.53", 53, "dns", Protocol.UDP), StateBuilder.Endpoint("10.244.1.9", 53))),
        ];
        var previous = before;
        foreach (var state in changes)
        {
            var request = new SyncRequest(state, false, StateBuilder.Changed(previous, state));
            await nftBackend.SyncAsync(request, default);
            await netlinkBackend.SyncAsync(request, default);
            Assert.Equal(await ListAsync(viaNft), await ListAsync(viaNetlink));
            previous = state;
        }

        output.WriteLine($"{netlink.NetlinkTransactions - netlinkBefore} over netlink, {netlink.NftTransactions - nftBefore} through nft");
        Assert.Equal((changes.Length, 0), (netlink.NetlinkTransactions - netlinkBefore, netlink.NftTransactions - nftBefore));
        Assert.Contains("10.244.4.5", await ListAsync(viaNetlink));
    }

    [Fact]
    public async Task RefusedElementTransaction_LeavesTheTable_AndNamesTheElement()
    {
        using var ns = CreateNamespace("nfer");
        using var applier = NetlinkApplier(ns);
        await applier.ApplyAsync(new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(TwoServices()), null, null).Transaction, default);
        var before = await ListAsync(ns);

        var tx = new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Add(new NftElement(NftNames.HealthCheckNodePorts, "32013"))
            .Delete(new NftElement(NftNames.ServiceIPs, "10.96.9.9", "tcp", "80"));
        var e = await Assert.ThrowsAsync<NftException>(() => applier.ApplyAsync(tx, default));

        Assert.Contains("nftables delete element ip proxyplanes service-ips { 10.96.9.9 . tcp . 80 }: No such file or directory (ENOENT)", e.Message);
        Assert.Equal(before, await ListAsync(ns));
        Assert.Equal(1, applier.NetlinkTransactions);
        // Positive control: the valid half alone is applied, over netlink.
        await applier.ApplyAsync(new NftTransaction(IpFamily.IPv4, NftNames.Table).Add(new NftElement(NftNames.HealthCheckNodePorts, "32013")), default);
        Assert.Equal(2, applier.NetlinkTransactions);
        Assert.NotEqual(before, await ListAsync(ns));
    }

    /// <summary>
    /// A transaction of 5,002 changes (beyond the socket's 64 KiB buffer, so written in chunks; beyond
    /// 2,048 messages only the last asks for an ACK), whose requests the applier makes while the socket
    /// writes the batch: refused by its last change, nothing of it stays and the error names that
    /// change; with a rule netlink does not compile as its last change, nothing was sent over netlink
    /// and nft applies all of it; the same elements alone go over netlink (the positive control).
    /// </summary>
    [Fact]
    public async Task LargeStreamedTransaction_RefusedByItsLastChange_OrNotEncodable_AppliesAllOrNothing()
    {
        using var ns = CreateNamespace("nfls");
        using var applier = NetlinkApplier(ns);
        await applier.ApplyAsync(new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(TwoServices()), null, null).Transaction, default);
        var before = await ListAsync(ns);
        var set = new NftSet("bulk") { Type = new(["ipv4_addr", "inet_service"]) };
        NftTransaction Bulk()
        {
            var tx = new NftTransaction(IpFamily.IPv4, NftNames.Table).Add(set);
            for (var i = 0; i < 5000; i++)
                tx.Add(new NftElement(set.Name, $"10.{100 + i / 250}.{i % 250}.1", $"{20000 + i}") { Types = NftElementTypes.Of(set), Comment = $"element {i} with a comment long enough to fill chunks" });
            return tx;
        }

        var refused = Bulk().Delete(new NftElement(NftNames.ServiceIPs, "10.96.9.9", "tcp", "80"));
        var e = await Assert.ThrowsAsync<NftException>(() => applier.ApplyAsync(refused, default));
        Assert.Contains("(5002 changes), nothing applied: nftables delete element ip proxyplanes service-ips { 10.96.9.9 . tcp . 80 }: No such file or directory (ENOENT)", e.Message);
        Assert.Equal(before, await ListAsync(ns));
        Assert.Equal((1, 0), (applier.NetlinkTransactions, applier.NftTransactions));

        var serviceChain = (await ns.CheckedExecAsync(["nft", "list", "chains", "ip"], TimeSpan.FromSeconds(10))).StandardOutput;
        var chain = Regex.Match(serviceChain, @"chain (service-\S+)").Groups[1].Value;
        var notEncodable = Bulk().Add(new NftRule(chain, "counter"));
        await applier.ApplyAsync(notEncodable, default);
        Assert.Equal((1, 1), (applier.NetlinkTransactions, applier.NftTransactions));
        var listing = await ListAsync(ns);
        Assert.Contains("element 4999 with a comment", listing);
        Assert.Contains("\"counter\"", listing);

        // Positive control: the elements alone, into the emptied set, go over netlink.
        var elements = Bulk();
        var again = new NftTransaction(IpFamily.IPv4, NftNames.Table).Flush(set);
        foreach (var operation in elements.Operations.Skip(1)) again.Add(operation.Object);
        await applier.ApplyAsync(again, default);
        Assert.Equal((2, 1), (applier.NetlinkTransactions, applier.NftTransactions));
        Assert.Contains("element 4999 with a comment", await ListAsync(ns));
    }

    [Fact]
    public async Task NetlinkRefused_FallsBackToNft_AndRemembers()
    {
        using var ns = CreateNamespace("nffb");
        var opened = 0;
        using var applier = new NftNetlinkApplier(new NftCommandApplier(["ip", "netns", "exec", ns.Name]), NullLogger.Instance, () =>
        {
            opened++;
            throw new NetlinkException(LinuxUapi.Errno.EPERM, "socket(AF_NETLINK, NETLINK_NETFILTER)");
        });
        await applier.ApplyAsync(new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(TwoServices()), null, null).Transaction, default);

        for (var port = 32013; port < 32015; port++)
            await applier.ApplyAsync(new NftTransaction(IpFamily.IPv4, NftNames.Table).Add(new NftElement(NftNames.HealthCheckNodePorts, $"{port}")), default);

        Assert.Equal(1, opened);
        Assert.Contains("EPERM", applier.Refusal);
        Assert.Equal((0, 3), (applier.NetlinkTransactions, applier.NftTransactions));
        Assert.Contains("32013, 32014", (await ns.CheckedExecAsync(["nft", "list", "set", "ip", NftNames.Table, NftNames.HealthCheckNodePorts], TimeSpan.FromSeconds(10))).StandardOutput);
    }

    /// <summary>
    /// The canary check of every periodic sync, through both appliers against the kernel: intact after
    /// a sync (the positive control, and again after each repair), gone when its rule is flushed, the
    /// whole table flushed, the chain deleted or the table deleted, and not fooled by a <c>canary</c>
    /// chain with a rule in another table or in the other family's <c>proxyplanes</c> table. The netlink
    /// applier does every check over netlink (a GETRULE dump of that chain), none through nft.
    /// </summary>
    [Theory]
    [InlineData("netlink")]
    [InlineData("nft")]
    public async Task Canary_IntactAfterSync_GoneWhenFlushedOrDeleted_BothAppliers(string kind)
    {
        using var ns = CreateNamespace(kind == "netlink" ? "nfcl" : "nfcn");
        using var metrics = new ProxyMetrics();
        using var netlink = NetlinkApplier(ns);
        INftablesApplier applier = kind == "netlink" ? netlink : new NftCommandApplier(["ip", "netns", "exec", ns.Name]);
        var backend = new NftablesBackend([IpFamily.IPv4], applier, metrics, NullLogger.Instance);
        var state = StateBuilder.Full(TwoServices());
        Task Nft(params string[] args) => ns.CheckedExecAsync(["nft", .. args], TimeSpan.FromSeconds(30));

        Assert.False(await backend.CanaryIntactAsync(default)); // no table yet
        // Decoys: a canary chain with its rule in another ip table and in ip6 proxyplanes.
        foreach (var (family, table) in new[] { ("ip", "other"), ("ip6", NftNames.Table) })
        {
            await Nft("add", "table", family, table);
            await Nft("add", "chain", family, table, NftNames.Canary);
            await Nft("add", "rule", family, table, NftNames.Canary, "return");
        }
        Assert.False(await backend.CanaryIntactAsync(default)); // still no ip proxyplanes table

        string[][] damages =
        [
            ["flush", "chain", "ip", NftNames.Table, NftNames.Canary],
            ["flush", "table", "ip", NftNames.Table],
            ["delete", "chain", "ip", NftNames.Table, NftNames.Canary],
            ["delete", "table", "ip", NftNames.Table],
        ];
        foreach (var damage in damages)
        {
            await backend.SyncAsync(state, default);
            Assert.True(await backend.CanaryIntactAsync(default), $"intact before: nft {string.Join(' ', damage)}");
            await Nft(damage);
            Assert.False(await backend.CanaryIntactAsync(default), $"gone after: nft {string.Join(' ', damage)}");
        }
        await backend.SyncAsync(state, default);
        Assert.True(await backend.CanaryIntactAsync(default));

        var checks = 2 + 2 * damages.Length + 1;
        output.WriteLine($"{kind}: {netlink.NetlinkReads} canary checks over netlink");
        Assert.Equal(kind == "netlink" ? checks : 0, netlink.NetlinkReads);
        Assert.Null(netlink.Refusal);
    }

    /// <summary>Netlink refused (EPERM): the canary is read through nft instead, and still tells intact from gone.</summary>
    [Fact]
    public async Task Canary_NetlinkRefused_ReadThroughNft()
    {
        using var ns = CreateNamespace("nfcf");
        using var metrics = new ProxyMetrics();
        using var applier = new NftNetlinkApplier(new NftCommandApplier(["ip", "netns", "exec", ns.Name]), NullLogger.Instance,
            () => throw new NetlinkException(LinuxUapi.Errno.EPERM, "socket(AF_NETLINK, NETLINK_NETFILTER)"));
        var backend = new NftablesBackend([IpFamily.IPv4], applier, metrics, NullLogger.Instance);

        Assert.False(await backend.CanaryIntactAsync(default));
        Assert.Contains("EPERM", applier.Refusal);
        await backend.SyncAsync(StateBuilder.Full(TwoServices()), default);
        Assert.True(await backend.CanaryIntactAsync(default));
        await ns.CheckedExecAsync(["nft", "flush", "chain", "ip", NftNames.Table, NftNames.Canary], TimeSpan.FromSeconds(30));
        Assert.False(await backend.CanaryIntactAsync(default));
        Assert.Equal((0, 0), (applier.NetlinkReads, applier.NetlinkTransactions));
        Assert.True(applier.NftTransactions > 0);
    }

    /// <summary>
    /// The partial-sync equivalence, in the kernel: the same random sequence of syncs through the
    /// backend with nft in one namespace and with the netlink applier in another leaves the same table
    /// after every step.
    /// </summary>
    [Theory]
    [InlineData(2)]
    [InlineData(5)]
    [InlineData(11)]
    public async Task RandomSequence_NetlinkApplier_LeavesTheSameTableAsNft(int seed)
    {
        using var viaNft = CreateNamespace("nfrq");
        using var viaNetlink = CreateNamespace("nfrn");
        using var metrics = new ProxyMetrics();
        using var netlink = NetlinkApplier(viaNetlink);
        var nftBackend = new NftablesBackend([IpFamily.IPv4], new NftCommandApplier(["ip", "netns", "exec", viaNft.Name]), metrics, NullLogger.Instance);
        var netlinkBackend = new NftablesBackend([IpFamily.IPv4], netlink, metrics, NullLogger.Instance);
        var cluster = new RandomCluster(seed);
        DesiredState? previous = null;
        for (var step = 0; step < 25; step++)
        {
            cluster.Mutate();
            var state = cluster.State(StateBuilder.Network);
            var request = previous is null || step % 7 == 0 ? StateBuilder.Full(state) : new SyncRequest(state, false, StateBuilder.Changed(previous, state));
            await nftBackend.SyncAsync(request, default);
            await netlinkBackend.SyncAsync(request, default);
            Assert.True(await ListAsync(viaNft) == await ListAsync(viaNetlink), $"seed {seed} step {step}: the tables differ");
            previous = state;
        }
        output.WriteLine($"seed {seed}: {netlink.NetlinkTransactions} transactions over netlink, {netlink.NftTransactions} through nft");
        // Every transaction, full or partial, went over netlink (a sync that changes nothing sends none).
        Assert.Equal(0, netlink.NftTransactions);
        Assert.True(netlink.NetlinkTransactions > 0);
    }
}
