using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// --mode=iptables: plans kube-proxy's chain layout and applies it with one
/// iptables-restore --noflush per sync and IP family (ip6tables-restore for IPv6). A failed
/// restore leaves the previous rules in force (each table commits atomically); that family's
/// planner state is then forgotten so the retry is a full sync that first reads the kernel. The
/// other families are still synced, and the failure names those applied (/healthz is per family).
/// </summary>
public sealed class IptablesBackend : IProxyBackend
{
    private static readonly string[] FilterChains = [ChainNames.Services, ChainNames.ExternalServices, ChainNames.Forward, ChainNames.NodePorts, ChainNames.ProxyFirewall, ChainNames.Canary];
    private static readonly string[] NatChains = [ChainNames.Services, ChainNames.NodePorts, ChainNames.PostRouting, ChainNames.MarkMasq, ChainNames.Canary];

    /// <summary>A full sync finding at least this many chains (nat and filter) in the kernel collects garbage before it plans (see FamilyPlane.CollectBeforeFullPlan).</summary>
    internal const int CollectBeforeFullPlanChains = 10_000;

    /// <summary>
    /// A full sync planning at least this many service-port chains collects garbage after it (see
    /// FamilyPlane.ReturnFullSyncMemory): 100,000, between 10,000 × 2 (30,000 chains) and 50,000 × 5 (300,000).
    /// Tests lower it.
    /// </summary>
    internal int CollectAfterFullSyncChains { get; init; } = 100_000;

    /// <summary>A cleanup whose script holds at least this many bytes (8 MiB: 50,000 × 5 writes ~18 MB, 10,000 × 2 ~2 MB) collects garbage after it. Tests lower it.</summary>
    internal long CollectAfterCleanupBytes { get; init; } = 8L << 20;

    private readonly FamilyPlane[] _families;
    private readonly IptablesMetrics _metrics;
    private readonly ILogger _logger;

    /// <summary>One data plane per IP family the node runs (IPv4, and IPv6 where the kernel has it).</summary>
    public IptablesBackend(IEnumerable<(IpFamily Family, IIptablesApplier Applier)> families, ProxyMetrics metrics, ILogger logger)
    {
        _families = families.Select(f => new FamilyPlane(f.Family, f.Applier)).ToArray();
        if (_families.Length == 0) throw new ArgumentException("at least one IP family is needed", nameof(families));
        _metrics = new IptablesMetrics(metrics);
        _logger = logger;
    }

    public IptablesBackend(IIptablesApplier applier, ProxyMetrics metrics, ILogger logger, IpFamily family = IpFamily.IPv4)
        : this([(family, applier)], metrics, logger)
    {
    }

    public string Mode => "iptables";

    /// <summary>The iptables flavour the node uses (the same for every family).</summary>
    public IptablesVariant Variant => _families[0].Applier.Variant;

    /// <summary>The IP families this backend programs.</summary>
    public IReadOnlyList<IpFamily> Families => _families.Select(f => f.Family).ToArray();

    /// <summary>
    /// The last plan sent to the kernel for a family (for logs, the benchmark's floor and tests); its
    /// script is dropped when the next sync starts, and a full sync forgets it while it plans.
    /// </summary>
    public IptablesPlan? LastPlan(IpFamily family) => _families.FirstOrDefault(f => f.Family == family)?.LastPlan;

    public async Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
    {
        TimeSpan render = TimeSpan.Zero, apply = TimeSpan.Zero;
        try
        {
            // Each family on its own: ip6tables-restore refusing leaves IPv4's new rules in force.
            await BackendSyncException.ForEachFamilyAsync(_families, plane => plane.Family, async plane =>
            {
                // A partial sync that touches no service of this family leaves its tables alone.
                if (!request.Full && plane.State is not null && !Touches(request, plane)) return;
                var (r, a) = await plane.SyncAsync(request, _metrics, _logger, CollectAfterFullSyncChains, cancellationToken).ConfigureAwait(false);
                render += r;
                apply += a;
            }).ConfigureAwait(false);
        }
        finally
        {
            foreach (var plane in _families)
            {
                if (plane.LastPlan is not { } p) continue;
                _metrics.SetRules(plane.Family, "nat", p.NatRulesTotal, p.NatRulesWritten);
                _metrics.SetRules(plane.Family, "filter", p.FilterRulesTotal, p.FilterRulesWritten);
            }
        }
        return new SyncTimings(TimeSpan.Zero, render, apply);
    }

    /// <summary>
    /// Whether a partial sync must write this family: a changed port it programmed before (which
    /// may have lost this family, or be gone) or one it must program now.
    /// </summary>
    private static bool Touches(SyncRequest request, FamilyPlane plane) =>
        request.ChangedPorts.Any(name =>
            plane.State!.Ports.ContainsKey(name) ||
            (request.State.ServicePorts.TryGetValue(name, out var port) && port.Info.ClusterIPs.Any(ip => NodeAddresses.FamilyOf(ip) == plane.Family)));

    /// <summary>Every family's canary chain, in both tables, still holds its rule.</summary>
    public async Task<bool> CanaryIntactAsync(CancellationToken cancellationToken)
    {
        foreach (var plane in _families)
            foreach (var table in new[] { "nat", "filter" })
            {
                var rules = await plane.Applier.ListChainAsync(table, ChainNames.Canary, cancellationToken).ConfigureAwait(false);
                if (rules is null || !rules.Contains("-A " + ChainNames.Canary + " ", StringComparison.Ordinal)) return false;
            }
        return true;
    }

    private sealed class FamilyPlane(IpFamily family, IIptablesApplier applier)
    {
        private readonly IptablesPlanner _planner = new(family, variant: applier.Variant);

        public IpFamily Family => family;
        public IIptablesApplier Applier => applier;
        public IptablesPlannerState? State { get; private set; }
        public IptablesPlan? LastPlan { get; private set; }

        public async Task<(TimeSpan Render, TimeSpan Apply)> SyncAsync(SyncRequest request, IptablesMetrics metrics, ILogger logger, int collectAfterChains, CancellationToken cancellationToken)
        {
            var full = request.Full || State is null;
            // At 10,000 services a full plan's state and script are tens of MB: the last ones are not
            // kept alive beside the new. A full sync plans from the kernel alone (its read holds every
            // chain the last state had), and the last script is dropped (LastPlan keeps its counts).
            var dropped = full ? DropForFullSync() : 0;
            if (!full) LastPlan = LastPlan is { } last ? last with { Script = RestoreScript.Empty } : null;
            var render = new Stopwatch(); // the collections' pauses count as render
            if (full)
            {
                render.Start();
                CollectBeforeFullRead(dropped, collectAfterChains, logger);
                render.Stop();
            }
            var apply = Stopwatch.StartNew();
            var (kernel, filterSave) = full ? await ReadKernelAsync(cancellationToken).ConfigureAwait(false) : (KernelTables.Empty, "");
            var read = apply.Elapsed;

            render.Start();
            if (full) CollectBeforeFullPlan(kernel, logger);
            var previous = State;
            var plan = _planner.Plan(request, previous, kernel); // no previous state: the planner writes everything
            if (full) plan = OnlyWhatDiffers(plan, kernel);
            render.Stop();

            apply.Restart();
            try
            {
                // A partial sync whose changes leave this family's rules as they are sends nothing.
                if (!plan.Script.IsEmpty) await applier.RestoreAsync(plan.Script, cancellationToken).ConfigureAwait(false);
            }
            catch (CommandException e)
            {
                metrics.RestoreFailed(family, partial: !full);
                State = null;
                logger.LogDebug("Rejected {Family} iptables-restore input:\n{Script}", family, plan.Script);
                var rollback = await RollBackFilterAsync(plan, full ? FilterRollback(filterSave) : _planner.FilterRollback(previous!), logger, cancellationToken).ConfigureAwait(false);
                throw new BackendSyncException($"{(family == IpFamily.IPv4 ? "iptables" : "ip6tables")}-restore ({applier.Variant}) refused the {(full ? "full" : plan.Delta ? "partial (delta)" : "partial")} sync; {rollback}: {e.Message}", e);
            }
            State = plan.State;
            LastPlan = plan;
            if (full)
            {
                render.Start(); // the collection's pause counts as render, as the one before the plan
                ReturnFullSyncMemory(plan.State.Totals.OwnChains, collectAfterChains, logger);
                render.Stop();
            }
            return (render.Elapsed, read + apply.Elapsed);
        }

        /// <summary>
        /// Drops the last state and plan before a full sync; returns how many service chains the state held. A method of
        /// its own: a reference to the state read in the sync's frame (a Debug build keeps such temporaries until the
        /// first await that yields) would keep it alive through the collections that follow.
        /// </summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        private int DropForFullSync()
        {
            var chains = State?.Totals.OwnChains ?? 0;
            LastPlan = null;
            State = null;
            return chains;
        }

        /// <summary>
        /// Before a full sync reads the kernel, when it has just dropped a state of <paramref name="chains"/> service
        /// chains, <paramref name="threshold"/> or more, and the last plan: one blocking compacting collection. The read
        /// at 50,000 services × 5 endpoints (850,000 rules, 300,000 chain names kept) otherwise piled onto what the
        /// heap held since the last full sync (the last plan's script, ~120 MB after a cold sync, which the benchmark's
        /// floor restores; a cleanup's read; the partial syncs' garbage), and set the process's peak there, before the
        /// collection that precedes the plan (+50 MiB of RSS in 2 s at the benchmark's full resync, 2026-12-08).
        /// </summary>
        private static void CollectBeforeFullRead(int chains, int threshold, ILogger logger)
        {
            if (chains < threshold) return;
            FullSyncCollection.BeforePlan(logger, $"Before the full iptables read ({chains} service chains dropped)");
        }

        /// <summary>
        /// After a full sync that planned <paramref name="chains"/> service-port chains, <paramref name="threshold"/> or
        /// more (300,000 at 50,000 services × 5 endpoints), one blocking compacting collection of every generation, the
        /// large object heap included, that gives the freed memory back (<see cref="FullSyncCollection.AfterSync"/>). A
        /// full sync over rules in place leaves the kernel read's chain names and fingerprints, the dropped state and the
        /// script before its cut as garbage in gen2, which stayed there through the partial syncs that followed, so the
        /// next full sync's read piled its own on top before its collection (535 MiB of heap before it at 50,000 × 5, the
        /// benchmark's peak). At 10,000 × 2 (30,000 chains) the garbage is a few tens of MB and the pause would only add
        /// to the sync. A cold sync's script stays in <see cref="LastPlan"/> until the next sync starts: only its
        /// render's garbage is freed.
        /// </summary>
        private static void ReturnFullSyncMemory(int chains, int threshold, ILogger logger)
        {
            if (chains < threshold) return;
            FullSyncCollection.AfterSync(logger, $"After the full iptables sync ({chains} service chains planned)");
        }

        /// <summary>
        /// Before a full plan over a large kernel table (a restart, a canary repair, a retry; never the cold start),
        /// one blocking compacting collection of every generation: the last state and script the sync has just
        /// dropped and the garbage of the kernel read (30–44 of a 73–88 MiB heap at 10,000 × 2) are in gen2 by
        /// now, and would stay beside the new state, script and cut until allocation pressure brings a gen2
        /// collection; the plan then reuses their memory instead of growing the heap. Costs one pause per full
        /// sync (rare; 76–368 ms at 10,000 × 2 at loads 20–45), measured in docs/bench/2026-12-07-ipt-rss.
        /// </summary>
        private static void CollectBeforeFullPlan(KernelTables kernel, ILogger logger)
        {
            var chains = kernel.NatChains.Count + kernel.FilterChains.Count;
            if (chains < CollectBeforeFullPlanChains) return;
            FullSyncCollection.BeforePlan(logger, $"Before the full iptables plan ({chains} chains in the kernel)");
        }

        /// <summary>
        /// A full sync over rules already in place (a restarted proxy, a canary repair, a retry) sends only the
        /// chains whose rules differ from the kernel's (<see cref="RestoreDiff"/>): nothing when nothing does.
        /// Chains the state no longer wants, missing jumps from the built-in chains and chains changed or
        /// added from outside are repaired as by the whole script.
        /// </summary>
        private static IptablesPlan OnlyWhatDiffers(IptablesPlan plan, KernelTables kernel)
        {
            if (!IptablesPlanner.CutsToWhatDiffers(kernel)) return plan;
            var diff = RestoreDiff.Of(plan.Script, kernel.Digests!);
            return plan with
            {
                Script = diff.Script,
                NatRulesWritten = diff.RulesWritten.GetValueOrDefault("nat"),
                FilterRulesWritten = diff.RulesWritten.GetValueOrDefault("filter"),
                ChainsSkipped = diff.ChainsUnchanged + plan.ChainsLeftOut,
                FilterThenNat = diff.Tables.Count == 2,
            };
        }

        private async Task<(KernelTables Kernel, string FilterSave)> ReadKernelAsync(CancellationToken cancellationToken)
        {
            // nat (~10 MB at 10,000 services) is parsed as the tool prints it, never held whole; filter holds few
            // rules of ours and is kept as text for the rollback of a refused sync.
            // Every chain's rules are fingerprinted as they pass, for the cut of the plan down to what differs.
            ChainDigests natDigests = new(), filterDigests = new();
            var nat = await IptablesSave.ReadTableAsync(applier, "nat", cancellationToken, natDigests).ConfigureAwait(false);
            var filter = await applier.SaveAsync("filter", cancellationToken).ConfigureAwait(false);
            var kernel = IptablesSave.Kernel(nat, IptablesSave.ParseTable(filter, filterDigests)) with
            {
                Digests = new Dictionary<string, ChainDigests>(StringComparer.Ordinal) { ["nat"] = natDigests, ["filter"] = filterDigests },
            };
            return (kernel, filter);
        }

        /// <summary>
        /// iptables-restore commits each table at its COMMIT (iptables-nft sends one netlink batch per
        /// table), so a script of filter then nat refused in nat leaves filter committed. Filter is then
        /// put back as it was before this sync (<paramref name="rollback"/>: from the planner's last state,
        /// or from the save a full sync read), so no table keeps half a sync. Idempotent when filter was
        /// the table refused. Returns how the previous rules stand, for the one-line error.
        /// </summary>
        private async Task<string> RollBackFilterAsync(IptablesPlan plan, RestoreScript rollback, ILogger logger, CancellationToken cancellationToken)
        {
            if (!plan.FilterThenNat) return "the previous rules stay in force";
            try
            {
                await applier.RestoreAsync(rollback, cancellationToken).ConfigureAwait(false);
                return "the previous rules stay in force (filter rolled back)";
            }
            catch (CommandException e)
            {
                logger.LogWarning("Rolling back the {Family} filter table failed: {Error}", family, e.Message);
                return $"nat kept its previous rules, but filter may hold the refused sync's (its rollback failed too: {e.Message})";
            }
        }
    }

    /// <summary>Our filter chains as a full sync found them (<paramref name="filterSave"/>): declared, so flushed, and rewritten.</summary>
    private static RestoreScript FilterRollback(string filterSave)
    {
        var saved = IptablesSave.ParseTables(filterSave).FirstOrDefault(t => t.Name == "filter");
        var writer = new RuleWriter();
        foreach (var chain in FilterChains)
        {
            writer.Chain(chain);
            if (saved is not null && saved.Rules.TryGetValue(chain, out var rules))
                foreach (var rule in rules) writer.AppendRule(chain, rule);
        }
        var script = new RestoreScript();
        writer.WriteTable(script, "filter");
        return script;
    }

    /// <summary>
    /// Removes every chain this mode owns and every jump into them, leaving all other rules as they
    /// were; chains <paramref name="keep"/> names (table, chain) stay, with their rules: those of a
    /// mode now running on the node that uses the same names.
    /// </summary>
    public Task CleanupAsync(CancellationToken cancellationToken) => CleanupAsync(cancellationToken, keep: null);

    /// <inheritdoc cref="CleanupAsync(CancellationToken)"/>
    public async Task CleanupAsync(CancellationToken cancellationToken, Func<string, string, bool>? keep)
    {
        foreach (var plane in _families)
        {
            var applier = plane.Applier;
            // Held as UTF-8 chunks, never one string: 300,000 chains declared and deleted at 50,000 services × 5 endpoints.
            var script = new RestoreScript();
            foreach (var table in new[] { "filter", "nat" })
                await IptablesCleanup.AppendCleanupAsync(script, table, applier, OwnedBy(table, keep), cancellationToken).ConfigureAwait(false);
            if (script.IsEmpty)
            {
                _logger.LogInformation("No {Family} iptables rules of ours found ({Variant})", plane.Family, applier.Variant);
                continue;
            }
            await applier.RestoreAsync(script, cancellationToken).ConfigureAwait(false);
            _logger.LogInformation("Removed the {Family} iptables rules and chains of this proxy ({Variant})", plane.Family, applier.Variant);
            // 300,000 chain names read and an 18 MB script at 50,000 × 5: given back now, not left in gen2 under what comes next.
            if (script.Length >= CollectAfterCleanupBytes) FullSyncCollection.AfterSync(_logger, $"After the {plane.Family} iptables cleanup ({script.Length >> 20} MiB of script)");
        }
    }

    /// <summary>The cleanup script for one table, given its iptables-save (empty when nothing is ours).</summary>
    public static void AppendCleanup(StringBuilder script, string table, string save, Func<string, string, bool>? keep = null) =>
        IptablesCleanup.AppendCleanup(script, table, save, OwnedBy(table, keep));

    private static Func<string, bool> OwnedBy(string table, Func<string, string, bool>? keep) =>
        chain => Owns(table, chain) && keep?.Invoke(table, chain) != true;

    /// <summary>Whether this mode owns a chain of <paramref name="table"/> (nat or filter): its fixed chains and every per-service chain.</summary>
    public static bool Owns(string table, string chain) =>
        (table == "nat" ? NatChains : table == "filter" ? FilterChains : []).Contains(chain) || ChainNames.IsPerService(chain) || (table == "nat" && ChainNames.IsServicesShard(chain));
}
