using System.Net;
using ProxyPlanes.Backends.Iptables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink.Tests;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>
/// The helper ipsets and rules of every golden case, restored by the real ipset and iptables tools
/// in a network namespace of this host (no IPVS needed): the kernel takes them, holds the entries
/// planned, has each jump once, and the cleanup leaves nothing of ours behind.
/// </summary>
[Collection(IpvsKernelCollection.Name)]
public sealed class HelperRulesKernelTests
{
    /// <summary>Every case with each iptables variant this machine has (kernels without the legacy x_tables modules have only nft).</summary>
    public static IEnumerable<object[]> Cases() =>
        from c in GoldenCase.All() from v in Variants.Value select new object[] { c[0], v };

    private static readonly Lazy<IptablesVariant[]> Variants = new(() =>
        new[] { IptablesVariant.Nft, IptablesVariant.Legacy }
            .Where(v => IptablesCommandApplier.IsAvailableAsync(IpFamily.IPv4, v, CancellationToken.None).GetAwaiter().GetResult())
            .ToArray());

    [Theory]
    [MemberData(nameof(Cases))]
    public async Task GoldenCase_HelperRules_AcceptedByTheKernelAndCleanedUp(string caseName, IptablesVariant variant)
    {
        var (initial, update) = await new GoldenCase(caseName).SyncRequestsAsync();
        var families = IpvsPlannerGoldenTests.FamiliesOf(initial);
        var (full, partial) = IpvsPlannerGoldenTests.PlanCase(initial, update);
        using var ns = new TestNamespace("ipvs");
        var kernel = new IpvsKernel(new IpvsKernelOptions { IptablesVariant = variant, CommandPrefix = ["ip", "netns", "exec", ns.Name] });

        await kernel.ApplyAsync(RestoreSteps(full), default);
        var last = full;
        if (partial is not null)
        {
            await kernel.ApplyAsync(RestoreSteps(partial), default);
            last = partial;
        }

        // The sets hold exactly the planned entries.
        var sets = IpvsKernel.ParseIpsetSave(await ns.ExecAsync("ipset", "save"));
        var expected = last.State.Entries.Keys.Concat(last.State.NameEntries).GroupBy(e => e.Set).ToDictionary(g => g.Key, g => g.Select(e => e.Entry).Order(StringComparer.Ordinal).ToList());
        foreach (var (set, entries) in sets)
            Assert.Equal(expected.GetValueOrDefault(set) ?? [], entries.Order(StringComparer.Ordinal).ToList());
        Assert.Equal(IpvsNames.Sets.Length * families.Length, sets.Count);

        // explain reads the tools' real output as it reads the fake kernel's: the same fate for every
        // virtual server, from off the cluster and from a pod.
        var fake = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs);
        await fake.ApplyAsync(full.Operations, default);
        if (partial is not null) await fake.ApplyAsync(partial.Operations, default);
        var fromFake = await new IpvsExplainer(fake, families).SnapshotAsync(default);
        var tables = new Dictionary<IpFamily, IReadOnlyList<SavedTable>>();
        foreach (var family in families)
            tables[family] = [.. IptablesSave.ParseTables(await kernel.SaveIptablesAsync(family, "nat", default)), .. IptablesSave.ParseTables(await kernel.SaveIptablesAsync(family, "filter", default))];
        var fromTools = new IpvsKernelSnapshot(fromFake.View with { Ipsets = sets }, tables);
        foreach (var server in fromFake.View.Services.Keys)
        {
            var pod = IPAddress.Parse(server.Family == IpFamily.IPv4 ? "10.244.1.99" : "fd00:10:244::99");
            foreach (var question in new[] { new PacketQuestion(server.Protocol, server.Address, server.Port), new PacketQuestion(server.Protocol, server.Address, server.Port, pod) })
                Assert.Equal(Summary(IpvsTracer.Trace(fromFake, question)), Summary(IpvsTracer.Trace(fromTools, question)));
        }

        // Every jump is there once; a full sync reading them inserts none again.
        var builtIn = new Dictionary<IpFamily, BuiltInRules>();
        foreach (var family in families)
        {
            var (_, nat) = IptablesSave.ParseTable(await kernel.SaveIptablesAsync(family, "nat", default));
            var (_, filter) = IptablesSave.ParseTable(await kernel.SaveIptablesAsync(family, "filter", default));
            foreach (var (table, chain, rule) in IpvsPlanner.BuiltInJumps)
                Assert.Single(table == "nat" ? nat : filter, r => r == $"-A {chain} {rule}");
            builtIn[family] = new BuiltInRules(nat.ToHashSet(), filter.ToHashSet());
        }
        var again = new IpvsPlanner(new IpvsPlannerOptions { Families = families })
            .Plan(initial, null, IpvsKernelView.Empty(IpvsPlannerGoldenTests.NodeIPs) with { BuiltInRules = builtIn }, IpvsPlannerGoldenTests.Now);
        Assert.DoesNotContain("\n-I ", string.Concat(again.Operations.OfType<IptablesRestore>().Select(o => o.Script)));

        // Cleanup: no chain, jump or set of ours is left.
        var saves = new Dictionary<(IpFamily, string), string>();
        foreach (var family in families)
            foreach (var table in new[] { "filter", "nat" })
                saves[(family, table)] = await kernel.SaveIptablesAsync(family, table, default);
        var cleanup = IpvsBackend.PlanCleanup(new IpvsKernelView { Ipsets = sets }, saves, new IpvsPlannerOptions { Families = families });
        await kernel.ApplyAsync(cleanup, default);

        Assert.Empty(IpvsKernel.ParseIpsetSave(await ns.ExecAsync("ipset", "save")));
        foreach (var family in families)
            foreach (var table in new[] { "filter", "nat" })
                Assert.DoesNotContain("KUBE-", await kernel.SaveIptablesAsync(family, table, default));
    }

    [Fact]
    public async Task Cleanup_WithOrWithoutIpvs_RemovesTheLinkSetsAndRules()
    {
        var (initial, _) = await new GoldenCase("loadbalancer-source-ranges").SyncRequestsAsync();
        var (full, _) = IpvsPlannerGoldenTests.PlanCase(initial, null);
        using var ns = new TestNamespace("ipvs");
        using var kernel = new IpvsKernel(new IpvsKernelOptions { CommandPrefix = ["ip", "netns", "exec", ns.Name], InNamespace = a => ns.Namespace.Run(a) });
        await kernel.ApplyAsync(RestoreSteps(full), default);
        // The link as a previous run left it (a bridge where the kernel has no dummy links).
        var kind = KernelConfig.Has("CONFIG_DUMMY") == false ? "bridge" : "dummy";
        await ns.ExecAsync("ip", "link", "add", IpvsNames.Link, "type", kind);
        await ns.ExecAsync("ip", "addr", "add", "10.96.0.22/32", "dev", IpvsNames.Link);
        using var metrics = new Metrics.ProxyMetrics();
        var backend = new IpvsBackend(kernel, metrics, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);

        await backend.CleanupAsync(default);

        Assert.Empty(IpvsKernel.ParseIpsetSave(await ns.ExecAsync("ipset", "save")));
        Assert.DoesNotContain(IpvsNames.Link, await ns.ExecAsync("ip", "-o", "link"));
        foreach (var table in new[] { "filter", "nat" })
            Assert.DoesNotContain("KUBE-", await kernel.SaveIptablesAsync(IpFamily.IPv4, table, default));
    }

    [NoIpvsFact]
    public async Task Sync_WithoutIpvs_FailsSayingSo()
    {
        using var ns = new TestNamespace("ipvs");
        using var kernel = new IpvsKernel(new IpvsKernelOptions { CommandPrefix = ["ip", "netns", "exec", ns.Name], InNamespace = a => ns.Namespace.Run(a) });
        using var metrics = new Metrics.ProxyMetrics();
        var backend = new IpvsBackend(kernel, metrics, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var (initial, _) = await new GoldenCase("nodeport").SyncRequestsAsync();

        var e = await Assert.ThrowsAsync<Model.BackendSyncException>(() => backend.SyncAsync(initial, default));

        Assert.StartsWith("IPVS mode could not prepare the kernel: the kernel has no IPVS (modprobe ip_vs)", e.Message);
    }

    private static string Summary(PacketFate fate) =>
        $"{fate.Match} {fate.Frontend} {fate.Verdict} {string.Join(",", fate.Endpoints)} {fate.Masquerade} {fate.Affinity} {fate.Reason}";

    private static List<IpvsOperation> RestoreSteps(IpvsPlan plan) =>
        plan.Operations.Where(o => o is IpsetRestore or IptablesRestore).ToList();
}

[CollectionDefinition(Name)]
public sealed class IpvsKernelCollection
{
    // Kernel tests run one at a time.
    public const string Name = "kernel-ipvs";
}
