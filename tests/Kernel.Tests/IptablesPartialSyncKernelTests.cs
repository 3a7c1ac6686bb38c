using System.Text;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The iptables mode's partial syncs (deltas of the shared chains: -D by rule text, -I at a position)
/// against the real iptables-restore of both variants, in namespaces the test makes: after every
/// partial sync, iptables-save of both families and both tables equals that of a fresh namespace
/// given one full sync of the same state (chains compared by name, rules in order, counters left out).
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class IptablesPartialSyncKernelTests
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    internal sealed class Node : IDisposable
    {
        private readonly ProxyMetrics _metrics = new();

        public Node(IptablesVariant variant)
        {
            Namespace = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-ipd");
            Appliers = Families.ToDictionary(f => f, f => new IptablesCommandApplier(variant, f, ["ip", "netns", "exec", Namespace.Name]));
            Backend = new IptablesBackend(Families.Select(f => (f, (IIptablesApplier)Appliers[f])), _metrics, NullLogger.Instance);
        }

        public NetworkNamespace Namespace { get; }
        public Dictionary<IpFamily, IptablesCommandApplier> Appliers { get; }
        public IptablesBackend Backend { get; }

        /// <summary>Both tables of both families, chains sorted by name with their policy and rules in order; no counters.</summary>
        public async Task<string> SaveAsync()
        {
            var text = new StringBuilder();
            foreach (var family in Families)
                foreach (var table in new[] { "nat", "filter" })
                    foreach (var saved in IptablesSave.ParseTables(await Appliers[family].SaveAsync(table, default)))
                    {
                        text.Append(family).Append(" *").Append(saved.Name).Append('\n');
                        foreach (var (chain, rules) in saved.Rules.OrderBy(r => r.Key, StringComparer.Ordinal))
                        {
                            text.Append(':').Append(chain).Append(' ').Append(saved.Policies[chain]).Append('\n');
                            foreach (var rule in rules) text.Append("-A ").Append(chain).Append(' ').Append(rule).Append('\n');
                        }
                    }
            return text.ToString();
        }

        public void Dispose()
        {
            _metrics.Dispose();
            Namespace.Dispose();
        }
    }

    internal static async Task<string> FreshFullSaveAsync(IptablesVariant variant, DesiredState state)
    {
        using var fresh = new Node(variant);
        await fresh.Backend.SyncAsync(StateBuilder.Full(state), default);
        return await fresh.SaveAsync();
    }

    public static TheoryData<IptablesVariant, int> Sequences => new()
    {
        { IptablesVariant.Nft, 1 }, { IptablesVariant.Nft, 2 }, { IptablesVariant.Legacy, 1 }, { IptablesVariant.Legacy, 2 },
    };

    [Theory]
    [MemberData(nameof(Sequences))]
    public async Task RandomSequence_EveryPartialSync_SaveEqualsFreshFullSync(IptablesVariant variant, int seed)
    {
        var cluster = new RandomCluster(seed, changeFamilies: true);
        using var node = new Node(variant);
        DesiredState? previous = null;
        var deltas = 0;
        for (var step = 0; step < 30; step++)
        {
            cluster.Mutate();
            var state = cluster.State(StateBuilder.Network);
            var full = previous is null || step == 15;
            await node.Backend.SyncAsync(full ? StateBuilder.Full(state) : new SyncRequest(state, false, StateBuilder.Changed(previous!, state)), default);
            if (!full && Families.Any(f => node.Backend.LastPlan(f)?.Delta == true)) deltas++;

            var expected = await FreshFullSaveAsync(variant, state);
            var actual = await node.SaveAsync();
            Assert.True(expected == actual, $"{variant} seed {seed} step {step}:\nexpected\n{expected}\nactual\n{actual}");
            previous = state;
        }
        Assert.True(deltas > 15, $"only {deltas} partial syncs sent a delta");
    }

    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task DeltaRefusedByTheKernel_OldRulesStay_NextSyncIsFullAndRepairs(IptablesVariant variant)
    {
        var web = StateBuilder.Info("web", "10.96.0.10");
        var api = StateBuilder.Info("api", "10.96.0.11");
        var both = StateBuilder.State(null, StateBuilder.Port(web, [StateBuilder.Endpoint("10.244.1.2")]), StateBuilder.Port(api, [StateBuilder.Endpoint("10.244.1.3")]));
        var apiOnly = StateBuilder.State(null, StateBuilder.Port(api, [StateBuilder.Endpoint("10.244.1.3")]));
        using var node = new Node(variant);
        await node.Backend.SyncAsync(StateBuilder.Full(both), default);
        var ipv4 = node.Appliers[IpFamily.IPv4];
        // Someone deletes web's KUBE-SERVICES rule: the delta removing web cannot delete it again.
        var webRule = (await ipv4.SaveAsync("nat", default)).Split('\n')
            .Single(l => l.StartsWith($"-A {ChainNames.Services}-", StringComparison.Ordinal) && l.Contains("ns/web:http", StringComparison.Ordinal));
        await ipv4.RestoreAsync($"*nat\n-D{webRule[2..]}\nCOMMIT\n", default);
        var before = await node.SaveAsync();
        Assert.Contains(ChainNames.ClusterPolicy(web.Name), before); // positive control

        var refused = await Assert.ThrowsAsync<BackendSyncException>(() => node.Backend.SyncAsync(StateBuilder.Partial(apiOnly, web.Name), default));

        Assert.Contains("refused the partial (delta) sync", refused.Message);
        Assert.Equal(before, await node.SaveAsync()); // nothing of the delta applied: web's chains are still there

        // The retry (a partial request: the backend has forgotten its state) is a full sync that repairs.
        await node.Backend.SyncAsync(StateBuilder.Partial(apiOnly, web.Name), default);
        Assert.False(node.Backend.LastPlan(IpFamily.IPv4)!.Delta);
        Assert.Equal(await FreshFullSaveAsync(variant, apiOnly), await node.SaveAsync());
    }

    /// <summary>
    /// iptables-restore commits each table on its own, so a sync whose nat part is refused after its
    /// filter part committed would leave filter a sync ahead; the backend rolls filter back. Here web
    /// loses its endpoints (filter gains a REJECT, nat loses web's rules) while someone deleted web's
    /// nat rule, so the nat delta is refused after filter committed.
    /// </summary>
    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task NatRefusedAfterFilterCommitted_FilterRolledBack_RetryRepairs(IptablesVariant variant)
    {
        var web = StateBuilder.Info("web", "10.96.0.10");
        var api = StateBuilder.Info("api", "10.96.0.11");
        var zed = StateBuilder.Info("zed", "10.96.0.12");
        // api and zed have no endpoints: filter already holds two REJECTs around web's place.
        var serving = StateBuilder.State(null, StateBuilder.Port(web, [StateBuilder.Endpoint("10.244.1.2")]), StateBuilder.Port(api), StateBuilder.Port(zed));
        var drained = StateBuilder.State(null, StateBuilder.Port(web), StateBuilder.Port(api), StateBuilder.Port(zed));
        using var node = new Node(variant);
        await node.Backend.SyncAsync(StateBuilder.Full(serving), default);
        var ipv4 = node.Appliers[IpFamily.IPv4];
        var webRule = (await ipv4.SaveAsync("nat", default)).Split('\n')
            .Single(l => l.StartsWith($"-A {ChainNames.Services}-", StringComparison.Ordinal) && l.Contains("ns/web:http", StringComparison.Ordinal));
        await ipv4.RestoreAsync($"*nat\n-D{webRule[2..]}\nCOMMIT\n", default);
        var before = await node.SaveAsync();
        Assert.DoesNotContain("ns/web:http cluster IP has no endpoints", before);

        var refused = await Assert.ThrowsAsync<BackendSyncException>(() => node.Backend.SyncAsync(StateBuilder.Partial(drained, web.Name), default));

        Assert.Equal(before, await node.SaveAsync()); // filter holds no REJECT for web: both tables as before
        Assert.Contains("filter rolled back", refused.Message);

        // Positive control: the retry (a full sync) writes web's REJECT.
        await node.Backend.SyncAsync(StateBuilder.Partial(drained, web.Name), default);
        var after = await node.SaveAsync();
        Assert.Contains("ns/web:http cluster IP has no endpoints", after);
        Assert.Equal(await FreshFullSaveAsync(variant, drained), after);
    }
}
