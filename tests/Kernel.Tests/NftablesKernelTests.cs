using System.Collections.Immutable;
using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The nftables data plane against the real kernel, always inside network namespaces made for
/// the test: every golden transaction is accepted by nft (checked, then applied, the partial one
/// on top of the full one), and real packets follow the rules the backend programs.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class NftablesKernelTests
{
    private const string WebIP = "10.96.0.10";

    public static IEnumerable<object[]> GoldenCases() =>
        from dir in Directory.GetDirectories(RepoPaths.TestData).Order(StringComparer.Ordinal)
        where File.Exists(Path.Combine(dir, "nft.golden"))
        select new object[] { Path.GetFileName(dir) };

    [Theory]
    [MemberData(nameof(GoldenCases))]
    public async Task GoldenTransaction_InFreshNamespace_IsAcceptedByNft(string caseName)
    {
        var dir = Path.Combine(RepoPaths.TestData, caseName);
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-nftg");

        foreach (var file in new[] { "nft.golden", "nft-partial.golden" }.Where(f => File.Exists(Path.Combine(dir, f))))
        {
            var path = Path.Combine(dir, file);
            var check = await ns.ExecAsync(["nft", "--check", "-f", path], TimeSpan.FromSeconds(30));
            Assert.True(check.Succeeded, $"{caseName}/{file}: nft --check: {check.StandardError}");
            // Applied for real too: the partial transaction only makes sense on top of the full one.
            var apply = await ns.ExecAsync(["nft", "-f", path], TimeSpan.FromSeconds(30));
            Assert.True(apply.Succeeded, $"{caseName}/{file}: nft -f: {apply.StandardError}");
            if (file != "nft.golden") continue;
            // nft reads the table back before every later transaction: it must still parse what it wrote
            // (nft 1.0.6 cannot read back a map declared "typeof … : ip daddr . th dport").
            var again = await ns.ExecAsync(["nft", "-f", path], TimeSpan.FromSeconds(30));
            Assert.True(again.Succeeded, $"{caseName}/{file} over itself: nft -f: {again.StandardError}");
        }
    }

    [Fact]
    public async Task Backend_InNodeNamespace_ClusterIPReachesBothPods_PartialSyncRemovesOne_CleanupRemovesTable()
    {
        await using var sandbox = await ClusterSandbox.CreateAsync();
        var pod0 = await sandbox.AddPodAsync("pod-0", [8080]);
        var pod1 = await sandbox.AddPodAsync("pod-1", [8080]);
        var applier = new NftCommandApplier(["ip", "netns", "exec", sandbox.Node.Name]);
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4, IpFamily.IPv6], applier, metrics, NullLogger.Instance);
        var network = new NodeNetwork
        {
            NodeName = sandbox.NodeName,
            LocalDetector = new LocalTrafficDetector(LocalDetectMode.ClusterCidr, new EquatableArray<IpPrefix>([IpPrefix.Parse(sandbox.ClusterCidr)])),
        };
        try
        {
            await backend.SyncAsync(new SyncRequest(State(network, pod0.IP, pod1.IP), Full: true, new HashSet<ServicePortName>()), CancellationToken.None);

            var answers = await ProxyScenario.SpreadAsync(sandbox.Client, WebIP, 80, count: 30);
            Assert.Equal(["pod-0", "pod-1"], answers.Keys.Order());
            // Off-cluster client: masqueraded, so the pod sees the node.
            var who = await sandbox.Client.HttpGetAsync(WebIP, 80, "/cgi-bin/who", TimeSpan.FromSeconds(3));
            Assert.Equal(sandbox.NodePodGatewayIp, ProxyScenario.Who(who.Body).Source);
            // A service without endpoints is refused at once.
            var refused = await sandbox.Client.HttpGetAsync("10.96.0.11", 80, "/", TimeSpan.FromSeconds(3));
            Assert.Equal(ProbeOutcome.Refused, refused.Outcome);

            await backend.SyncAsync(new SyncRequest(State(network, pod1.IP), Full: false, new HashSet<ServicePortName> { Web }), CancellationToken.None);

            Assert.False(backend.LastPlan(IpFamily.IPv4)!.Full);
            answers = await ProxyScenario.SpreadAsync(sandbox.Client, WebIP, 80, count: 20);
            Assert.Equal(["pod-1"], answers.Keys);

            await backend.CleanupAsync(CancellationToken.None);
            var tables = await sandbox.Node.CheckedExecAsync(["nft", "list", "tables"], TimeSpan.FromSeconds(10));
            Assert.DoesNotContain(NftNames.Table, tables.StandardOutput);
        }
        finally
        {
            await backend.CleanupAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task RefusedTransaction_LeavesTheTableAsItWas()
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-nfta");
        var applier = new NftCommandApplier(["ip", "netns", "exec", ns.Name]);
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4], applier, metrics, NullLogger.Instance);
        var network = new NodeNetwork { NodeName = "node-a" };
        await backend.SyncAsync(new SyncRequest(State(network, "10.244.1.2"), Full: true, new HashSet<ServicePortName>()), CancellationToken.None);
        var before = (await ns.CheckedExecAsync(["nft", "list", "table", "ip", NftNames.Table], TimeSpan.FromSeconds(10))).StandardOutput;

        // Valid operations, then one the kernel refuses (a jump to a missing chain): nothing of it may stay.
        var tx = new NftTransaction(IpFamily.IPv4, NftNames.Table)
            .Add(new NftChain("extra"))
            .Add(new NftElement(NftNames.ServiceIPs, "10.96.9.9", "tcp", "80") { Value = "goto extra" })
            .Add(new NftRule("extra", "jump missing-chain"));
        await Assert.ThrowsAsync<NftException>(() => applier.ApplyAsync(tx, CancellationToken.None));

        var after = (await ns.CheckedExecAsync(["nft", "list", "table", "ip", NftNames.Table], TimeSpan.FromSeconds(10))).StandardOutput;
        Assert.Equal(before, after);
        // And a full sync reading the table back finds exactly the objects the planner made.
        var kernel = await applier.ReadAsync(IpFamily.IPv4, NftNames.Table, CancellationToken.None);
        Assert.Equal(backend.LastPlan(IpFamily.IPv4)!.Counts.Chains, kernel.Chains.Count);
        Assert.Equal(backend.LastPlan(IpFamily.IPv4)!.Counts.Sets, kernel.Sets.Count + kernel.Maps.Count);
        Assert.True(await applier.IsAvailableAsync(IpFamily.IPv6, CancellationToken.None));
    }

    private static readonly ServicePortName Web = new(new NamespacedName("default", "web"), "http", Protocol.TCP);

    /// <summary>web (10.96.0.10:80 → the given pods on 8080) and lonely (10.96.0.11:80, no endpoints).</summary>
    private static DesiredState State(NodeNetwork network, params string[] endpoints)
    {
        var web = new ServicePortInfo { Name = Web, Port = 80, ClusterIPs = new EquatableArray<IPAddress>([IPAddress.Parse(WebIP)]) };
        var lonely = new ServicePortInfo { Name = new(new NamespacedName("default", "lonely"), "http", Protocol.TCP), Port = 80, ClusterIPs = new EquatableArray<IPAddress>([IPAddress.Parse("10.96.0.11")]) };
        var eps = endpoints.Select(ip => new EndpointInfo(IPAddress.Parse(ip), 8080) { IsLocal = true, NodeName = network.NodeName }).ToList();
        return new DesiredState(
            new[] { EndpointCategorizer.CategorizeByFamily(web, eps, null, network), EndpointCategorizer.CategorizeByFamily(lonely, [], null, network) }
                .ToImmutableSortedDictionary(p => p.Name, p => p),
            network);
    }
}
