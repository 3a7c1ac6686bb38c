using System.Diagnostics;
using System.Runtime;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// --mode=ebpf: the planner's map writes applied in the plan's order, in runs of one kind (a batch each where the kernel can), through
/// <see cref="IEbpfMaps"/> (<see cref="EbpfKernel"/> in the daemon). BPF maps have no transactions;
/// the order is what keeps a half-applied plan harmless: a program never sees a master count above
/// the slots written, nor a slot naming a backend not written yet. When the kernel refuses a write,
/// the plan stops there, the planner's state is forgotten and the retry is a full sync that reads
/// the maps and writes what is still missing.
/// </summary>
public sealed class EbpfBackend : IProxyBackend
{
    private readonly IEbpfMaps _maps;
    private readonly EbpfPlanner _planner = new();
    private readonly EbpfMetrics _metrics;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Action? _cleanup;
    private EbpfPlannerState? _state;
    private DesiredState _applied = DesiredState.Empty;
    private EbpfNamesWriter? _names;

    /// <param name="cleanup">What <see cref="CleanupAsync"/> runs after closing the maps (detach and unpin, for the daemon's kernel).</param>
    public EbpfBackend(IEbpfMaps maps, ProxyMetrics metrics, ILogger logger, Action? cleanup = null)
    {
        _maps = maps;
        _metrics = new EbpfMetrics(metrics);
        _logger = logger;
        _cleanup = cleanup;
    }

    public string Mode => "ebpf";

    /// <summary>Both: the maps of layout 2 hold IPv4 and IPv6 frontends (the tc programs act on IPv4 only).</summary>
    public IReadOnlyList<IpFamily> Families { get; } = [IpFamily.IPv4, IpFamily.IPv6];

    /// <summary>
    /// The last plan applied (for logs and tests). A full plan is kept without its writes (<see cref="EbpfPlan.WriteCount"/>
    /// says how many it made): at 50,000 services × 5 they are 550,000 objects (~40 MiB) nothing reads again. Null from the
    /// start of a full sync (its state is what that sync lets go of) until one succeeds.
    /// </summary>
    public EbpfPlan? LastPlan { get; private set; }

    /// <summary>
    /// A full sync over maps holding at least this many entries (services and backends) collects garbage: before it plans when
    /// it read that many back (<see cref="CollectBeforeFullPlan"/>), and after it when it leaves that many
    /// (<see cref="ReturnFullSyncMemory"/>); 10,000 services × 2 hold 50,000.
    /// </summary>
    internal int CollectFullSyncEntries { get; init; } = 50_000;

    public async Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var timings = Sync(request, cancellationToken);
            // Here, not in Sync: its frame (a Debug build keeps every local to the end) still holds the plan's writes.
            if (LastPlan is { Full: true } plan) ReturnFullSyncMemory(plan.State.Maps);
            return timings;
        }
        catch
        {
            // Whatever failed (a read, a refused write, a cancellation), the maps may hold part of a plan: the next sync is full.
            _state = null;
            throw;
        }
        finally
        {
            _gate.Release();
        }
    }

    private SyncTimings Sync(SyncRequest request, CancellationToken cancellationToken)
    {
        var full = request.Full || _state is null;
        if (full)
        {
            // What a full sync replaces: let go before the read, so a large state is garbage by the time it plans.
            _state = null;
            LastPlan = null;
        }
        var apply = Stopwatch.StartNew();
        EbpfMapContents? contents;
        try
        {
            contents = full ? _maps.Read() : null;
        }
        catch (BpfException e)
        {
            throw new BackendSyncException($"eBPF: cannot read the maps for a full sync: {e.Message}", e);
        }
        if (full)
        {
            try
            {
                // A full sync re-checks the node: tc programs on a new interface, the node-port addresses.
                _maps.SyncNode(request.State.Network);
            }
            catch (Exception e) when (e is BpfException or Netlink.NetlinkException or IOException)
            {
                throw new BackendSyncException($"eBPF: cannot attach the tc programs or write the node addresses: {e.Message}", e);
            }
        }
        if (full) CollectBeforeFullPlan(contents!);
        var read = apply.Elapsed;
        var render = Stopwatch.StartNew();
        var previous = full ? null : _state;
        var plan = _planner.Plan(request with { Full = full }, previous, contents);
        render.Stop();

        apply.Restart();
        var written = 0;
        var writes = plan.Writes.AsSpan();
        while (written < writes.Length)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var run = writes.Slice(written, RunLength(writes, written));
            written += _maps.Write(run, out var refused);
            if (refused is not null)
            {
                var write = writes[written];
                _metrics.UpdateFailed(write.Map);
                throw new BackendSyncException(
                    $"eBPF: the kernel refused map write {written + 1} of {writes.Length} ({write}): {refused.Message}; the writes before it are in force and the next sync is full", refused);
            }
        }
        _state = plan.State;
        // A partial sync follows one that succeeded here (a failure makes the next one full), so its changed ports are
        // relative to _applied, as the planner above relies on too: only they can have left flows stale.
        var deletions = NothingApplied && !_maps.HoldsConnections()
            ? []
            : full
                ? StaleConntrackPlanner.Plan(_applied, request.State)
                : StaleConntrackPlanner.Plan(_applied, request.State, request.ChangedPorts);
        DeleteStaleConnections(deletions);
        // The master entries before the plan: the maps as read (full) or as the last plan left them (partial).
        DestroyStaleSockets(deletions, SocketDestroyer.ReopenedFrontends(writes, (full ? contents : previous?.Maps)!.Services));
        _applied = request.State;
        if (_maps is EbpfKernel kernel) (_names ??= new EbpfNamesWriter(kernel.Location.PinDirectory, _logger)).Write(plan); // names for explain; a failure only warns
        _metrics.SetEntries(plan.State.Maps.Services.Count, plan.State.Maps.Backends.Count);
        _logger.LogDebug("eBPF {Kind} sync: {Writes} map writes", full ? "full" : "partial", plan.Writes.Length);
        LastPlan = full ? plan with { Writes = [] } : plan;
        return new SyncTimings(TimeSpan.Zero, render.Elapsed, read + apply.Elapsed);
    }

    /// <summary>
    /// Before a full plan over large maps (a restart, a periodic or canary resync, a retry; never a cold start, whose maps are
    /// empty), one blocking compacting collection of every generation: the state and plan this sync has just let go and the
    /// garbage of the read are in gen2 by now and would otherwise stay beside the new plan until allocation pressure brings a
    /// gen2 collection (the run's peak). As the iptables and nftables backends do (docs/design.md); measured in
    /// docs/bench/2026-12-07-ebpf-mem.
    /// </summary>
    private void CollectBeforeFullPlan(EbpfMapContents contents)
    {
        var entries = contents.Services.Count + contents.Backends.Count;
        if (entries < CollectFullSyncEntries) return;
        FullSyncCollection.BeforePlan(_logger, $"Before the full eBPF plan ({entries} map entries read)");
    }

    /// <summary>
    /// After a full sync leaving large maps, one blocking compacting collection of every generation, the large object heap
    /// included, that gives the freed memory back (<see cref="GCCollectionMode.Aggressive"/>), as the nftables backend does:
    /// the sync's writes (one object each: 550,000 at 50,000 services × 5), its planning tables and the read-back are garbage
    /// in gen2 and the LOH now, and would otherwise stay in the RSS until allocation pressure brings a gen2 collection, with
    /// the next sync's garbage piled on top. One pause per full sync (rare: start, failure, canary repair, a resync).
    /// </summary>
    private void ReturnFullSyncMemory(EbpfMapContents maps)
    {
        var entries = maps.Services.Count + maps.Backends.Count;
        if (entries < CollectFullSyncEntries) return;
        FullSyncCollection.AfterSync(_logger, $"After the full eBPF sync ({entries} map entries)");
    }

    /// <summary>
    /// No service port applied yet (this process's first sync, or only empty ones so far): every deletion the stale pass
    /// could plan is a port's first endpoints, which concerns no socket (<see cref="SocketDestroyer.KeyFor"/>: its
    /// connects were refused) and only the tc programs' connection entries; with those maps empty (a cold start), the
    /// pass is skipped rather than walking every port for nothing.
    /// </summary>
    private bool NothingApplied => _applied.ServicePorts.IsEmpty;

    /// <summary>The most writes handed to the kernel at once (a cancellation is seen between runs).</summary>
    internal const int MaxRun = 4096;

    /// <summary>
    /// How many writes from <paramref name="start"/> are of one kind (a run the kernel can take as one batch; the plan's
    /// order holds within it, and runs go in order), at most <see cref="MaxRun"/>.
    /// </summary>
    internal static int RunLength(ReadOnlySpan<MapWrite> writes, int start)
    {
        var kind = writes[start].GetType();
        var end = start + 1;
        while (end < writes.Length && end - start < MaxRun && writes[end].GetType() == kind) end++;
        return end - start;
    }

    /// <summary>
    /// The tc programs' connection entries the sync left stale (UDP and SCTP flows to a gone endpoint or frontend,
    /// or to a port that just got its first endpoints), by the verdict the other modes give <c>conntrack -D</c>.
    /// Best effort, as their conntrack cleanup: a refusal is one warning and a counted failure, never a failed sync;
    /// the entries then wait for the LRU. (The kernel's conntrack never sees a frontend here: tc DNATs first.)
    /// </summary>
    private void DeleteStaleConnections(IReadOnlyList<ConntrackDeletion> deletions)
    {
        if (deletions.Count == 0) return;
        try
        {
            var deleted = _maps.DeleteConnections(deletions);
            _logger.LogDebug("eBPF: deleted {Entries} stale connection entries for {Deletions}", deleted, string.Join("; ", deletions));
        }
        catch (BpfException e)
        {
            _metrics.UpdateFailed(MapLayout.ConnectionsMap);
            _logger.LogWarning("eBPF: could not delete stale UDP connection entries ({Deletions}): {Error}; they stay until the LRU evicts them", string.Join("; ", deletions), e.Message);
        }
    }

    /// <summary>
    /// The local sockets of the same verdict: connected UDP sockets the hooks gave a removed endpoint (or any backend of
    /// a gone frontend) are destroyed, and so are the sockets a Drop verdict left on a VIP of <paramref name="reopened"/>
    /// (TCP still connecting, connected UDP: <see cref="SocketDestroyer"/>; nothing before kernel 6.5). Best effort too.
    /// </summary>
    private void DestroyStaleSockets(IReadOnlyList<ConntrackDeletion> deletions, IReadOnlyList<ServiceKey> reopened)
    {
        if (deletions.Count == 0 && reopened.Count == 0) return;
        try
        {
            var destroyed = _maps.DestroySockets(deletions, reopened);
            _metrics.SocketsDestroyed(destroyed);
            if (destroyed > 0)
                _logger.LogDebug("eBPF: destroyed {Sockets} sockets for {Deletions} and the frontends out of Drop {Reopened}", destroyed, string.Join("; ", deletions), string.Join("; ", reopened.Select(EbpfText.Frontend)));
        }
        catch (BpfException e)
        {
            _metrics.UpdateFailed(MapLayout.SockDeletionsMap);
            _logger.LogWarning("eBPF: could not destroy the connected UDP sockets of ({Deletions}) nor the sockets left on the frontends out of Drop ({Reopened}): {Error}; they keep their destination until they reconnect",
                string.Join("; ", deletions), string.Join("; ", reopened.Select(EbpfText.Frontend)), e.Message);
        }
    }

    public Task<bool> CanaryIntactAsync(CancellationToken cancellationToken) => Task.FromResult(_maps.Intact());

    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _state = null;
            _names?.Dispose();
            _names = null;
            (_maps as IDisposable)?.Dispose();
            _cleanup?.Invoke();
        }
        finally
        {
            _gate.Release();
        }
    }
}
