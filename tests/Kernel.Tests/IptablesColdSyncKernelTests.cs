using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Iptables;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// The cold sync's shape (<see cref="RuleWriter.ListTableFirst"/>, iptables-nft only: nat's jumps from the built-in
/// chains, then <c>-S</c>, then the rest) against the real iptables-restore of both variants, in namespaces the test makes:
/// it loads into a namespace whose nat table does not exist yet, leaves foreign chains as they were, and a
/// refusal at the end of nat leaves nat exactly as it was (one transaction, nothing half-applied).
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class IptablesColdSyncKernelTests
{
    /// <summary>Enough services for the cold sync to list the table first (three chains per service).</summary>
    private static DesiredState Cluster() =>
        StateBuilder.State(null, [.. Enumerable.Range(0, IptablesPlanner.ListTableFromChains / 3 + 10).Select(i => StateBuilder.Port(
            StateBuilder.Info($"svc-{i:D4}", $"10.96.{i / 250}.{i % 250 + 1}"),
            StateBuilder.Endpoint($"10.244.{i / 100}.{i % 100 + 2}"),
            StateBuilder.Endpoint($"10.244.{i / 100 + 100}.{i % 100 + 2}")))]);

    private const string Docker = """
        *nat
        :DOCKER - [0:0]
        -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
        -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
        -A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
        -A DOCKER -i docker0 -j RETURN
        -A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80
        COMMIT

        """;

    /// <summary>The IPv4 nat table as <see cref="IptablesPartialSyncKernelTests.Node.SaveAsync"/> prints it, without our chains and jumps.</summary>
    private static string Foreign(string save) => string.Join('\n', save.Split('\n').Where(l => !l.Contains("KUBE-", StringComparison.Ordinal)));

    /// <summary>
    /// A fresh namespace (no nat table at all: iptables-nft creates the built-in chains on the first command that
    /// needs them) takes the cold sync, and ends up as the same script without the listing leaves it.
    /// </summary>
    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task ColdSync_IntoAFreshNamespace_EqualsTheScriptWithoutTheListing(IptablesVariant variant)
    {
        using var node = new IptablesPartialSyncKernelTests.Node(variant);
        await node.Backend.SyncAsync(StateBuilder.Full(Cluster()), default);
        var script = node.Backend.LastPlan(IpFamily.IPv4)!.Script.ToString();
        Assert.Equal(variant == IptablesVariant.Nft, script.Split('\n').Contains("-S"));

        using var plain = new IptablesPartialSyncKernelTests.Node(variant);
        await plain.Appliers[IpFamily.IPv4].RestoreAsync(string.Join('\n', script.Split('\n').Where(l => l != "-S")), default);
        await plain.Appliers[IpFamily.IPv6].RestoreAsync(node.Backend.LastPlan(IpFamily.IPv6)!.Script, default);

        Assert.Equal(await plain.SaveAsync(), await node.SaveAsync());
    }

    /// <summary>
    /// The cleanup of that many chains (iptables-nft: nat starts with <c>-S</c>, <see cref="IptablesCleanup.ListTableFromChains"/>)
    /// removes every chain and jump of ours and leaves Docker's as they were, in both variants.
    /// </summary>
    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task Cleanup_OfTheColdSync_LeavesOnlyTheForeignRules(IptablesVariant variant)
    {
        using var node = new IptablesPartialSyncKernelTests.Node(variant);
        await node.Appliers[IpFamily.IPv4].RestoreAsync(Docker, default);
        var before = await node.SaveAsync();
        await node.Backend.SyncAsync(StateBuilder.Full(Cluster()), default);

        await node.Backend.CleanupAsync(default);

        var after = await node.SaveAsync();
        Assert.DoesNotContain("KUBE-", after);
        Assert.Equal(Foreign(before), Foreign(after));
    }

    /// <summary>Docker's chains and its rules in the built-in chains stay as they were, after our jumps.</summary>
    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task ColdSync_OverForeignChains_LeavesThemAsTheyWere(IptablesVariant variant)
    {
        using var node = new IptablesPartialSyncKernelTests.Node(variant);
        await node.Appliers[IpFamily.IPv4].RestoreAsync(Docker, default);
        var before = await node.SaveAsync();

        await node.Backend.SyncAsync(StateBuilder.Full(Cluster()), default);

        Assert.Equal(variant == IptablesVariant.Nft, node.Backend.LastPlan(IpFamily.IPv4)!.Script.ToString().Split('\n').Contains("-S"));
        var after = await node.SaveAsync();
        Assert.Equal(Foreign(before), Foreign(after));
        Assert.Contains("-A DOCKER ! -i docker0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80", after);
        Assert.Contains(":KUBE-SVC-", after);
    }

    /// <summary>
    /// The tool refusing the last line of nat leaves nat exactly as it was: none of the chains declared or written
    /// before the refused line is there (the listing does not split the table's transaction); the retry loads it all.
    /// </summary>
    [Theory]
    [InlineData(IptablesVariant.Nft)]
    [InlineData(IptablesVariant.Legacy)]
    public async Task ColdSync_RefusedAtTheEndOfNat_LeavesNatAsItWas_RetryLoads(IptablesVariant variant)
    {
        using var node = new IptablesPartialSyncKernelTests.Node(variant);
        await node.Appliers[IpFamily.IPv4].RestoreAsync(Docker, default);
        var natBefore = await node.Appliers[IpFamily.IPv4].SaveAsync("nat", default);
        var refusing = new RefusingAtEndOfNat(node.Appliers[IpFamily.IPv4]);
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(refusing, metrics, NullLogger.Instance);

        var refused = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(StateBuilder.Full(Cluster()), default));

        Assert.Contains("NO-SUCH-TARGET", refused.Message);
        Assert.Equal(variant == IptablesVariant.Nft, refusing.Offered[0].Split('\n').Contains("-S")); // then the filter rollback
        Assert.Equal(Withoutcounters(natBefore), Withoutcounters(await node.Appliers[IpFamily.IPv4].SaveAsync("nat", default)));

        refusing.Refuse = false;
        await backend.SyncAsync(StateBuilder.Full(Cluster()), default);
        using var fresh = new IptablesPartialSyncKernelTests.Node(variant);
        await fresh.Appliers[IpFamily.IPv4].RestoreAsync(Docker, default);
        await new IptablesBackend(fresh.Appliers[IpFamily.IPv4], metrics, NullLogger.Instance).SyncAsync(StateBuilder.Full(Cluster()), default);
        Assert.Equal(
            Withoutcounters(await fresh.Appliers[IpFamily.IPv4].SaveAsync("nat", default)),
            Withoutcounters(await node.Appliers[IpFamily.IPv4].SaveAsync("nat", default)));
    }

    private static string Withoutcounters(string save) => string.Join('\n', IptablesSave.ParseTables(save)
        .SelectMany(t => t.Rules.OrderBy(r => r.Key, StringComparer.Ordinal).SelectMany(r => r.Value.Select(rule => $"-A {r.Key} {rule}").Prepend($":{r.Key}"))));

    /// <summary>Adds a line the tool refuses at the end of every script holding nat (the last table) while <see cref="Refuse"/>.</summary>
    private sealed class RefusingAtEndOfNat(IIptablesApplier inner) : IIptablesApplier
    {
        public bool Refuse { get; set; } = true;

        public List<string> Offered { get; } = [];

        public IptablesVariant Variant => inner.Variant;

        public Task<string> SaveAsync(string table, CancellationToken cancellationToken) => inner.SaveAsync(table, cancellationToken);

        public Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken) => inner.ListChainAsync(table, chain, cancellationToken);

        public Task RestoreAsync(RestoreScript script, CancellationToken cancellationToken) => RestoreAsync(script.ToString(), cancellationToken);

        public Task RestoreAsync(string script, CancellationToken cancellationToken)
        {
            var nat = script.IndexOf("*nat\n", StringComparison.Ordinal);
            if (Refuse && nat >= 0)
            {
                var commit = script.LastIndexOf("COMMIT\n", StringComparison.Ordinal); // nat is the last table
                script = script[..commit] + "-A KUBE-MARK-MASQ -j NO-SUCH-TARGET\n" + script[commit..];
            }
            Offered.Add(script);
            return inner.RestoreAsync(script, cancellationToken);
        }
    }
}
