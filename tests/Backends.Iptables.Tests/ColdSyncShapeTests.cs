using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables.Tests;

/// <summary>
/// A cold sync of many chains starts nat with <c>-S</c> (<see cref="RuleWriter.ListTableFirst"/>: iptables-nft
/// then reads the table whole instead of keeping a sorted list of the chains each command names); nothing else
/// does, since the read costs what the table holds.
/// </summary>
public sealed class ColdSyncShapeTests
{
    /// <summary><paramref name="services"/> cluster-IP services with two endpoints each: three chains per service.</summary>
    private static DesiredState Cluster(int services, int firstEndpoint = 2) =>
        StateBuilder.State(null, [.. Enumerable.Range(0, services).Select(i => StateBuilder.Port(
            StateBuilder.Info($"svc-{i:D4}", $"10.96.{i / 250}.{i % 250 + 1}"),
            StateBuilder.Endpoint($"10.244.{i / 100}.{i % 100 + firstEndpoint}"),
            StateBuilder.Endpoint($"10.244.{i / 100 + 100}.{i % 100 + firstEndpoint}")))]);

    private static readonly int Many = IptablesPlanner.ListTableFromChains / 3 + 10;

    private static string[] TableLines(string script, string table)
    {
        var lines = script.Split('\n');
        var start = Array.IndexOf(lines, "*" + table);
        return start < 0 ? [] : lines[(start + 1)..Array.IndexOf(lines, "COMMIT", start)];
    }

    private static bool ListsFirst(IptablesPlan plan, string table) => TableLines(plan.ToString(), table).Contains("-S");

    [Fact]
    public void ColdFullPlan_OfManyChains_ListsNatFirst_FilterNot()
    {
        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(Many)), null, KernelTables.Empty);

        Assert.True(ListsFirst(plan, "nat"));
        Assert.False(ListsFirst(plan, "filter"));
        Assert.Single(plan.ToString().Split('\n'), l => l == "-S");
        // Before the listing: the jumps from the built-in chains (a listing puts stand-ins for missing built-in chains
        // in iptables-nft's cache, and a jump inserted after it fails) and the two chains they lead to; nothing else.
        var nat = TableLines(plan.ToString(), "nat");
        var list = Array.IndexOf(nat, "-S");
        Assert.Equal([":KUBE-POSTROUTING - [0:0]", ":KUBE-SERVICES - [0:0]"], nat[..list].Where(l => l.StartsWith(':')).Order(StringComparer.Ordinal));
        Assert.Equal(3, nat[..list].Count(l => l.StartsWith("-I ", StringComparison.Ordinal)));
        Assert.Equal(5, list);
        Assert.DoesNotContain(nat[(list + 1)..], l => l.StartsWith("-I ", StringComparison.Ordinal) || l is ":KUBE-SERVICES - [0:0]" or ":KUBE-POSTROUTING - [0:0]");
        // The same rules and chains as without the listing, in the same order per chain.
        var unlisted = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(Many)), null, KernelTables.Empty with { NatChains = new HashSet<string>([ChainNames.Services]) });
        Assert.Equal(TableLines(unlisted.ToString(), "nat").Order(StringComparer.Ordinal), nat.Where(l => l != "-S").Order(StringComparer.Ordinal));
        Assert.Equal(TableLines(unlisted.ToString(), "nat").Where(l => l.StartsWith("-A ", StringComparison.Ordinal)), nat.Where(l => l.StartsWith("-A ", StringComparison.Ordinal)));
    }

    /// <summary>
    /// After the listing the chains are declared in <see cref="RuleWriter.ScrambledOrder"/>, which is far from name
    /// order: the kernel keeps the order of creation, and iptables-nft-save sorts what it fetches at a cost quadratic
    /// in chains that come in name order (ascending or descending). Without a listing they stay in descending order.
    /// </summary>
    [Fact]
    public void ColdFullPlan_DeclaresChainsAfterTheListing_OutOfNameOrder()
    {
        static List<string> Declared(IEnumerable<string> lines) => [.. lines.Where(l => l.StartsWith(':')).Select(l => l[1..l.IndexOf(' ')])];
        var nat = TableLines(new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(Many)), null, KernelTables.Empty).ToString(), "nat");
        var after = Declared(nat[(Array.IndexOf(nat, "-S") + 1)..]);

        Assert.Equal([.. after.Order(Comparer<string>.Create(RuleWriter.ScrambledOrder))], after);
        // Name order would have each chain next to its neighbour in name: far from it, about half the steps go down.
        var down = after.Zip(after.Skip(1)).Count(p => string.CompareOrdinal(p.First, p.Second) > 0);
        Assert.InRange(down, after.Count / 3, after.Count * 2 / 3);

        var unlisted = TableLines(new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(Many)), null, KernelTables.Empty with { NatChains = new HashSet<string>([ChainNames.Services]) }).ToString(), "nat");
        var descending = Declared(unlisted);
        Assert.Equal([.. descending.Order(StringComparer.Ordinal).Reverse()], descending);
    }

    [Theory]
    [InlineData("KUBE-SEP-AB", "KUBE-SEP-BA", 1)]
    [InlineData("KUBE-SEP-BA", "KUBE-SEP-AB", -1)]
    [InlineData("A", "A", 0)]
    [InlineData("XA", "A", 1)]
    [InlineData("A", "XA", -1)]
    public void ScrambledOrder_ComparesFromTheEnd(string a, string b, int sign) =>
        Assert.Equal(sign, Math.Sign(RuleWriter.ScrambledOrder(a, b)));

    /// <summary>iptables-legacy keeps no per-command chain list, and its listing refuses a jump to a chain the same restore created.</summary>
    [Fact]
    public async Task ColdSync_ForLegacy_DoesNotList()
    {
        var plan = new IptablesPlanner(IpFamily.IPv4, variant: IptablesVariant.Legacy).Plan(StateBuilder.Full(Cluster(Many)), null, KernelTables.Empty);
        var fake = new FakeIptables(IpFamily.IPv4, IptablesVariant.Legacy);
        using var metrics = new ProxyMetrics();
        await new IptablesBackend(fake, metrics, NullLogger.Instance).SyncAsync(StateBuilder.Full(Cluster(Many)), default);

        Assert.False(ListsFirst(plan, "nat"));
        Assert.DoesNotContain("-S", fake.Offered.Single().Split('\n'));
    }

    [Fact]
    public void ColdFullPlan_OfFewChains_DoesNotList()
    {
        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(IptablesPlanner.ListTableFromChains / 3 - 30)), null, KernelTables.Empty);

        Assert.False(ListsFirst(plan, "nat"));
    }

    /// <summary>A kernel that holds service rules of ours is large: reading it whole would cost more than the list.</summary>
    [Theory]
    [InlineData("KUBE-SERVICES")]
    [InlineData("KUBE-SERVICES-05")]
    [InlineData("KUBE-SEP-AAAAAAAAAAAAAAAA")]
    public void FullPlan_OverOurChains_DoesNotList(string chain)
    {
        var kernel = KernelTables.Empty with { NatChains = new HashSet<string>(["DOCKER", chain]) };

        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(Many)), null, kernel);

        Assert.False(ListsFirst(plan, "nat"));
    }

    /// <summary>Foreign chains (Docker's, a CNI's, the kubelet's KUBE-MARK-MASQ of old) keep the table small.</summary>
    [Fact]
    public void FullPlan_OverForeignChainsOnly_Lists()
    {
        var kernel = KernelTables.Empty with { NatChains = new HashSet<string>(["DOCKER", "CNI-HOSTPORT-DNAT", "KUBE-MARK-MASQ", "KUBE-KUBELET-CANARY"]) };

        var plan = new IptablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster(Many)), null, kernel);

        Assert.True(ListsFirst(plan, "nat"));
    }

    /// <summary>
    /// Through the backend: the cold sync lists first; every later sync (a change, a restart over the same rules,
    /// a restart after everything changed) does not, and a restart with nothing changed still sends nothing.
    /// </summary>
    [Fact]
    public async Task OnlyTheColdSync_Lists()
    {
        var fake = new FakeIptables(IpFamily.IPv4);
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(fake, metrics, NullLogger.Instance);
        var state = Cluster(Many);

        await backend.SyncAsync(StateBuilder.Full(state), default);
        Assert.Single(fake.Offered);
        Assert.Contains("-S", TableLines(fake.Offered[0], "nat"));

        var changed = Cluster(Many, firstEndpoint: 3);
        await backend.SyncAsync(StateBuilder.Partial(changed, [.. StateBuilder.Changed(state, changed)]), default);
        var restarted = new IptablesBackend(fake, metrics, NullLogger.Instance);
        await restarted.SyncAsync(StateBuilder.Full(changed), default);
        Assert.Equal(2, fake.Offered.Count); // the restart over the same rules sends nothing
        await restarted.SyncAsync(StateBuilder.Full(state), default);

        Assert.Equal(3, fake.Offered.Count);
        Assert.All(fake.Offered.Skip(1), s => Assert.DoesNotContain("-S", s.Split('\n')));
        var fresh = new FakeIptables(IpFamily.IPv4);
        await new IptablesBackend(fresh, metrics, NullLogger.Instance).SyncAsync(StateBuilder.Full(state), default);
        Assert.Equal(fresh.Dump(), fake.Dump());
    }

    /// <summary>
    /// The cleanup of many chains for iptables-nft starts nat with <c>-S</c> (every one of its lines names a chain);
    /// filter, a small cleanup and legacy do not. Either way it leaves no chain of ours and the foreign ones as they were.
    /// </summary>
    [Theory]
    [InlineData(IptablesVariant.Nft, true, true)]
    [InlineData(IptablesVariant.Nft, false, false)]
    [InlineData(IptablesVariant.Legacy, true, false)]
    public async Task Cleanup_OfManyChains_ListsNatFirst_ForNftOnly(IptablesVariant variant, bool many, bool lists)
    {
        var fake = new FakeIptables(IpFamily.IPv4, variant);
        await fake.RestoreAsync("*nat\n:DOCKER - [0:0]\n-A DOCKER -j RETURN\nCOMMIT\n", default);
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(fake, metrics, NullLogger.Instance);
        var services = many ? IptablesCleanup.ListTableFromChains / 3 + 10 : IptablesCleanup.ListTableFromChains / 3 - 30;
        await backend.SyncAsync(StateBuilder.Full(Cluster(services)), default);
        var before = fake.Offered.Count;

        await backend.CleanupAsync(default);

        var cleanup = fake.Offered[before];
        Assert.Equal(lists, TableLines(cleanup, "nat").Contains("-S"));
        Assert.DoesNotContain("-S", TableLines(cleanup, "filter"));
        Assert.DoesNotContain(fake.Save("nat").Split('\n'), l => l.StartsWith(":KUBE-", StringComparison.Ordinal));
        Assert.Contains("-A DOCKER -j RETURN", fake.Save("nat").Split('\n'));
    }

    /// <summary>A restore may take longer the larger its script (iptables-nft-restore is superlinear in chains); a small one keeps 2 minutes.</summary>
    [Theory]
    [InlineData(0L, 120)]
    [InlineData(10_000_000L, 180)]
    [InlineData(120_000_000L, 840)]
    public void RestoreTimeout_GrowsWithTheScript(long bytes, int seconds) =>
        Assert.Equal(TimeSpan.FromSeconds(seconds), IptablesCommandApplier.RestoreTimeout(bytes));
}
