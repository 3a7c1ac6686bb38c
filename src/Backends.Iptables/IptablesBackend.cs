using System.Diagnostics;
using System.Text;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Core.Metrics;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Util;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// --mode=iptables: plans kube-proxy's chain layout and applies it with one
/// iptables-restore --noflush per sync. A failed restore leaves the previous rules in force (each
/// table commits atomically); the planner state is then forgotten so the retry is a full sync
/// that first reads the kernel.
/// </summary>
public sealed class IptablesBackend(IIptablesApplier applier, ProxyMetrics metrics, ILogger logger, IpFamily family = IpFamily.IPv4) : IProxyBackend
{
    private static readonly string[] FilterChains = [ChainNames.Services, ChainNames.ExternalServices, ChainNames.Forward, ChainNames.NodePorts, ChainNames.ProxyFirewall];
    private static readonly string[] NatChains = [ChainNames.Services, ChainNames.NodePorts, ChainNames.PostRouting, ChainNames.MarkMasq];

    private readonly IptablesPlanner _planner = new(family);
    private IptablesPlannerState? _state;

    public string Mode => "iptables";

    /// <summary>The last plan sent to the kernel (for logs, the demo and tests).</summary>
    public IptablesPlan? LastPlan { get; private set; }

    public async Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
    {
        var full = request.Full || _state is null;
        var apply = Stopwatch.StartNew();
        var kernel = full ? await ReadKernelAsync(cancellationToken).ConfigureAwait(false) : KernelTables.Empty;
        var read = apply.Elapsed;

        var render = Stopwatch.StartNew();
        var plan = _planner.Plan(request, _state, kernel); // no previous state: the planner writes everything
        render.Stop();

        apply.Restart();
        try
        {
            await applier.RestoreAsync(plan.Script, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            metrics.IptablesRestoreFailed(partial: !full);
            _state = null;
            logger.LogDebug("Rejected iptables-restore input:\n{Script}", plan.Script);
            throw new BackendSyncException($"iptables-restore ({applier.Variant}) refused the {(full ? "full" : "partial")} sync; the previous rules stay in force: {e.Message}", e);
        }
        apply.Stop();

        _state = plan.State;
        LastPlan = plan;
        metrics.SetIptablesRules("nat", plan.NatRulesTotal, plan.NatRulesWritten);
        metrics.SetIptablesRules("filter", plan.FilterRulesTotal, plan.FilterRulesWritten);
        return new SyncTimings(TimeSpan.Zero, render.Elapsed, read + apply.Elapsed);
    }

    private async Task<KernelTables> ReadKernelAsync(CancellationToken cancellationToken)
    {
        var nat = await applier.SaveAsync("nat", cancellationToken).ConfigureAwait(false);
        var filter = await applier.SaveAsync("filter", cancellationToken).ConfigureAwait(false);
        return IptablesSave.Parse(nat, filter);
    }

    /// <summary>
    /// Removes every chain this mode owns and every jump into them from the built-in chains,
    /// leaving all other rules as they were.
    /// </summary>
    public async Task CleanupAsync(CancellationToken cancellationToken)
    {
        var script = new StringBuilder();
        foreach (var (table, owned) in new[] { ("filter", FilterChains), ("nat", NatChains) })
            AppendCleanup(script, table, await applier.SaveAsync(table, cancellationToken).ConfigureAwait(false), owned);
        if (script.Length == 0)
        {
            logger.LogInformation("No iptables rules of ours found ({Variant})", applier.Variant);
            return;
        }
        await applier.RestoreAsync(script.ToString(), cancellationToken).ConfigureAwait(false);
        _state = null;
        logger.LogInformation("Removed the iptables rules and chains of this proxy ({Variant})", applier.Variant);
    }

    /// <summary>The cleanup script for one table, given its iptables-save (empty when nothing is ours).</summary>
    public static void AppendCleanup(StringBuilder script, string table, string save, IReadOnlyCollection<string> fixedChains)
    {
        bool Ours(string chain) => fixedChains.Contains(chain) || ChainNames.IsPerService(chain);
        var (chains, builtInRules) = IptablesSave.ParseTable(save);
        var jumps = builtInRules.Where(rule => rule.Split(' ') is var words && words.Length > 2 && words[^2] == "-j" && Ours(words[^1])).Order(StringComparer.Ordinal).ToList();
        var ours = chains.Where(Ours).Order(StringComparer.Ordinal).ToList();
        if (jumps.Count == 0 && ours.Count == 0) return;
        script.Append('*').Append(table).Append('\n');
        foreach (var chain in ours) script.Append(':').Append(chain).Append(" - [0:0]\n");
        foreach (var jump in jumps) script.Append("-D").Append(jump.AsSpan(2)).Append('\n');
        foreach (var chain in ours) script.Append("-X ").Append(chain).Append('\n');
        script.Append("COMMIT\n");
    }
}
