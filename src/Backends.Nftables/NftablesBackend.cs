using System.Runtime;
using System.Runtime.CompilerServices;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// --mode=nftables: one table per IP family (<c>ip proxyplanes</c>, <c>ip6 proxyplanes</c>) that
/// this proxy owns entirely, programmed with one atomic transaction per family and sync. A
/// refused transaction leaves the table as it was; that family's planner state is forgotten so
/// the retry is a full sync that first reads the table back. The other families are still synced,
/// and the failure names those applied (/healthz is per family).
/// </summary>
public sealed class NftablesBackend : IProxyBackend
{
    private readonly FamilyPlane[] _families;
    private readonly INftablesApplier _applier;
    private readonly NftablesMetrics _metrics;
    private readonly ILogger _logger;

    /// <summary>
    /// One table per family in <paramref name="families"/> (IPv4, and IPv6 where the kernel has
    /// it: see <see cref="NftCommandApplier.IsAvailableAsync"/>), programmed through <paramref name="applier"/>
    /// (<see cref="NftCommandApplier"/> in the daemon).
    /// </summary>
    public NftablesBackend(IEnumerable<IpFamily> families, INftablesApplier applier, ProxyMetrics metrics, ILogger logger, string table = NftNames.Table)
    {
        _families = families.Distinct().Select(f => new FamilyPlane(f, table)).ToArray();
        if (_families.Length == 0) throw new ArgumentException("at least one IP family is needed", nameof(families));
        _applier = applier;
        _metrics = new NftablesMetrics(metrics);
        _logger = logger;
        Table = table;
    }

    public string Mode => "nftables";

    /// <summary>The table name in each family (<c>proxyplanes</c>).</summary>
    public string Table { get; }

    /// <summary>The IP families this backend programs.</summary>
    public IReadOnlyList<IpFamily> Families => _families.Select(f => f.Family).ToArray();

    /// <summary>
    /// Chains, rules, sets (and maps) and elements in our tables after the last successful sync,
    /// summed over the families (unchanged objects included, as a partial sync leaves them in
    /// place), and how many rules and elements that sync wrote. For the metrics.
    /// </summary>
    public NftCounts Counts
    {
        get
        {
            var total = default(NftCounts);
            foreach (var plane in _families)
                if (plane.Counts is { } counts) total += counts;
            return total;
        }
    }

    /// <summary>
    /// The last plan applied for a family (for logs, the demo and tests); null from the start of a full sync
    /// (which lets go of it) until one succeeds. A full sync's plan is kept without its transaction (an empty one
    /// in its place): its operations hold every chain, rule and element of the table (tens of MiB at 10,000
    /// services), which nothing needs between syncs. <see cref="PlanLastFullSync"/> makes it again.
    /// </summary>
    public NftPlan? LastPlan(IpFamily family) => _families.FirstOrDefault(f => f.Family == family)?.LastPlan;

    /// <summary>
    /// The transaction of the last successful full sync of <paramref name="family"/>, planned again from the same
    /// desired state against <paramref name="kernel"/> (what the table held before it; <see cref="NftKernelState.Empty"/>
    /// for a cold sync's); null before the first full sync. The benchmark's floor loads it with nft.
    /// </summary>
    public NftTransaction? PlanLastFullSync(IpFamily family, NftKernelState kernel) =>
        _families.FirstOrDefault(f => f.Family == family) is { LastFullSync: { } request } plane
            ? new NftablesPlanner(family, Table).Plan(request with { Full = true }, null, kernel).Transaction
            : null;

    public async Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
    {
        TimeSpan render = TimeSpan.Zero, apply = TimeSpan.Zero;
        try
        {
            // Each family on its own: the ip6 table refusing a transaction leaves the ip table's in force.
            await BackendSyncException.ForEachFamilyAsync(_families, plane => plane.Family, async plane =>
            {
                // A partial sync that touches no service of this family leaves its table alone.
                if (!request.Full && plane.State is not null && !Touches(request, plane)) return;
                var (r, a) = await plane.SyncAsync(request, _applier, _metrics, _logger, cancellationToken).ConfigureAwait(false);
                render += r;
                apply += a;
            }).ConfigureAwait(false);
        }
        finally
        {
            var counts = Counts;
            _metrics.SetObjects(counts.Chains, counts.Rules, counts.Sets, counts.Elements);
        }
        return new SyncTimings(TimeSpan.Zero, render, apply);
    }

    /// <summary>Every family's table still has its canary chain with its rule.</summary>
    public async Task<bool> CanaryIntactAsync(CancellationToken cancellationToken)
    {
        foreach (var plane in _families)
        {
            int rules;
            try
            {
                rules = await _applier.CountRulesAsync(plane.Family, Table, NftNames.Canary, cancellationToken).ConfigureAwait(false);
            }
            catch (NftException e)
            {
                throw new BackendSyncException($"could not read the nftables canary: {e.Message}", e);
            }
            if (rules == 0) return false;
        }
        return true;
    }

    private static bool Touches(SyncRequest request, FamilyPlane plane) =>
        request.ChangedPorts.Any(name =>
            plane.State!.Ports.ContainsKey(name) ||
            (request.State.ServicePorts.TryGetValue(name, out var port) && port.Info.ClusterIPs.Any(ip => NodeAddresses.FamilyOf(ip) == plane.Family)));

    private sealed class FamilyPlane(IpFamily family, string table)
    {
        private readonly NftablesPlanner _planner = new(family, table);

        public IpFamily Family => family;
        public NftPlannerState? State { get; private set; }
        public NftPlan? LastPlan { get; private set; }

        /// <summary>The request of the last successful full sync (its desired state is Core's, shared).</summary>
        public SyncRequest? LastFullSync { get; private set; }

        /// <summary>The counts of the last successful sync (kept when a full sync lets go of <see cref="LastPlan"/>).</summary>
        public NftCounts? Counts { get; private set; }

        // Between the steps of SyncAsync: the table read back (until the plan), the plan (until it is applied and kept).
        private NftKernelState? _kernel;
        private NftPlan? _pending;

        /// <remarks>
        /// The read-back and the plan (whose transaction is the whole table at a full sync) are never held by this
        /// method itself, only by the fields above and by <see cref="ReadKernelAsync"/>, <see cref="PlanPending"/>,
        /// <see cref="StartApply"/> and <see cref="Commit"/>, whose frames are gone when the next step runs: without
        /// optimization (the Debug builds the benchmark runs) the JIT keeps every temporary of a method alive until
        /// it returns, and this method's frame is on the stack through the collection after a full sync, which then
        /// kept the whole transaction (130 MiB at 50,000 services × 5 endpoints). For the same reason an await that
        /// completes later resumes on a fresh stack (<see cref="ConfigureAwaitOptions.ForceYielding"/>), not on top of
        /// the frames that completed it (nft's listing text, the nft fallback's transaction).
        /// </remarks>
        public async Task<(TimeSpan Render, TimeSpan Apply)> SyncAsync(SyncRequest request, INftablesApplier applier, NftablesMetrics metrics, ILogger logger, CancellationToken cancellationToken)
        {
            var full = request.Full || State is null;
            if (full)
            {
                // A full sync needs neither the previous state nor the previous plan: letting go of them
                // before planning keeps one full plan alive at a time, not two (the peak of a resync).
                State = null;
                LastPlan = null;
            }
            var clock = Stopwatch.StartNew();
            TimeSpan read = TimeSpan.Zero, render = TimeSpan.Zero;
            try
            {
                // A full sync reads the table back first: what it holds that is not wanted goes.
                if (full) await ReadKernelAsync(applier, cancellationToken).ConfigureAwait(ConfigureAwaitOptions.ForceYielding);
                PlanPending(request, full, clock, logger, out read, out render);
                var applying = StartApply(applier, cancellationToken);
                await applying.ConfigureAwait(full && !applying.IsCompleted ? ConfigureAwaitOptions.ForceYielding : ConfigureAwaitOptions.None);
            }
            catch (OperationCanceledException)
            {
                // nft may have been killed before or after the kernel committed: start over with a full sync.
                (State, _kernel, _pending) = (null, null, null);
                throw;
            }
            catch (NftException e)
            {
                metrics.SyncFailed(family);
                State = null;
                _kernel = null;
                LogRejected(logger);
                throw new BackendSyncException($"nftables ({Nft.FamilyKeyword(family)} {table}) refused the {(full ? "full" : "partial")} sync; the previous rules stay in force: {e.Message}", e);
            }
            catch
            {
                (_kernel, _pending) = (null, null);
                throw;
            }
            var operations = Commit(request, full);
            if (full) ReturnFullSyncMemory(operations, logger);
            return (render, read + clock.Elapsed);
        }

        private async Task ReadKernelAsync(INftablesApplier applier, CancellationToken cancellationToken) =>
            _kernel = await applier.ReadAsync(family, table, cancellationToken).ConfigureAwait(false);

        /// <summary>Plans the sync into <see cref="_pending"/> (with the table read back, which it lets go of); the read and plan times.</summary>
        [MethodImpl(MethodImplOptions.NoInlining)] // its frame must be gone when SyncAsync goes on
        private void PlanPending(SyncRequest request, bool full, Stopwatch clock, ILogger logger, out TimeSpan read, out TimeSpan render)
        {
            var kernel = _kernel;
            _kernel = null;
            if (kernel is not null) CollectBeforeFullPlan(kernel, logger);
            read = clock.Elapsed;
            var planning = Stopwatch.StartNew();
            _pending = _planner.Plan(request, full ? null : State, kernel);
            render = planning.Elapsed;
            clock.Restart();
        }

        [MethodImpl(MethodImplOptions.NoInlining)] // its frame must be gone when SyncAsync goes on
        private Task StartApply(INftablesApplier applier, CancellationToken cancellationToken) =>
            applier.ApplyAsync(_pending!.Transaction, cancellationToken);

        private void LogRejected(ILogger logger)
        {
            if (_pending is { } plan) logger.LogDebug("Rejected {Family} nftables transaction:\n{Transaction}", family, plan.Transaction);
            _pending = null;
        }

        /// <summary>Keeps the applied plan's state and counts (not a full plan's transaction); how many operations it had.</summary>
        [MethodImpl(MethodImplOptions.NoInlining)] // its frame must be gone when SyncAsync goes on
        private int Commit(SyncRequest request, bool full)
        {
            var plan = _pending!;
            _pending = null;
            State = plan.State;
            // A full plan's transaction is the whole table: not kept (see NftablesBackend.LastPlan).
            LastPlan = full ? plan with { Transaction = new NftTransaction(family, table) } : plan;
            if (full) LastFullSync = request;
            Counts = plan.Counts;
            return plan.Transaction.Operations.Count;
        }
    }

    /// <summary>A full sync over a table of at least this many chains is preceded by a compacting collection (see <see cref="CollectBeforeFullPlan"/>).</summary>
    internal const int CollectBeforeFullPlanChains = 10_000;

    /// <summary>
    /// Before a full plan over a large table already in the kernel (a resync, a canary repair, a retry; never the
    /// cold start, whose table is empty), one blocking compacting collection of every generation, as the iptables
    /// backend does (docs/bench/2026-12-07-ipt-rss): the state and plan the sync has just let go of, the garbage
    /// of the read-back and of the partial syncs since the last full one are in gen2 by now and would stay beside
    /// the new plan and batch until allocation pressure brings a gen2 collection; the plan then reuses their
    /// memory instead of growing the heap (the run's peak RSS is a resync's, docs/bench/2026-12-07-nft-cold).
    /// </summary>
    private static void CollectBeforeFullPlan(NftKernelState kernel, ILogger logger)
    {
        if (kernel.Chains.Count < CollectBeforeFullPlanChains) return;
        FullSyncCollection.BeforePlan(logger, $"Before the full nftables plan ({kernel.Chains.Count} chains in the kernel)");
    }

    /// <summary>A full sync of at least this many operations is followed by a compacting collection (see <see cref="ReturnFullSyncMemory"/>).</summary>
    internal const int CollectAfterFullSyncOperations = 10_000;

    /// <summary>
    /// After a large full sync, one blocking compacting collection of every generation, the large object
    /// heap included, that gives the freed memory back (<see cref="GCCollectionMode.Aggressive"/>). The sync
    /// leaves a gen2 and LOH full of its own garbage (the read-back, the plan's work, the encoded batch):
    /// left alone, it stays in the process's RSS until allocation pressure triggers a gen2 collection, which
    /// on a quiet cluster may be hours away, and the next full sync piles its garbage on top. Costs one
    /// pause (tens of ms at 10,000 services, measured in docs/bench/2026-12-07-nft-periodic-rss) per full
    /// sync, which are rare (start, failure, flush, node change).
    /// </summary>
    private static void ReturnFullSyncMemory(int operations, ILogger logger)
    {
        if (operations < CollectAfterFullSyncOperations) return;
        FullSyncCollection.AfterSync(logger, $"After the full nftables sync ({operations} operations)");
    }

    /// <summary>Deletes this proxy's tables (every family), leaving everything else alone.</summary>
    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        var failed = await RemoveTablesAsync(_applier, _families.Select(f => f.Family), _logger, Table, cancellationToken).ConfigureAwait(false);
        if (failed.Count > 0)
        {
            foreach (var family in failed) _metrics.CleanupFailed(family);
            throw new BackendSyncException($"could not delete every {Table} nftables table (see the log)");
        }
    }

    /// <summary>
    /// Deletes the <c>proxyplanes</c> table of each family if present (e.g. when switching to
    /// another mode). Returns the families whose table could not be deleted (logged); empty when all went.
    /// </summary>
    public static async Task<IReadOnlyList<IpFamily>> RemoveTablesAsync(INftablesApplier applier, IEnumerable<IpFamily> families, ILogger logger, string table = NftNames.Table, CancellationToken cancellationToken = default)
    {
        var failed = new List<IpFamily>();
        foreach (var family in families)
        {
            var state = await TryReadAsync(applier, family, table, logger, cancellationToken).ConfigureAwait(false);
            // "add" first makes the delete succeed whether or not the table is there (even empty).
            var tx = new NftTransaction(family, table).Add(new NftTable()).Delete(new NftTable());
            try
            {
                await applier.ApplyAsync(tx, cancellationToken).ConfigureAwait(false);
                if (state is { TableExists: false }) logger.LogDebug("No nftables table {Family} {Table} to delete", Nft.FamilyKeyword(family), table);
                else logger.LogInformation("Deleted the nftables table {Family} {Table}", Nft.FamilyKeyword(family), table);
            }
            catch (NftException e)
            {
                failed.Add(family);
                logger.LogWarning("Could not delete the nftables table {Family} {Table}: {Error}", Nft.FamilyKeyword(family), table, e.Message);
            }
        }
        return failed;
    }

    private static async Task<NftKernelState?> TryReadAsync(INftablesApplier applier, IpFamily family, string table, ILogger logger, CancellationToken cancellationToken)
    {
        try
        {
            return await applier.ReadAsync(family, table, cancellationToken).ConfigureAwait(false);
        }
        catch (NftException e)
        {
            logger.LogDebug("Could not list {Family} tables: {Error}", Nft.FamilyKeyword(family), e.Message);
            return null;
        }
    }
}
