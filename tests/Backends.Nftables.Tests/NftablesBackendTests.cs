using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using static ProxyPlanes.Backends.Nftables.Tests.StateBuilder;

namespace ProxyPlanes.Backends.Nftables.Tests;

public sealed class NftablesBackendTests
{
    private static readonly IpFamily[] Both = [IpFamily.IPv4, IpFamily.IPv6];

    private static DesiredState Cluster(params string[] endpoints) =>
        State(null, Port(Info("web", "10.96.0.10,fd00:10:96::10"), endpoints.Select(e => Endpoint(e)).ToArray()));

    /// <summary>A sample's value (name plus exact label text) in the registry's exposition; fails when the series is missing.</summary>
    private static async Task<double> Metric(ProxyMetrics metrics, string series)
    {
        var text = await metrics.ExportTextAsync();
        var line = text.Split('\n').FirstOrDefault(l => l.StartsWith(series + " ", StringComparison.Ordinal));
        Assert.True(line is not null, $"{series} missing in:\n{text}");
        return double.Parse(line[(series.Length + 1)..], System.Globalization.CultureInfo.InvariantCulture);
    }

    private sealed class LinesLogger : Microsoft.Extensions.Logging.ILogger
    {
        public System.Collections.Concurrent.ConcurrentQueue<string> Lines { get; } = new();
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            Lines.Enqueue(formatter(state, exception));
    }

    [Fact]
    public async Task LargeFullSync_IsFollowedByACompactingCollection()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var logger = new LinesLogger();
        var backend = new NftablesBackend([IpFamily.IPv4], fake, metrics, logger);

        await backend.SyncAsync(StateBuilder.Full(Cluster("10.244.1.2")), default); // a small sync: no collection
        Assert.DoesNotContain(logger.Lines, l => l.StartsWith("After the full nftables sync", StringComparison.Ordinal));

        // ~8 operations per port (its chain, 2 rules, its service-ips, slot and hairpin elements): over the threshold.
        var ports = Enumerable.Range(0, NftablesBackend.CollectAfterFullSyncOperations / 6).Select(i =>
            Port(Info($"svc-{i:D5}", $"10.96.{i / 250}.{(i % 250) + 1}"), Endpoint($"10.244.{i / 250}.{(i % 250) + 1}"), Endpoint($"10.245.{i / 250}.{(i % 250) + 1}"))).ToArray();
        await backend.SyncAsync(StateBuilder.Full(State(null, ports)), default);
        var line = Assert.Single(logger.Lines, l => l.StartsWith("After the full nftables sync", StringComparison.Ordinal));
        Assert.Matches(@"^After the full nftables sync \(\d{5,} operations\): heap \d+ → \d+ MiB, collected in ", line);
    }

    /// <summary>
    /// Holds what it is given and what it reads back only weakly, as the netlink applier does not keep them: applies
    /// synchronously (as netlink does); reads back a table of one chain, synchronously too (a task completed later
    /// is the work item a pool thread ran, and the thread may hold it, with its result, until its next one).
    /// </summary>
    private sealed class ForgetfulApplier : INftablesApplier
    {
        public List<WeakReference> Transactions { get; } = [];
        public List<WeakReference> ReadBacks { get; } = [];

        public Task<NftKernelState> ReadAsync(IpFamily family, string table, CancellationToken cancellationToken)
        {
            var chain = new NftChain("services");
            var state = NftKernelState.Empty with { TableExists = true, Chains = NftKernelState.Empty.Chains.Add(chain.Name, chain) };
            ReadBacks.Add(new WeakReference(state));
            return Task.FromResult(state);
        }

        /// <summary>How many read-backs were still alive while a transaction was applied (encoded, at netlink's full sync).</summary>
        public int ReadBacksAliveAtApply { get; private set; }

        public Task ApplyAsync(NftTransaction transaction, CancellationToken cancellationToken)
        {
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            ReadBacksAliveAtApply += ReadBacks.Count(r => r.IsAlive);
            Transactions.Add(new WeakReference(transaction));
            return Task.CompletedTask;
        }

        public Task<int> CountRulesAsync(IpFamily family, string table, string chain, CancellationToken cancellationToken) => Task.FromResult(1);
    }

    private sealed class CallbackLogger(Action<string> onLine) : Microsoft.Extensions.Logging.ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;
        public bool IsEnabled(Microsoft.Extensions.Logging.LogLevel logLevel) => true;
        public void Log<TState>(Microsoft.Extensions.Logging.LogLevel logLevel, Microsoft.Extensions.Logging.EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
            onLine(formatter(state, exception));
    }

    [Fact]
    public async Task LargeFullSync_ItsReadBackIsGarbageByTheApply_ItsTransactionByTheCollectionAfterIt()
    {
        // Checked from inside the collection's log line, i.e. with the sync's frames on the stack: in a Debug build
        // (the tests', the benchmark's) a frame keeps every temporary it ever held until it returns.
        var applier = new ForgetfulApplier();
        var alive = new List<string>();
        var collections = 0;
        var logger = new CallbackLogger(line =>
        {
            if (!line.StartsWith("After the full nftables sync", StringComparison.Ordinal)) return;
            collections++;
            GC.Collect();
            GC.WaitForPendingFinalizers();
            GC.Collect();
            alive.AddRange(applier.Transactions.Where(t => t.IsAlive).Select(_ => $"a transaction (collection {collections})"));
            alive.AddRange(applier.ReadBacks.Where(t => t.IsAlive).Select(_ => $"a read-back (collection {collections})"));
        });
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4], applier, metrics, logger);
        var ports = Enumerable.Range(0, NftablesBackend.CollectAfterFullSyncOperations / 6).Select(i =>
            Port(Info($"svc-{i:D5}", $"10.96.{i / 250}.{(i % 250) + 1}"), Endpoint($"10.244.{i / 250}.{(i % 250) + 1}"), Endpoint($"10.245.{i / 250}.{(i % 250) + 1}"))).ToArray();

        await backend.SyncAsync(StateBuilder.Full(State(null, ports)), default); // cold
        await backend.SyncAsync(StateBuilder.Full(State(null, ports)), default); // a resync
        Assert.Equal(2, collections);
        Assert.Equal(2, applier.Transactions.Count);
        Assert.Equal(2, applier.ReadBacks.Count);
        Assert.Equal(0, applier.ReadBacksAliveAtApply); // not held beside the transaction and its batch: the peak
        Assert.Empty(alive);
        Assert.Equal(ports.Length, backend.LastPlan(IpFamily.IPv4)!.State.Ports.Count); // what is kept is kept
    }

    [Fact]
    public async Task FullSyncOverALargeTable_CollectsBeforeItPlans_AColdOneDoesNot()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var logger = new LinesLogger();
        var backend = new NftablesBackend([IpFamily.IPv4], fake, metrics, logger);
        static bool Before(string line) => line.StartsWith("Before the full nftables plan", StringComparison.Ordinal);

        await backend.SyncAsync(StateBuilder.Full(Cluster("10.244.1.2")), default); // cold: an empty table
        Assert.DoesNotContain(logger.Lines, Before);

        // A table of that many chains (left by a previous run): the next full sync collects first, then replaces them.
        var stale = new NftTransaction(IpFamily.IPv4, NftNames.Table);
        for (var i = 0; i < NftablesBackend.CollectBeforeFullPlanChains; i++) stale.Add(new NftChain($"stale-{i}"));
        fake.Apply(stale);
        await backend.SyncAsync(StateBuilder.Full(Cluster("10.244.1.3")), default);
        var line = Assert.Single(logger.Lines, Before);
        Assert.Matches(@"^Before the full nftables plan \(\d{5,} chains in the kernel\): heap \d+ → \d+ MiB, collected in ", line);
        Assert.DoesNotContain("stale-", fake.Dump(IpFamily.IPv4));
        Assert.Contains("10.244.1.3", fake.Dump(IpFamily.IPv4));
    }

    [Fact]
    public async Task FullSync_TransactionNotKept_PlannedAgainForTheFloor_LoadsTheSameTable()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4], fake, metrics, NullLogger.Instance);
        Assert.Null(backend.PlanLastFullSync(IpFamily.IPv4, NftKernelState.Empty)); // no full sync yet

        await backend.SyncAsync(StateBuilder.Full(Cluster("10.244.1.2", "10.244.1.3")), default);
        await backend.SyncAsync(Partial(Cluster("10.244.1.4"), Name("web")), default); // the last full sync stays the one above

        Assert.False(backend.LastPlan(IpFamily.IPv4)!.Transaction.IsEmpty); // a partial plan keeps its transaction
        var again = backend.PlanLastFullSync(IpFamily.IPv4, NftKernelState.Empty)!;
        var replay = new FakeNftables();
        replay.Apply(again);
        var cold = new FakeNftables();
        cold.Apply(new NftablesPlanner(IpFamily.IPv4).Plan(StateBuilder.Full(Cluster("10.244.1.2", "10.244.1.3")), null, null).Transaction);
        Assert.Equal(cold.Dump(IpFamily.IPv4), replay.Dump(IpFamily.IPv4));
        Assert.Contains("10.244.1.3 . 8080", replay.Dump(IpFamily.IPv4));
        Assert.DoesNotContain("10.244.1.4", replay.Dump(IpFamily.IPv4)); // the full sync's state, not the partial's

        await backend.SyncAsync(StateBuilder.Full(Cluster("10.244.1.4")), default);
        Assert.True(backend.LastPlan(IpFamily.IPv4)!.Full);
        Assert.True(backend.LastPlan(IpFamily.IPv4)!.Transaction.IsEmpty); // the whole table's objects are not kept
        Assert.Contains("10.244.1.4 . 8080", fake.Dump(IpFamily.IPv4));
    }

    [Fact]
    public async Task Sync_FirstFullThenPartial_ProgramsBothFamilies()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend(Both, fake, metrics, NullLogger.Instance);

        await backend.SyncAsync(new SyncRequest(Cluster("10.244.1.2", "fd00:10:244:1::2"), Full: false, new HashSet<ServicePortName>()), default);
        Assert.True(backend.LastPlan(IpFamily.IPv4)!.Full); // no state yet: full whatever was asked
        Assert.True(fake.HasTable(IpFamily.IPv6));

        await backend.SyncAsync(Partial(Cluster("10.244.1.3", "fd00:10:244:1::2"), Name("web")), default);

        Assert.False(backend.LastPlan(IpFamily.IPv4)!.Full);
        Assert.Contains("10.244.1.3 . 8080", fake.Dump(IpFamily.IPv4)); // the endpoint is an element of endpoint-slots
        Assert.Equal(fake.Count(IpFamily.IPv4).Rules + fake.Count(IpFamily.IPv6).Rules, backend.Counts.Rules);
        Assert.Equal(fake.Count(IpFamily.IPv4).Elements + fake.Count(IpFamily.IPv6).Elements, backend.Counts.Elements);
        Assert.Equal("nftables", backend.Mode);
    }

    [Fact]
    public async Task Sync_PartialOfOneFamily_LeavesTheOtherTableAlone()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend(Both, fake, metrics, NullLogger.Instance);
        var v4Only = State(null, Port(Info("web", "10.96.0.10"), Endpoint("10.244.1.2")));
        await backend.SyncAsync(Full(v4Only), default);
        var applied = fake.Applied;

        await backend.SyncAsync(Partial(State(null, Port(Info("web", "10.96.0.10"), Endpoint("10.244.1.3"))), Name("web")), default);

        Assert.Equal(applied + 1, fake.Applied);
        Assert.All(fake.Offered.Skip(applied), tx => Assert.Equal(IpFamily.IPv4, tx.Family));
    }

    [Fact]
    public async Task Sync_Refused_CountsTheFailure_KeepsTheTable_AndTheRetryIsFull()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4], fake, metrics, NullLogger.Instance);
        await backend.SyncAsync(Full(Cluster("10.244.1.2")), default);
        var before = fake.Dump(IpFamily.IPv4);

        fake.FailWhen = _ => new InvalidOperationException("kernel said no");
        var e = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(Partial(Cluster("10.244.1.3"), Name("web")), default));
        Assert.Contains("partial", e.Message);
        Assert.Equal(before, fake.Dump(IpFamily.IPv4));
        Assert.Equal(1, await Metric(metrics, NftablesMetrics.SyncFailuresTotal + "{ip_family=\"IPv4\"}"));

        fake.FailWhen = null;
        await backend.SyncAsync(Partial(Cluster("10.244.1.3"), Name("web")), default);
        Assert.True(backend.LastPlan(IpFamily.IPv4)!.Full);
        var fresh = new FakeNftables();
        await new NftablesBackend([IpFamily.IPv4], fresh, metrics, NullLogger.Instance).SyncAsync(Full(Cluster("10.244.1.3")), default);
        Assert.Equal(fresh.Dump(IpFamily.IPv4), fake.Dump(IpFamily.IPv4));
    }

    /// <summary>
    /// As kube-proxy's one proxier per family: the ip6 table refusing a transaction leaves the ip
    /// table's programmed (and the other way round), and the failure names the family that was applied.
    /// </summary>
    [Theory]
    [InlineData(IpFamily.IPv4, IpFamily.IPv6)]
    [InlineData(IpFamily.IPv6, IpFamily.IPv4)]
    public async Task Sync_OneFamilyRefused_TheOtherIsProgrammed_AndNamedApplied(IpFamily refused, IpFamily other)
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend(Both, fake, metrics, NullLogger.Instance);
        fake.FailWhen = tx => tx.Family == refused ? new InvalidOperationException("kernel said no") : null;

        var failure = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(Full(Cluster("10.244.1.2", "fd00:10:244:1::2")), default));

        Assert.Equal([other], failure.AppliedFamilies);
        Assert.True(fake.HasTable(other));
        Assert.False(fake.HasTable(refused));
        Assert.Equal(1, await Metric(metrics, NftablesMetrics.SyncFailuresTotal + $"{{ip_family=\"{refused}\"}}"));
    }

    [Fact]
    public async Task Cleanup_DeletesOurTablesOnly()
    {
        var fake = new FakeNftables();
        fake.Apply(new NftTransaction(IpFamily.IPv4, "someone-else").Add(new NftTable()));
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend(Both, fake, metrics, NullLogger.Instance);
        await backend.SyncAsync(Full(Cluster("10.244.1.2")), default);

        await backend.CleanupAsync(default);
        await backend.CleanupAsync(default); // nothing left: still fine

        Assert.False(fake.HasTable(IpFamily.IPv4));
        Assert.False(fake.HasTable(IpFamily.IPv6));
        Assert.True(fake.HasTable(IpFamily.IPv4, "someone-else"));
    }

    [Fact]
    public async Task Cleanup_Failing_IsCountedAndReported()
    {
        var fake = new FakeNftables();
        using var metrics = new ProxyMetrics();
        var backend = new NftablesBackend([IpFamily.IPv4], fake, metrics, NullLogger.Instance);
        await backend.SyncAsync(Full(Cluster("10.244.1.2")), default);
        fake.FailWhen = _ => new InvalidOperationException("busy");

        await Assert.ThrowsAsync<BackendSyncException>(() => backend.CleanupAsync(default));

        Assert.Equal(1, await Metric(metrics, NftablesMetrics.CleanupFailuresTotal + "{ip_family=\"IPv4\"}"));
        Assert.True(fake.HasTable(IpFamily.IPv4));
    }
}
