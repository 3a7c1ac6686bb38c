using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;
using ProxyPlanes.Sandbox;
using ProxyPlanes.TestKit;
using Node = ProxyPlanes.Kernel.Tests.IptablesPartialSyncKernelTests.Node;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// A restarted proxy over rules already in place (its first sync is full): with the real tools of both
/// variants in a namespace the test makes, it sends nothing when the kernel holds what it wants, and only
/// the chains that differ when a rule or chain was changed, added or left behind, after which the kernel
/// holds what a fresh full sync writes. With the daemon: real packets reach every backend afterwards.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class IptablesRestartKernelTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    /// <summary>Passes everything to the real applier and keeps every script restored.</summary>
    private sealed class Recording(IIptablesApplier inner) : IIptablesApplier
    {
        public List<string> Restored { get; } = [];
        public IptablesVariant Variant => inner.Variant;
        public Task<string> SaveAsync(string table, CancellationToken cancellationToken) => inner.SaveAsync(table, cancellationToken);
        public Task SaveAsync(string table, LineHandler onLine, CancellationToken cancellationToken) => inner.SaveAsync(table, onLine, cancellationToken);
        public Task RestoreAsync(string script, CancellationToken cancellationToken)
        {
            Restored.Add(script);
            return inner.RestoreAsync(script, cancellationToken);
        }
        public Task RestoreAsync(RestoreScript script, CancellationToken cancellationToken)
        {
            Restored.Add(script.ToString());
            return inner.RestoreAsync(script, cancellationToken);
        }
        public Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken) => inner.ListChainAsync(table, chain, cancellationToken);
    }

    /// <summary>A new backend (a restarted proxy) over the node's namespace, recording what it restores per family.</summary>
    private static (IptablesBackend Backend, Dictionary<IpFamily, Recording> Restores, ProxyMetrics Metrics) Restart(Node node)
    {
        var recorders = Families.ToDictionary(f => f, f => new Recording(node.Appliers[f]));
        var metrics = new ProxyMetrics();
        return (new IptablesBackend(Families.Select(f => (f, (IIptablesApplier)recorders[f])), metrics, NullLogger.Instance), recorders, metrics);
    }

    /// <summary>The same variants × random clusters as the partial-sync kernel tests.</summary>
    public static TheoryData<IptablesVariant, int> Clusters => IptablesPartialSyncKernelTests.Sequences;

    [Theory]
    [MemberData(nameof(Clusters))]
    public async Task RestartOverOwnRules_SendsNothing(IptablesVariant variant, int seed)
    {
        // A random cluster (affinity, Local policies, node ports, load balancers with source ranges, dual stack, ...):
        // every rule kind the planner writes must read back from iptables-save as the same rule.
        var cluster = new RandomCluster(seed, changeFamilies: true);
        for (var i = 0; i < 10; i++) cluster.Mutate();
        var state = cluster.State(StateBuilder.Network);
        using var node = new Node(variant);
        var (first, firstRestores, firstMetrics) = Restart(node);
        using (firstMetrics) await first.SyncAsync(StateBuilder.Full(state), default);
        Assert.All(Families, f => Assert.NotEmpty(firstRestores[f].Restored)); // positive control: the cold sync wrote both families
        var before = await node.SaveAsync();

        var (restarted, restores, metrics) = Restart(node);
        using (metrics) await restarted.SyncAsync(StateBuilder.Full(state), default);

        foreach (var family in Families)
        {
            Assert.True(restores[family].Restored.Count == 0, $"{variant} {family} restored:\n{string.Join("\n---\n", restores[family].Restored)}");
            Assert.True(restarted.LastPlan(family)!.ChainsSkipped > 0);
        }
        Assert.Equal(before, await node.SaveAsync());
    }

    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task RestartOverStaleAndForeignRules_SendsOnlyTheDiff_AndRepairs(IptablesVariant variant)
    {
        var web = StateBuilder.Info("web", "10.96.0.10");
        var api = StateBuilder.Info("api", "10.96.0.11");
        var state = StateBuilder.State(null, StateBuilder.Port(web, [StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.1.3")]), StateBuilder.Port(api, [StateBuilder.Endpoint("10.244.1.4")]));
        using var node = new Node(variant);
        await node.Backend.SyncAsync(StateBuilder.Full(state), default);
        var expected = await node.SaveAsync();
        var ipv4 = node.Appliers[IpFamily.IPv4];
        var webChain = ChainNames.ClusterPolicy(web.Name);
        var apiEndpoint = ChainNames.Endpoint(api.Name, StateBuilder.Endpoint("10.244.1.4"));
        const string stale = "KUBE-SEP-STALESTALESTALE";
        // What a crash, an older version or another hand may leave: a foreign rule at the top of web's chain, api's
        // DNAT rule gone, a per-service chain nothing wants (with a rule), and the jump from nat OUTPUT gone.
        var dnat = (await ipv4.SaveAsync("nat", default)).Split('\n').Single(l => l.StartsWith($"-A {apiEndpoint} ", StringComparison.Ordinal) && l.Contains("DNAT", StringComparison.Ordinal));
        var outputJump = (await ipv4.SaveAsync("nat", default)).Split('\n').Single(l => l.StartsWith("-A OUTPUT ", StringComparison.Ordinal) && l.EndsWith($"-j {ChainNames.Services}", StringComparison.Ordinal));
        await ipv4.RestoreAsync($"*nat\n:{stale} - [0:0]\n-A {stale} -j RETURN\n-I {webChain} 1 -j RETURN\n-D{dnat[2..]}\n-D{outputJump[2..]}\nCOMMIT\n", default);
        var tampered = await node.SaveAsync();
        Assert.NotEqual(expected, tampered); // positive control: the kernel differs
        Assert.Contains(stale, tampered);

        var (restarted, restores, metrics) = Restart(node);
        using (metrics) await restarted.SyncAsync(StateBuilder.Full(state), default);

        Assert.Equal(expected, await node.SaveAsync());
        Assert.Equal(await IptablesPartialSyncKernelTests.FreshFullSaveAsync(variant, state), await node.SaveAsync());
        var sent = Assert.Single(restores[IpFamily.IPv4].Restored);
        Assert.Contains($":{webChain} ", sent);
        Assert.Contains($":{apiEndpoint} ", sent);
        Assert.Contains($"-X {stale}", sent);
        Assert.Contains("-I OUTPUT 1 ", sent);
        // Only the diff: unchanged chains are neither declared (flushed) nor written, filter is untouched.
        Assert.DoesNotContain($":{ChainNames.Canary} ", sent);
        Assert.DoesNotContain($":{ChainNames.ClusterPolicy(api.Name)} ", sent);
        Assert.DoesNotContain("*filter", sent);
        Assert.Empty(restores[IpFamily.IPv6].Restored);
    }

    /// <summary>
    /// The daemon restarted over its own rules after someone left a stale chain and put a foreign RETURN at the
    /// top of web's service chain (so web no longer answers: the positive control): the restart's first sync
    /// writes only web's chain (and deletes the stale one), the rules are again what they were, and real
    /// requests from the client namespace reach every pod.
    /// </summary>
    [Fact]
    public async Task Daemon_RestartOverTamperedRules_WritesOnlyTheDiff_PacketsReachEveryBackend()
    {
        const string webIP = "10.96.0.10";
        const string stale = "KUBE-SEP-STALESTALESTALE";
        string[] pods = ["pod-0", "pod-1", "pod-2"];
        await using var scenario = await ProxyScenario.CreateAsync(pods: 3);
        scenario.WriteManifest("web.yaml", ProxyScenario.Service("web", webIP));
        scenario.WriteManifest("web-endpoints.yaml", ProxyScenario.Slice("web", scenario.PodIp(0), scenario.PodIp(1), scenario.PodIp(2)));
        string[] args = ["--iptables-variant=nft"];
        var node = scenario.Sandbox.Node;
        var proxy = await scenario.StartProxyAsync(args);
        Assert.Equal(pods, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, webIP, 80)).Keys.Order());
        var synced = await NatAsync(node);
        await proxy.Process.KillAsync();

        var webChain = synced.Split('\n').Select(l => l.Split(' ')).Single(w => w[0] == "-A" && w[1].StartsWith(ChainNames.Services + "-", StringComparison.Ordinal) && w.Contains(webIP + "/32"))[^1];
        Assert.StartsWith("KUBE-SVC-", webChain);
        foreach (var command in new[] { $"-N {stale}", $"-A {stale} -j RETURN", $"-I {webChain} 1 -j RETURN" })
            await node.CheckedExecAsync(["iptables-nft", "-t", "nat", .. command.Split(' ')]);
        var broken = await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, webIP, 80, count: 3);
        Assert.DoesNotContain(broken.Keys, k => k.StartsWith("pod-", StringComparison.Ordinal)); // the tampering took effect

        proxy = await scenario.StartProxyAsync(args);

        Assert.Equal(pods, (await ProxyScenario.SpreadAsync(scenario.Sandbox.Client, webIP, 80)).Keys.Order());
        Assert.Equal(synced, await NatAsync(node));
        // The restart's full sync wrote web's chain alone (its masquerade rule and three endpoint jumps), not the
        // 70-odd rules of a whole nat table, and nothing in filter.
        var scrape = await proxy.ScrapeAsync();
        Assert.Equal(4, LastWritten(scrape, "nat"));
        Assert.Equal(0, LastWritten(scrape, "filter"));
    }

    private static double LastWritten(string scrape, string table) =>
        scrape.Split('\n').Where(l => l.StartsWith(IptablesMetrics.RulesLastSync + "{", StringComparison.Ordinal) && l.Contains($"table=\"{table}\"", StringComparison.Ordinal) && l.Contains("IPv4", StringComparison.Ordinal))
            .Select(l => double.Parse(l[(l.LastIndexOf(' ') + 1)..], System.Globalization.CultureInfo.InvariantCulture)).Single();

    /// <summary>The node's IPv4 nat table as iptables-nft-save prints it, without its comment lines and counters.</summary>
    private static async Task<string> NatAsync(NetworkNamespace node) =>
        string.Join('\n', (await node.CheckedExecAsync("iptables-nft-save", "-t", "nat")).StandardOutput.Split('\n')
            .Where(l => !l.StartsWith('#')).Select(l => l.StartsWith(':') ? l.Split(' ')[0] : l));
}
