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

    public static TheoryData<IptablesVariant, int> Clusters => new()
    {
        { IptablesVariant.Nft, 1 }, { IptablesVariant.Nft, 2 }, { IptablesVariant.Legacy, 1 }, { IptablesVariant.Legacy, 2 },
    };

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
}
