using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;
using ProxyPlanes.Sandbox;
using Xunit.Abstractions;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>
/// Not a test: the numbers of docs/bench/2026-12-07-nftables-netlink-elements. One element change
/// on a table of 10,000 services × 2 endpoints (the planner's full sync), by nft and by netlink,
/// interleaved in the same run. Runs only with PROXYPLANES_BENCH_NFT_NETLINK=1 (it takes a minute):
/// <c>PROXYPLANES_BENCH_NFT_NETLINK=1 dotnet test tests/Backends.Nftables.Tests --no-build
/// --filter NftNetlinkBenchmark --logger "console;verbosity=detailed"</c>.
/// </summary>
public sealed class NftNetlinkBenchmark(ITestOutputHelper output)
{
    private const int Services = 10_000;
    private const int Rounds = 15;

    [BenchFact]
    public async Task OneElement_NftVersusNetlink_At10000Services()
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-nfbe");
        var nft = new NftCommandApplier(["ip", "netns", "exec", ns.Name]);
        using var netlink = new NftNetlinkApplier(nft, NullLogger.Instance, () => ns.Run(NfTablesClient.Open));

        var ports = Enumerable.Range(0, Services).Select(i =>
        {
            var ip = new System.Net.IPAddress(BitConverter.GetBytes(System.Net.IPAddress.HostToNetworkOrder(0x0A600000 + i + 1))).ToString();
            var pod = 0x0AF40000 + (2 * i) + 2;
            return StateBuilder.Port(StateBuilder.Info($"svc-{i:D5}", ip),
                StateBuilder.Endpoint(new System.Net.IPAddress(BitConverter.GetBytes(System.Net.IPAddress.HostToNetworkOrder(pod))).ToString()),
                StateBuilder.Endpoint(new System.Net.IPAddress(BitConverter.GetBytes(System.Net.IPAddress.HostToNetworkOrder(pod + 1))).ToString(), local: false));
        }).ToArray();
        var full = new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(StateBuilder.State(StateBuilder.Network, ports)), null, null).Transaction;
        var load = Stopwatch.StartNew();
        await netlink.ApplyAsync(full, default); // through nft (definitions), and the applier learns the set types
        output.WriteLine($"full load: {load.Elapsed.TotalSeconds:F1} s, {full.Count(NftVerb.Add, "chain")} chains, {full.Count(NftVerb.Add, "rule")} rules, {full.Count(NftVerb.Add, "element")} elements");
        var serviceChain = full.Operations.Select(o => o.Object).OfType<NftChain>().First(c => c.Name.StartsWith("service-", StringComparison.Ordinal)).Name;

        var cases = new (string Name, NftElement Element)[]
        {
            ("plain set element (health-check-nodeports)", new NftElement(NftNames.HealthCheckNodePorts, "32013")),
            ("verdict element, drop (no-endpoint-services)", new NftElement(NftNames.NoEndpointServices, "10.97.0.1", "tcp", "80") { Value = "drop", Comment = "bench/x:http cluster IP" }),
            ("verdict element, goto a service chain (service-ips)", new NftElement(NftNames.ServiceIPs, "10.97.0.1", "tcp", "80") { Value = $"goto {serviceChain}", Comment = "bench/x:http cluster IP" }),
        };
        output.WriteLine($"load average before: {File.ReadAllText("/proc/loadavg").Trim()}");
        output.WriteLine("| change | nft add p50 | netlink add p50 | nft delete p50 | netlink delete p50 | add ratio |");
        output.WriteLine("| --- | --- | --- | --- | --- | --- |");
        foreach (var (name, element) in cases)
        {
            var add = new NftTransaction(IpFamily.IPv4, NftNames.Table).Add(element);
            var delete = new NftTransaction(IpFamily.IPv4, NftNames.Table).Delete(element with { Value = null, Comment = null });
            var times = new Dictionary<string, List<double>> { ["nft add"] = [], ["netlink add"] = [], ["nft delete"] = [], ["netlink delete"] = [] };
            for (var round = 0; round < Rounds; round++)
            {
                // Interleaved, so both see the same load.
                times["nft add"].Add(await TimeAsync(nft, add));
                times["nft delete"].Add(await TimeAsync(nft, delete));
                times["netlink add"].Add(await TimeAsync(netlink, add));
                times["netlink delete"].Add(await TimeAsync(netlink, delete));
            }
            double P50(string key) => times[key].Order().ElementAt(times[key].Count / 2);
            output.WriteLine($"| {name} | {P50("nft add"):F1} ms | {P50("netlink add"):F2} ms | {P50("nft delete"):F1} ms | {P50("netlink delete"):F2} ms | {P50("nft add") / P50("netlink add"):F0}× |");
        }
        output.WriteLine($"load average after: {File.ReadAllText("/proc/loadavg").Trim()}");
        Assert.Equal(Rounds * 2 * cases.Length, netlink.NetlinkTransactions);
    }

    /// <summary>
    /// One endpoint change (one endpoint of one service replaced, then put back: a delete and an add
    /// of its slot range) through <see cref="NftablesBackend"/>'s partial sync, as the daemon does it,
    /// with nft in one namespace and the netlink applier in another, interleaved; planning included.
    /// </summary>
    [BenchFact]
    public async Task OneEndpointChange_ThroughTheBackend_NftVersusNetlink_At10000Services()
    {
        using var pair = new BackendPair("nfb");
        var (nftBackend, netlinkBackend, netlink) = (pair.Nft, pair.Netlink, pair.Applier);
        var ports = ManyPorts();
        var before = StateBuilder.State(StateBuilder.Network, ports);
        var changedPorts = ports.ToArray();
        changedPorts[4321] = StateBuilder.Port(StateBuilder.Info("svc-04321", Ip(0x0A600000 + 4321 + 1)),
            StateBuilder.Endpoint(Ip(0x0AF40000 + (2 * 4321) + 2)), StateBuilder.Endpoint("10.250.0.1", local: false));
        var after = StateBuilder.State(StateBuilder.Network, changedPorts);
        var load = Stopwatch.StartNew();
        await nftBackend.SyncAsync(StateBuilder.Full(before), default);
        await netlinkBackend.SyncAsync(StateBuilder.Full(before), default);
        output.WriteLine($"two full loads: {load.Elapsed.TotalSeconds:F1} s");
        var (netlinkBefore, nftBefore) = (netlink.NetlinkTransactions, netlink.NftTransactions);

        output.WriteLine($"load average before: {File.ReadAllText("/proc/loadavg").Trim()}");
        var times = await AlternateAsync(pair, before, after, 2 * Rounds);
        double P50(string key) => times[key].Order().ElementAt(times[key].Count / 2);
        output.WriteLine("| change | nft p50 | netlink p50 | nft / netlink |");
        output.WriteLine("| --- | --- | --- | --- |");
        output.WriteLine($"| one endpoint replaced (backend partial sync, {2 * Rounds} changes) | {P50("nft"):F1} ms | {P50("netlink"):F2} ms | {P50("nft") / P50("netlink"):F0}× |");
        output.WriteLine($"load average after: {File.ReadAllText("/proc/loadavg").Trim()}");
        // Every change went over netlink.
        Assert.Equal((2 * Rounds, 0), (netlink.NetlinkTransactions - netlinkBefore, netlink.NftTransactions - nftBefore));
    }

    /// <summary>
    /// The numbers of docs/bench/2026-12-07-nft-netlink-rules: a cold full sync of 10,000 services × 2
    /// endpoints into an empty namespace, and one service added then removed (partial syncs with
    /// chains, rules and verdict elements), through <see cref="NftablesBackend"/> with nft in one
    /// namespace and with the netlink applier (whole transactions) in another, interleaved.
    /// </summary>
    [BenchFact]
    public async Task ColdSyncAndServiceAdded_NftVersusNetlink_At10000Services()
    {
        using var pair = new BackendPair("nfc");
        var (nftBackend, netlinkBackend, netlink) = (pair.Nft, pair.Netlink, pair.Applier);
        var ports = ManyPorts();
        var before = StateBuilder.State(StateBuilder.Network, ports);
        var after = StateBuilder.State(StateBuilder.Network, [.. ports, StateBuilder.Port(StateBuilder.Info("svc-new", "10.97.0.1"),
            StateBuilder.Endpoint("10.250.0.1"), StateBuilder.Endpoint("10.250.0.2", local: false))]);

        output.WriteLine($"load average before: {File.ReadAllText("/proc/loadavg").Trim()}");
        var cold = Stopwatch.StartNew();
        await nftBackend.SyncAsync(StateBuilder.Full(before), default);
        var nftCold = cold.Elapsed.TotalSeconds;
        cold.Restart();
        await netlinkBackend.SyncAsync(StateBuilder.Full(before), default);
        var netlinkCold = cold.Elapsed.TotalSeconds;
        output.WriteLine($"| cold full sync | {nftCold:F2} s | {netlinkCold:F2} s | {nftCold / netlinkCold:F1}× |");
        Assert.Equal((1, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));

        var times = await AlternateAsync(pair, before, after, 2 * 5);
        double P50(string key) => times[key].Order().ElementAt(times[key].Count / 2);
        output.WriteLine($"| one service added or removed (partial sync, 10) p50 | {P50("nft"):F1} ms | {P50("netlink"):F1} ms | {P50("nft") / P50("netlink"):F1}× |");
        output.WriteLine($"load average after: {File.ReadAllText("/proc/loadavg").Trim()}");
        Assert.Equal((11, 0), (netlink.NetlinkTransactions, netlink.NftTransactions));
    }

    private static string Ip(int value) => new System.Net.IPAddress(BitConverter.GetBytes(System.Net.IPAddress.HostToNetworkOrder(value))).ToString();

    /// <summary>10,000 services, each with a cluster IP and two endpoints (one local).</summary>
    private static ServicePortState[] ManyPorts() => Enumerable.Range(0, Services).Select(i => StateBuilder.Port(StateBuilder.Info($"svc-{i:D5}", Ip(0x0A600000 + i + 1)),
        StateBuilder.Endpoint(Ip(0x0AF40000 + (2 * i) + 2)), StateBuilder.Endpoint(Ip(0x0AF40000 + (2 * i) + 3), local: false))).ToArray();

    /// <summary>Two namespaces, a backend applying through nft in one and through the netlink applier in the other.</summary>
    private sealed class BackendPair : IDisposable
    {
        private readonly NetworkNamespace _nftNs, _netlinkNs;
        private readonly ProxyPlanes.Metrics.ProxyMetrics _metrics = new();

        public BackendPair(string suffix)
        {
            _nftNs = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-{suffix}n");
            _netlinkNs = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-{suffix}l");
            var netlinkNs = _netlinkNs;
            Applier = new NftNetlinkApplier(new NftCommandApplier(["ip", "netns", "exec", netlinkNs.Name]), NullLogger.Instance, () => netlinkNs.Run(NfTablesClient.Open));
            Nft = new NftablesBackend([IpFamily.IPv4], new NftCommandApplier(["ip", "netns", "exec", _nftNs.Name]), _metrics, NullLogger.Instance);
            Netlink = new NftablesBackend([IpFamily.IPv4], Applier, _metrics, NullLogger.Instance);
        }

        public NftablesBackend Nft { get; }
        public NftablesBackend Netlink { get; }
        public NftNetlinkApplier Applier { get; }

        public void Dispose()
        {
            Applier.Dispose();
            _metrics.Dispose();
            _netlinkNs.Dispose();
            _nftNs.Dispose();
        }
    }

    /// <summary>Partial syncs between two states, back and forth, each through nft then through netlink: the wall times of each.</summary>
    private static async Task<Dictionary<string, List<double>>> AlternateAsync(BackendPair pair, DesiredState before, DesiredState after, int rounds)
    {
        var times = new Dictionary<string, List<double>> { ["nft"] = [], ["netlink"] = [] };
        var (from, to) = (before, after);
        for (var round = 0; round < rounds; round++)
        {
            var request = new SyncRequest(to, false, StateBuilder.Changed(from, to));
            var stopwatch = Stopwatch.StartNew();
            await pair.Nft.SyncAsync(request, default);
            times["nft"].Add(stopwatch.Elapsed.TotalMilliseconds);
            stopwatch.Restart();
            await pair.Netlink.SyncAsync(request, default);
            times["netlink"].Add(stopwatch.Elapsed.TotalMilliseconds);
            (from, to) = (to, from);
        }
        return times;
    }

    private static async Task<double> TimeAsync(INftablesApplier applier, NftTransaction transaction)
    {
        var stopwatch = Stopwatch.StartNew();
        await applier.ApplyAsync(transaction, default);
        return stopwatch.Elapsed.TotalMilliseconds;
    }
}

/// <summary>A fact that runs only when PROXYPLANES_BENCH_NFT_NETLINK=1.</summary>
public sealed class BenchFactAttribute : FactAttribute
{
    public BenchFactAttribute()
    {
        if (Environment.GetEnvironmentVariable("PROXYPLANES_BENCH_NFT_NETLINK") != "1")
            Skip = "a measurement, not a test: set PROXYPLANES_BENCH_NFT_NETLINK=1 to run it";
    }
}
