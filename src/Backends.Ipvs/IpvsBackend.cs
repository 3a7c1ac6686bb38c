using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>
/// --mode=ipvs: kube-proxy's IPVS mode. Every service address is bound to the dummy link
/// kube-ipvs0 and each frontend is an IPVS virtual server with masquerading destinations; a few
/// helper rules matching ipsets do the masquerading, source ranges and filtering. A full sync
/// reads the kernel (virtual servers, destinations, addresses, ipsets, built-in chains) and
/// corrects every difference; a partial sync sends only the changed service ports' operations.
/// IPVS has no transactions: when the kernel refuses an operation the sync fails, the planner's
/// state is forgotten, and the retry is a full sync that reads the kernel and repairs it.
/// </summary>
public sealed class IpvsBackend : IProxyBackend
{
    private readonly IIpvsKernel _kernel;
    private readonly IpvsPlanner _planner;
    private readonly ProxyMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly bool _strictArp;
    private readonly IpvsTimeouts _timeouts;
    private IpvsPlannerState? _state;
    private bool _prepared;

    /// <summary>
    /// Test hook, read once by <see cref="CreateAsync(ProxyModeOptions, ProxyMetrics, ILogger, CancellationToken)"/>:
    /// a sync with more than N IPVS operations (virtual servers and destinations) applies the first N,
    /// logs <c>test hook ...: paused</c> and sleeps 10 minutes before the rest, so a crash test can
    /// SIGKILL the daemon in the middle of a sync. Never set it on a real node.
    /// </summary>
    public const string PauseAfterOperationsVariable = "PROXYPLANES_IPVS_PAUSE_AFTER_OPERATIONS";

    /// <summary>
    /// The IPVS data plane over <paramref name="kernel"/> (<see cref="IpvsKernel"/> in the daemon; see
    /// <see cref="CreateAsync"/>). <paramref name="scheduler"/> is kube-proxy's <c>ipvs.scheduler</c> (rr when
    /// null or empty) and must be one of <see cref="IpvsSchedulers.Known"/>. <paramref name="strictArp"/>
    /// and <paramref name="timeouts"/> are kube-proxy's <c>ipvs.strictARP</c> and IPVS timeouts, applied
    /// once before the first sync (a failure is one warning line; the proxy runs on).
    /// </summary>
    public IpvsBackend(
        IIpvsKernel kernel,
        ProxyMetrics metrics,
        ILogger logger,
        IEnumerable<IpFamily>? families = null,
        string? scheduler = null,
        TimeSpan? gracefulTerminationTimeout = null,
        IEnumerable<IpPrefix>? excludeCidrs = null,
        TimeProvider? time = null,
        bool strictArp = false,
        IpvsTimeouts timeouts = default)
    {
        var options = new IpvsPlannerOptions
        {
            Families = (families ?? [IpFamily.IPv4]).Distinct().Order().ToArray(),
            Scheduler = string.IsNullOrEmpty(scheduler) ? "rr" : scheduler,
            GracefulTerminationTimeout = gracefulTerminationTimeout ?? TimeSpan.FromMinutes(15),
            ExcludeCidrs = (excludeCidrs ?? []).ToArray(),
        };
        _planner = new IpvsPlanner(options); // validates the scheduler
        _kernel = kernel;
        _metrics = metrics;
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _strictArp = strictArp;
        _timeouts = timeouts;
    }

    /// <summary>The test hook of <see cref="PauseAfterOperationsVariable"/>: pause a sync after this many IPVS operations (null: never).</summary>
    public int? PauseAfterOperations { get; init; }

    /// <summary>
    /// What the daemon runs: netlink in the proxy's namespace, the node's iptables variant, IPv6 when
    /// the node's ip6tables works, and the mode's settings (<c>--ipvs-*</c> flags and the config file's <c>ipvs</c> section).
    /// </summary>
    public static async Task<IpvsBackend> CreateAsync(ProxyModeOptions options, ProxyMetrics metrics, ILogger logger, CancellationToken cancellationToken)
    {
        var variant = await IptablesCommandApplier.DetectAsync(IpFamily.IPv4, cancellationToken).ConfigureAwait(false);
        var families = new List<IpFamily> { IpFamily.IPv4 };
        if (await IptablesCommandApplier.IsAvailableAsync(IpFamily.IPv6, variant, cancellationToken).ConfigureAwait(false)) families.Add(IpFamily.IPv6);
        var pause = int.TryParse(Environment.GetEnvironmentVariable(PauseAfterOperationsVariable), out var n) && n >= 0 ? n : (int?)null;
        if (pause is not null) logger.LogWarning("Test hook {Variable}={Operations}: a sync with more IPVS operations pauses after that many", PauseAfterOperationsVariable, pause);
        return Create(options, new IpvsKernel(new IpvsKernelOptions { IptablesVariant = variant }), families, metrics, logger, pause);
    }

    /// <summary>The backend the mode's options describe, over <paramref name="kernel"/> (what <see cref="CreateAsync(ProxyModeOptions, ProxyMetrics, ILogger, CancellationToken)"/> builds).</summary>
    public static IpvsBackend Create(ProxyModeOptions options, IIpvsKernel kernel, IEnumerable<IpFamily> families, ProxyMetrics metrics, ILogger logger, int? pauseAfterOperations = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        var timeouts = options.IpvsTimeouts;
        return new IpvsBackend(kernel, metrics, logger, families, options.IpvsScheduler,
            excludeCidrs: options.IpvsExcludeCidrs, strictArp: options.IpvsStrictArp,
            timeouts: new IpvsTimeouts(Seconds(timeouts.Tcp), Seconds(timeouts.TcpFin), Seconds(timeouts.Udp)))
        {
            PauseAfterOperations = pauseAfterOperations,
        };
    }

    /// <summary>Whole seconds, as kube-proxy sends them (a fraction is dropped).</summary>
    private static uint Seconds(TimeSpan timeout) => timeout <= TimeSpan.Zero ? 0 : (uint)Math.Min(uint.MaxValue, (long)timeout.TotalSeconds);

    public string Mode => "ipvs";

    public IpvsPlannerOptions Options => _planner.Options;

    public IReadOnlyList<IpFamily> Families => _planner.Options.Families;

    /// <summary>The last plan applied (for logs, the demo and tests).</summary>
    public IpvsPlan? LastPlan { get; private set; }

    public async Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            var apply = Stopwatch.StartNew();
            if (!_prepared)
            {
                await Wrap("prepare", () => _kernel.PrepareAsync(_planner.Options, cancellationToken)).ConfigureAwait(false);
                await ApplyNodeSettingsAsync(cancellationToken).ConfigureAwait(false);
                _prepared = true;
            }
            var full = request.Full || _state is null;
            IpvsKernelView? view = null;
            IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>? live = null;
            if (full) view = await Wrap("read", () => _kernel.ReadAsync(_planner.Options.Families, cancellationToken)).ConfigureAwait(false);
            else
            {
                var inspect = _planner.ServersToInspect(request, _state!);
                if (inspect.Count > 0) live = await Wrap("read", () => _kernel.ReadDestinationsAsync(inspect, cancellationToken)).ConfigureAwait(false);
            }
            var read = apply.Elapsed;

            var render = Stopwatch.StartNew();
            var plan = _planner.Plan(request with { Full = full }, full ? _state : _state!, view, _time.GetUtcNow(), live);
            render.Stop();

            apply.Restart();
            try
            {
                await ApplyPlanAsync(plan, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is IpvsKernelException or Netlink.NetlinkException or OperationCanceledException)
            {
                // Part of the plan may be in the kernel: start over from what the kernel holds. One plan
                // carries every family, so no family is known to be applied (AppliedFamilies stays empty).
                _state = null;
                if (e is OperationCanceledException) throw;
                _logger.LogDebug("Refused IPVS plan:\n{Plan}", plan);
                throw new BackendSyncException($"the kernel refused the {(full ? "full" : "partial")} IPVS sync ({e.Message}); the next sync is full and repairs what was applied", e);
            }
            _state = plan.State;
            LastPlan = plan;
            _logger.LogDebug("IPVS {Kind} sync: {Operations} operations, {Servers} virtual servers, {Destinations} destinations, {Draining} draining",
                full ? "full" : "partial", plan.Operations.Length, plan.VirtualServers, plan.Destinations, plan.State.DrainingCount);
            return new SyncTimings(TimeSpan.Zero, render.Elapsed, read + apply.Elapsed);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>strictARP and the IPVS timeouts, once: each failure is one warning line, never a failed sync (as in kube-proxy for the timeouts).</summary>
    private async Task ApplyNodeSettingsAsync(CancellationToken cancellationToken)
    {
        if (_strictArp) _kernel.EnsureStrictArp(_logger);
        if (_timeouts.IsEmpty) return;
        try
        {
            await _kernel.SetTimeoutsAsync(_timeouts, cancellationToken).ConfigureAwait(false);
            _logger.LogInformation("ipvs.tcpTimeout/tcpFinTimeout/udpTimeout: IPVS timeouts now {Timeouts} (0 asked: kept)",
                await _kernel.GetTimeoutsAsync(cancellationToken).ConfigureAwait(false));
        }
        catch (Exception e) when (e is IpvsKernelException or NetlinkException)
        {
            _logger.LogWarning("ipvs.tcpTimeout/tcpFinTimeout/udpTimeout: cannot set the IPVS timeouts to {Timeouts} ({Reason}); the kernel's stay", _timeouts, e.Message);
        }
    }

    /// <summary>The plan's operations, split by the <see cref="PauseAfterOperations"/> test hook when it applies.</summary>
    private async Task ApplyPlanAsync(IpvsPlan plan, CancellationToken cancellationToken)
    {
        var split = PauseAfterOperations is { } limit ? PausePoint(plan.Operations, limit) : -1;
        if (split < 0)
        {
            await _kernel.ApplyAsync(plan.Operations, cancellationToken).ConfigureAwait(false);
            return;
        }
        await _kernel.ApplyAsync(plan.Operations[..split], cancellationToken).ConfigureAwait(false);
        _logger.LogWarning("Test hook {Variable}: paused after {Operations} IPVS operations, {Left} of the plan's {Total} operations not applied",
            PauseAfterOperationsVariable, PauseAfterOperations, plan.Operations.Length - split, plan.Operations.Length);
        await Task.Delay(TimeSpan.FromMinutes(10), _time, cancellationToken).ConfigureAwait(false);
        await _kernel.ApplyAsync(plan.Operations[split..], cancellationToken).ConfigureAwait(false);
    }

    /// <summary>The index just after the <paramref name="limit"/>-th IPVS operation, or -1 when the plan has no more than that.</summary>
    private static int PausePoint(IReadOnlyList<IpvsOperation> operations, int limit)
    {
        var seen = 0;
        for (var i = 0; i < operations.Count; i++)
        {
            if (operations[i].Kind != OperationKind.Ipvs) continue;
            if (seen == limit) return i;
            seen++;
        }
        return -1;
    }

    /// <summary>
    /// The canary: kube-ipvs0 is there and so is one virtual server the last sync left (the first
    /// in order), so both a deleted link and a cleared IPVS table (<c>ipvsadm -C</c>) are noticed
    /// with two netlink requests. The helper iptables rules are not checked here; a full sync repairs them.
    /// </summary>
    private VirtualServerKey? _canaryServer;

    public async Task<bool> CanaryIntactAsync(CancellationToken cancellationToken)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_state is null) return false;
            if (!await Wrap("read", () => _kernel.LinkExistsAsync(cancellationToken)).ConfigureAwait(false)) return false;
            if (_state.Kernel.IsEmpty) return true;
            // The same virtual server while the syncs keep it: finding the smallest key walks every server
            // (29.9 ms of a periodic sync at 10,000 services under the VM lane's emulation), so it is looked for
            // again only when the one checked is gone from the state.
            if (_canaryServer is not { } sample || !_state.Kernel.ContainsKey(sample)) _canaryServer = sample = _state.Kernel.Keys.Min();
            return await Wrap("read", () => _kernel.ServiceExistsAsync(sample, cancellationToken)).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    private async Task<T> Wrap<T>(string what, Func<Task<T>> action)
    {
        try
        {
            return await action().ConfigureAwait(false);
        }
        catch (Exception e) when (e is IpvsKernelException or Netlink.NetlinkException)
        {
            _state = null;
            throw new BackendSyncException($"IPVS mode could not {what} the kernel: {e.Message}", e);
        }
    }

    private Task Wrap(string what, Func<Task> action) => Wrap<bool>(what, async () =>
    {
        await action().ConfigureAwait(false);
        return true;
    });

    /// <summary>
    /// Removes what this mode installed: the helper rules and the jumps to them (both families), every
    /// virtual server (except those inside the excluded prefixes), kube-ipvs0 with its addresses, and
    /// the ipsets. As kube-proxy's cleanup, it takes the node's whole IPVS table to be the proxy's.
    /// </summary>
    public Task CleanupAsync(CancellationToken cancellationToken) => CleanupAsync(cancellationToken, keep: null);

    /// <summary>The cleanup beside a running mode: chains <paramref name="keep"/> names (table, chain) stay.</summary>
    public async Task CleanupAsync(CancellationToken cancellationToken, Func<string, string, bool>? keep)
    {
        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            _state = null;
            var families = _planner.Options.Families;
            var view = await Wrap("read", () => _kernel.ReadAsync(families, cancellationToken)).ConfigureAwait(false);
            var saves = new Dictionary<(IpFamily, string), string>();
            foreach (var family in families)
                foreach (var table in new[] { "filter", "nat" })
                    saves[(family, table)] = await Wrap("read", () => _kernel.SaveIptablesAsync(family, table, cancellationToken)).ConfigureAwait(false);
            var operations = PlanCleanup(view, saves, _planner.Options, keep);
            if (operations.Count == 0)
            {
                _logger.LogInformation("No IPVS mode state of ours found");
                return;
            }
            await Wrap("clean up", async () => await _kernel.ApplyAsync(operations, cancellationToken).ConfigureAwait(false)).ConfigureAwait(false);
            _logger.LogInformation("Removed the IPVS mode's virtual servers, {Link}, ipsets and helper rules", IpvsNames.Link);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// The cleanup operations: helper rules first (the ipsets are in use until they go), then virtual
    /// servers, the link (its addresses go with it) and the ipsets.
    /// </summary>
    public static List<IpvsOperation> PlanCleanup(IpvsKernelView view, IReadOnlyDictionary<(IpFamily, string), string> iptablesSaves, IpvsPlannerOptions options, Func<string, string, bool>? keep = null)
    {
        var operations = new List<IpvsOperation>();
        foreach (var family in options.Families)
        {
            var script = new StringBuilder();
            if (iptablesSaves.TryGetValue((family, "filter"), out var filter))
                IptablesCleanup.AppendCleanup(script, "filter", filter, chain => IpvsNames.CleanedUpInFilter(chain) && keep?.Invoke("filter", chain) != true);
            if (iptablesSaves.TryGetValue((family, "nat"), out var nat))
                IptablesCleanup.AppendCleanup(script, "nat", nat, chain => IpvsNames.CleanedUpInNat(chain) && keep?.Invoke("nat", chain) != true);
            if (script.Length > 0) operations.Add(new IptablesRestore(family, script.ToString()));
        }
        foreach (var key in view.Services.Keys.Order())
            if (options.Families.Contains(key.Family) && !options.ExcludeCidrs.Any(c => c.Contains(key.Address)))
                operations.Add(new DeleteService(key));
        if (view.LinkExists) operations.Add(new DeleteLink(IpvsNames.Link));
        var destroy = new StringBuilder();
        foreach (var definition in IpvsNames.Sets)
            foreach (var family in options.Families)
                if (view.Ipsets.ContainsKey(definition.Name(family))) destroy.Append("destroy ").Append(definition.Name(family)).Append('\n');
        if (destroy.Length > 0) operations.Add(new IpsetRestore(destroy.ToString()));
        return operations;
    }
}
