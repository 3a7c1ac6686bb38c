using System.Runtime.CompilerServices;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Backends.Iptables.Tests;

public sealed class IptablesBackendTests
{
    /// <summary>
    /// As kube-proxy's one proxier per family: one family's restore refused leaves the other's rules
    /// programmed (whichever comes first), and the failure names the family that was applied.
    /// </summary>
    [Theory]
    [InlineData(IpFamily.IPv4, IpFamily.IPv6)]
    [InlineData(IpFamily.IPv6, IpFamily.IPv4)]
    public async Task Sync_OneFamilyRefused_TheOtherIsProgrammed_AndNamedApplied(IpFamily refused, IpFamily other)
    {
        var (initial, _) = await new GoldenCase("dual-stack").SyncRequestsAsync();
        var fakes = new Dictionary<IpFamily, FakeIptables> { [IpFamily.IPv4] = new(IpFamily.IPv4), [IpFamily.IPv6] = new(IpFamily.IPv6) };
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(fakes.Select(f => (f.Key, (IIptablesApplier)f.Value)), metrics, NullLogger.Instance);
        fakes[refused].FailWhen = _ => new InvalidOperationException("refused (test)");

        var failure = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(initial, default));

        Assert.Equal([other], failure.AppliedFamilies);
        Assert.Contains(refused == IpFamily.IPv4 ? "iptables-restore" : "ip6tables-restore", failure.Message);
        Assert.Contains(":KUBE-SVC-", fakes[other].Save("nat"));
        Assert.DoesNotContain(":KUBE-SVC-", fakes[refused].Save("nat"));
        Assert.NotNull(backend.LastPlan(other));
        Assert.Null(backend.LastPlan(refused));
    }

    /// <summary>
    /// A full sync over a large table in place collects garbage before it plans: the state it has just dropped is
    /// gone by the time it returns (moved to gen2 first, where only a full collection frees it). The cold sync
    /// (no chain in the kernel) and a small table do not pause for it.
    /// </summary>
    [Theory]
    [InlineData(3_400, true)] // 3 nat chains a service: over CollectBeforeFullPlanChains
    [InlineData(100, false)]
    public async Task FullSyncOverALargeTable_CollectsBeforeItPlans(int services, bool collects)
    {
        var state = StateBuilder.State(null, [.. Enumerable.Range(0, services).Select(i => StateBuilder.Port(
            StateBuilder.Info($"svc{i}", $"10.96.{i / 250}.{i % 250 + 1}"), StateBuilder.Endpoint($"10.244.{i / 250}.{i % 250 + 1}"), StateBuilder.Endpoint($"10.245.{i / 250}.{i % 250 + 1}")))]);
        var logger = new ListLogger();
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(new FakeIptables(IpFamily.IPv4), metrics, logger);
        await backend.SyncAsync(StateBuilder.Full(state), default);
        Assert.DoesNotContain(logger.Entries, e => e.Message.Contains("Before the full iptables plan", StringComparison.Ordinal));
        var old = LastState(backend);
        GC.Collect(); // the state into gen2
        GC.Collect();

        await backend.SyncAsync(StateBuilder.Full(state), default);

        Assert.Equal(collects ? 1 : 0, logger.Entries.Count(e => e.Level == LogLevel.Information && e.Message.Contains("Before the full iptables plan", StringComparison.Ordinal)));
        if (collects) Assert.False(old.IsAlive, "the state dropped by the full sync is still in the heap");
        Assert.Empty(backend.LastPlan(IpFamily.IPv4)!.Script.ToString()); // the kernel held the plan: nothing sent
    }

    /// <summary>
    /// A full sync planning <see cref="IptablesBackend.CollectAfterFullSyncChains"/> service chains or more (lowered here)
    /// is followed by one compacting collection, logged with the heap before and after: the cold sync and a full sync
    /// over the rules in place (which sends nothing) both; a partial sync never. A full sync dropping a state that large
    /// collects before it reads the kernel too. Below it (the default 100,000 against this small state) none.
    /// </summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task LargeFullSync_IsFollowedByACompactingCollection_APartialOneIsNot(bool large)
    {
        var (initial, update) = await new GoldenCase("endpoint-removed").SyncRequestsAsync();
        var logger = new ListLogger();
        using var metrics = new ProxyMetrics();
        var backend = new IptablesBackend(new FakeIptables(IpFamily.IPv4), metrics, logger) { CollectAfterFullSyncChains = large ? 1 : 100_000 };
        int Collections() => logger.Entries.Count(e => e.Level == LogLevel.Information && e.Message.StartsWith("After the full iptables sync (", StringComparison.Ordinal));
        int BeforeReads() => logger.Entries.Count(e => e.Level == LogLevel.Information && e.Message.StartsWith("Before the full iptables read (", StringComparison.Ordinal));

        await backend.SyncAsync(initial, default);
        Assert.Equal(large ? 1 : 0, Collections());
        if (large) Assert.Matches(@"^After the full iptables sync \(\d+ service chains planned\): heap \d+ → \d+ MiB, collected in ", logger.Entries.Last().Message);
        await backend.SyncAsync(update!, default);
        Assert.False(update!.Full);
        Assert.Equal(large ? 1 : 0, Collections());
        Assert.Equal(0, BeforeReads()); // the cold sync dropped no state, a partial one drops none
        await backend.SyncAsync(update with { Full = true }, default);
        Assert.Equal(large ? 2 : 0, Collections());
        // The full sync dropped the last state (and plan): collected before it reads the kernel.
        Assert.Equal(large ? 1 : 0, BeforeReads());
        if (large) Assert.Matches(@"^Before the full iptables read \(\d+ service chains dropped\): heap \d+ → \d+ MiB, collected in ", logger.Entries.First(e => e.Message.StartsWith("Before the full iptables read", StringComparison.Ordinal)).Message);
    }

    /// <summary>A cleanup whose script reaches <see cref="IptablesBackend.CollectAfterCleanupBytes"/> (lowered here) is followed by a collection; a small one (the default 8 MiB) is not.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public async Task LargeCleanup_IsFollowedByACompactingCollection(bool large)
    {
        var (initial, _) = await new GoldenCase("endpoint-removed").SyncRequestsAsync();
        var logger = new ListLogger();
        using var metrics = new ProxyMetrics();
        var fake = new FakeIptables(IpFamily.IPv4);
        var backend = new IptablesBackend(fake, metrics, logger) { CollectAfterCleanupBytes = large ? 100 : 8L << 20 };
        await backend.SyncAsync(initial, default);

        await backend.CleanupAsync(default);

        Assert.DoesNotContain(":KUBE-SVC-", fake.Save("nat"));
        var lines = logger.Entries.Where(e => e.Message.StartsWith("After the IPv4 iptables cleanup (", StringComparison.Ordinal)).ToList();
        Assert.Equal(large ? 1 : 0, lines.Count);
        if (large) Assert.Matches(@"^After the IPv4 iptables cleanup \(\d+ MiB of script\): heap \d+ → \d+ MiB, collected in ", lines[0].Message);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static WeakReference LastState(IptablesBackend backend) => new(backend.LastPlan(IpFamily.IPv4)!.State);
}
