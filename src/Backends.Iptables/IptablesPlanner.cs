using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// What one service port holds after a sync: its own chains with their rule counts (nat), and its
/// rules in the shared chains (<see cref="SharedChain"/>), in order, exactly as written.
/// </summary>
public sealed record PortChains(ImmutableArray<(string Chain, int Rules)> Nat, ImmutableArray<SharedRule> Frontends)
{
    public int FilterRules => Frontends.Count(r => !r.IsNat);

    public int NatFrontendRules => Frontends.Count(r => r.IsNat);

    /// <summary>The rules of the port's own chains.</summary>
    public int NatOwnRules => Nat.Sum(c => c.Rules);
}

/// <summary>
/// The sums over every service port of a family that the rule metrics report, kept by the planner
/// so that a partial sync changes them by its changed ports only.
/// </summary>
public readonly record struct PortTotals(int NatOwnRules, int NatFrontendRules, int FilterFrontendRules, int OwnChains)
{
    public static PortTotals Of(PortChains port) => new(port.NatOwnRules, port.NatFrontendRules, port.FilterRules, port.Nat.Length);

    public static PortTotals operator +(PortTotals a, PortTotals b) =>
        new(a.NatOwnRules + b.NatOwnRules, a.NatFrontendRules + b.NatFrontendRules, a.FilterFrontendRules + b.FilterFrontendRules, a.OwnChains + b.OwnChains);

    public static PortTotals operator -(PortTotals a, PortTotals b) =>
        new(a.NatOwnRules - b.NatOwnRules, a.NatFrontendRules - b.NatFrontendRules, a.FilterFrontendRules - b.FilterFrontendRules, a.OwnChains - b.OwnChains);
}

/// <summary>
/// What the planner remembers between syncs: per service port its chains and its shared-chain
/// rules (so a partial sync sends only the rules that changed, deleting the old ones by their exact
/// text), and the rules that close <c>KUBE-SERVICES</c> (the node-ports jump) as last written.
/// <see cref="SlotRules"/> and <see cref="Totals"/> are kept from <see cref="Ports"/> so that a partial
/// sync costs what it changes, not what the node holds: per shared-chain slot
/// (<see cref="SharedRule.Slot"/>), how many rules each port holding any there has, in port order
/// (the insert position of a changed port's rules is the sum over the ports sorted ahead of it); and the
/// sums the metrics report.
/// </summary>
public sealed record IptablesPlannerState(ImmutableDictionary<ServicePortName, PortChains> Ports, ImmutableArray<string> ServicesTail)
{
    private static readonly ImmutableArray<ImmutableSortedDictionary<ServicePortName, int>> NoSlotRules =
        [.. Enumerable.Repeat(ImmutableSortedDictionary<ServicePortName, int>.Empty, SharedRule.SlotCount)];

    public static IptablesPlannerState Empty { get; } = new(ImmutableDictionary<ServicePortName, PortChains>.Empty, []);

    public ImmutableArray<ImmutableSortedDictionary<ServicePortName, int>> SlotRules { get; init; } = NoSlotRules;

    public PortTotals Totals { get; init; }

    /// <summary>Per slot, the rules each port of <paramref name="ports"/> holds there, computed from every port (what <see cref="SlotRules"/> must equal).</summary>
    public static ImmutableArray<ImmutableSortedDictionary<ServicePortName, int>> SlotRulesOf(IEnumerable<KeyValuePair<ServicePortName, PortChains>> ports)
    {
        var slots = NoSlotRules.Select(s => s.ToBuilder()).ToArray();
        foreach (var (name, port) in ports)
            foreach (var rule in port.Frontends)
                slots[rule.Slot][name] = slots[rule.Slot].GetValueOrDefault(name) + 1;
        return [.. slots.Select(s => s.ToImmutable())];
    }
}

/// <summary>
/// The planner's output: the exact iptables-restore input (<see cref="ToString"/>, empty when a
/// partial sync has nothing to send), and the rule counts the metrics report. <see cref="Delta"/>:
/// a partial sync that sent only the changed rules of the shared chains.
/// </summary>
public sealed record IptablesPlan(RestoreScript Script, IptablesPlannerState State, int NatRulesTotal, int FilterRulesTotal, int NatRulesWritten, int FilterRulesWritten, int ChainsSkipped, bool Delta = false)
{
    /// <summary>Both tables in the script, filter first (a refusal in nat leaves filter committed).</summary>
    public bool FilterThenNat { get; init; }

    /// <summary>
    /// Service ports' chains a full plan over rules in place left out as it wrote them, the kernel holding them as
    /// planned (<see cref="IptablesPlanner.CutsToWhatDiffers"/>): <see cref="Script"/> is the whole script without
    /// them, for <see cref="RestoreDiff"/> to cut the rest.
    /// </summary>
    public int ChainsLeftOut { get; init; }

    public override string ToString() => Script.ToString();
}

/// <summary>
/// Pure planner for the iptables data plane: DesiredState (+ the changed service ports) →
/// an iptables-restore script in kube-proxy's chain layout. A full sync flushes and writes every
/// chain. A partial sync flushes and rewrites only the chains of changed service ports, and in the
/// shared chains (<c>KUBE-SERVICES</c>, <c>KUBE-NODEPORTS</c>, <c>KUBE-EXTERNAL-SERVICES</c>,
/// <c>KUBE-PROXY-FIREWALL</c>) deletes those ports' old rules by their exact text and inserts the
/// new ones at the position a full sync would give them (ports in sorted order, the node-ports jump
/// last), so the kernel ends up with exactly what a full sync writes. Chains no longer wanted are
/// flushed and deleted in the same transaction. A partial sync visits only the changed ports
/// (<see cref="PlanDelta"/>): what it needs of the others is kept in <see cref="IptablesPlannerState"/>.
/// </summary>
public sealed class IptablesPlanner(IpFamily family, int masqueradeBit = 14, IptablesVariant variant = IptablesVariant.Nft)
{
    // Rules of the fixed chains besides the service ports' and the node-ports jump: KUBE-POSTROUTING (3)
    // and KUBE-MARK-MASQ (1) in nat, KUBE-FORWARD (3) in filter; one canary rule in each table.
    // The dispatch rules of nat KUBE-SERVICES into its shards are counted with the fixed rules.
    private const int FixedNatRules = 4 + ChainNames.ServiceShards, FixedFilterRules = 3, CanaryRules = 1;

    private readonly string _mark = "0x" + (1 << masqueradeBit).ToString("x", CultureInfo.InvariantCulture);
    private readonly RuleWriter _nat = new();
    private readonly RuleWriter _filter = new();
    private readonly SharedRuleBuilder _shared = new();

    /// <summary>
    /// Chains a cold sync's nat table must declare before it starts with <c>-S</c>
    /// (<see cref="RuleWriter.ListTableFirst"/>): below, iptables-nft's per-chain bookkeeping costs
    /// milliseconds, and listing the node's other rules would cost about as much.
    /// </summary>
    public const int ListTableFromChains = 1000;

    private string HostPrefix => family == IpFamily.IPv4 ? "/32" : "/128";

    /// <summary>
    /// Plans one sync. <paramref name="previous"/> is what the last successful sync left (null when
    /// unknown: then every chain is written); <paramref name="kernel"/> is what a full sync
    /// found in the kernel (stale chains to delete, built-in jumps already present).
    /// </summary>
    public IptablesPlan Plan(SyncRequest request, IptablesPlannerState? previous, KernelTables kernel)
    {
        _nat.Reset();
        _filter.Reset();
        var full = request.Full || previous is null;
        previous ??= IptablesPlannerState.Empty;
        var network = request.State.Network;
        var tail = NodePortsJumps(network);
        // A partial sync sends deltas of the shared chains only while the rules closing KUBE-SERVICES
        // are those the kernel has (a node-level change makes the controller ask for a full sync anyway).
        if (!full && previous.ServicesTail.SequenceEqual(tail)) return PlanDelta(request, previous);

        if (full)
        {
            WriteJumpsFromBuiltInChains(kernel);
            WriteCanary();
            // Over our rules in place, a service port's chain the kernel holds as planned is dropped as soon as it is
            // written (RestoreDiff would cut it from the whole script): the whole script is never held.
            if (CutsToWhatDiffers(kernel) && kernel.Digests!.TryGetValue("nat", out var natDigests)) _nat.LeaveOutUnchanged(natDigests);
        }
        WriteFixedChains();

        var ports = ImmutableDictionary.CreateBuilder<ServicePortName, PortChains>();
        var skippedChains = 0;
        var totals = new PortTotals();
        foreach (var (name, port) in request.State.ServicePorts)
        {
            if (ClusterIPOf(port) is not { } clusterIP) continue; // not a service of this family
            previous.Ports.TryGetValue(name, out var old);
            PortChains now;
            if (full || old is null || request.ChangedPorts.Contains(name))
            {
                now = WriteServicePort(port, clusterIP, network, [], rulesAhead: null);
            }
            else
            {
                // Unchanged since the last sync: its own chains stay in the kernel and are only
                // counted; its shared-chain rules are written again, as the shared chains are rewritten.
                now = old;
                AppendShared(old.Frontends);
                skippedChains += old.Nat.Length;
            }
            totals += PortTotals.Of(now);
            ports[name] = now;
        }
        // Node ports are matched last, after every service IP rule of KUBE-SERVICES.
        foreach (var rule in tail) _nat.AppendRule(ChainNames.Services, rule);
        DeleteStaleChains(full, previous, ports, kernel);
        // A cold sync of many chains has iptables-nft read the (still small) table whole, not chain by chain.
        // iptables-legacy has no such list (a cold sync costs it well under a second of CPU), and its listing
        // refuses to print a jump to a chain created earlier in the same restore.
        _nat.ListTableFirst = variant == IptablesVariant.Nft && full && _nat.ChainCount >= ListTableFromChains && !HoldsServiceChains(kernel.NatChains);

        var state = new IptablesPlannerState(ports.ToImmutable(), tail) { SlotRules = IptablesPlannerState.SlotRulesOf(ports), Totals = totals };
        return Finish(state, skippedChains, delta: false);
    }

    /// <summary>
    /// A partial sync as deltas, visiting only the changed ports, in port order: each one's shared-chain
    /// rules are replaced where they differ (inserted after the rules of the ports sorted ahead, read from
    /// <see cref="IptablesPlannerState.SlotRules"/>, which already holds the new state of the changed ports
    /// ahead), its own chains rewritten, its chains no longer wanted deleted; a port gone from this family
    /// loses its shared-chain rules and chains. Ports not changed are neither visited nor counted again.
    /// </summary>
    private IptablesPlan PlanDelta(SyncRequest request, IptablesPlannerState previous)
    {
        var network = request.State.Network;
        var ports = previous.Ports.ToBuilder();
        var slots = previous.SlotRules.ToArray();
        var totals = previous.Totals;
        var stale = new SortedSet<string>(StringComparer.Ordinal);
        var gone = new List<PortChains>();
        foreach (var name in request.ChangedPorts.Order())
        {
            var had = previous.Ports.TryGetValue(name, out var old);
            PortChains? now = null;
            if (request.State.ServicePorts.TryGetValue(name, out var port) && ClusterIPOf(port) is { } clusterIP)
            {
                now = WriteServicePort(port, clusterIP, network, old?.Frontends ?? [], slot => RulesAhead(slots[slot], name));
                ports[name] = now;
                totals += PortTotals.Of(now);
            }
            else if (had)
            {
                ports.Remove(name);
                gone.Add(old!);
            }
            UpdateSlotRules(slots, name, old?.Frontends ?? [], now?.Frontends ?? []);
            if (old is null) continue;
            totals -= PortTotals.Of(old);
            foreach (var (chain, _) in old.Nat)
                if (now is null || !now.Nat.Any(c => c.Chain == chain)) stale.Add(chain);
        }
        foreach (var old in gone)
            foreach (var rule in old.Frontends) Writer(rule.Chain).DeleteRule(rule.ChainName, rule.Rule);
        foreach (var chain in stale)
        {
            _nat.Chain(chain);
            _nat.DeleteChain(chain);
        }
        var state = new IptablesPlannerState(ports.ToImmutable(), previous.ServicesTail) { SlotRules = [.. slots], Totals = totals };
        // Every port's chains not rewritten here stayed in the kernel.
        var skipped = previous.Totals.OwnChains - request.ChangedPorts.Sum(n => previous.Ports.TryGetValue(n, out var o) ? o.Nat.Length : 0);
        return Finish(state, skipped, delta: true);
    }

    private IptablesPlan Finish(IptablesPlannerState state, int skippedChains, bool delta)
    {
        // A new script per plan: the plan owns it (the backend streams it to the tool), the writers are reused.
        var script = new RestoreScript();
        var filter = !delta || !_filter.IsEmpty;
        var nat = !delta || !_nat.IsEmpty;
        if (filter) _filter.WriteTable(script, "filter");
        if (nat) _nat.WriteTable(script, "nat");
        var totals = state.Totals;
        return new IptablesPlan(
            script, state,
            // A partial sync leaves the canary rule of each table in place: it is still ours.
            NatRulesTotal: FixedNatRules + CanaryRules + state.ServicesTail.Length + totals.NatFrontendRules + totals.NatOwnRules,
            FilterRulesTotal: FixedFilterRules + CanaryRules + totals.FilterFrontendRules,
            NatRulesWritten: _nat.RuleCount, FilterRulesWritten: _filter.RuleCount, ChainsSkipped: skippedChains, Delta: delta)
        { FilterThenNat = filter && nat, ChainsLeftOut = _nat.ChainsUnchanged };
    }

    /// <summary>
    /// Whether a full sync over <paramref name="kernel"/> sends only what differs (<see cref="RestoreDiff"/>): the kernel
    /// was read with the digests of its chains and holds our <c>KUBE-SERVICES</c> (in nat or filter). The planner then
    /// leaves out, as it writes them, the service ports' chains the kernel holds as planned.
    /// </summary>
    public static bool CutsToWhatDiffers(KernelTables kernel) =>
        kernel.Digests is not null && (kernel.NatChains.Contains(ChainNames.Services) || kernel.FilterChains.Contains(ChainNames.Services));

    private IPAddress? ClusterIPOf(ServicePortState port) => port.Info.ClusterIPs.FirstOrDefault(ip => NodeAddresses.FamilyOf(ip) == family);

    /// <summary>The rules a slot holds for the ports sorted ahead of <paramref name="name"/>.</summary>
    private static int RulesAhead(ImmutableSortedDictionary<ServicePortName, int> slot, ServicePortName name)
    {
        var sum = 0;
        foreach (var (other, rules) in slot)
        {
            if (other.CompareTo(name) >= 0) break;
            sum += rules;
        }
        return sum;
    }

    /// <summary>Replaces a port's entries in <paramref name="slots"/>: its rules there were <paramref name="old"/>, are <paramref name="now"/>.</summary>
    private static void UpdateSlotRules(ImmutableSortedDictionary<ServicePortName, int>[] slots, ServicePortName name, ImmutableArray<SharedRule> old, ImmutableArray<SharedRule> now)
    {
        foreach (var slot in old.Concat(now).Select(r => r.Slot).Distinct())
        {
            var count = now.Count(r => r.Slot == slot);
            slots[slot] = count == 0 ? slots[slot].Remove(name) : slots[slot].SetItem(name, count);
        }
    }

    /// <summary>
    /// The filter table as <paramref name="previous"/> left it: our filter chains declared (so
    /// flushed) and rewritten. iptables-restore commits each table on its own (iptables-nft too: one
    /// netlink batch per COMMIT), so when nat is refused after filter committed, the backend sends
    /// this to take filter back rather than leave it half a sync ahead of nat.
    /// </summary>
    public RestoreScript FilterRollback(IptablesPlannerState previous)
    {
        _nat.Reset();
        _filter.Reset();
        WriteCanary();
        WriteFixedChains();
        foreach (var (_, port) in previous.Ports.OrderBy(p => p.Key))
            foreach (var rule in port.Frontends)
                if (!rule.IsNat) _filter.AppendRule(rule.ChainName, rule.Rule);
        var script = new RestoreScript();
        _filter.WriteTable(script, "filter");
        return script;
    }

    private RuleWriter Writer(SharedChain chain) => SharedRule.Table(chain) == "nat" ? _nat : _filter;

    private void AppendShared(ImmutableArray<SharedRule> rules)
    {
        foreach (var rule in rules) Writer(rule.Chain).AppendRule(rule.ChainName, rule.Rule);
    }

    /// <summary>
    /// A changed port's shared-chain rules as a delta: in each shared chain where they differ, the old
    /// rules are deleted by their text and the new ones inserted where a full sync puts them, after
    /// the <paramref name="rulesAhead"/> rules of the ports sorted ahead of this one (which the script
    /// has already brought to their new state; deletions run before every insertion).
    /// </summary>
    private void WriteSharedDelta(ImmutableArray<SharedRule> old, ImmutableArray<SharedRule> now, Func<int, int> rulesAhead)
    {
        foreach (var slot in old.Concat(now).Select(r => r.Slot).Distinct().Order())
        {
            if (old.Where(r => r.Slot == slot).SequenceEqual(now.Where(r => r.Slot == slot))) continue;
            foreach (var rule in old)
                if (rule.Slot == slot) Writer(rule.Chain).DeleteRule(rule.ChainName, rule.Rule);
            var position = rulesAhead(slot);
            foreach (var rule in now)
                if (rule.Slot == slot) Writer(rule.Chain).InsertRule(rule.ChainName, ++position, rule.Rule);
        }
    }

    /// <summary>
    /// Jumps from the built-in chains into ours, in the order they should appear, as
    /// iptables-save prints them (without the leading "-A CHAIN").
    /// </summary>
    public static readonly ImmutableArray<(string Table, string Chain, string Rule)> BuiltInJumps =
    [
        ("filter", "INPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        ("filter", "INPUT", "-m comment --comment \"kubernetes health check service ports\" -j KUBE-NODEPORTS"),
        ("filter", "INPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        ("filter", "FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        ("filter", "FORWARD", "-m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD"),
        ("filter", "FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("filter", "FORWARD", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes externally-visible service portals\" -j KUBE-EXTERNAL-SERVICES"),
        ("filter", "OUTPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL"),
        ("filter", "OUTPUT", "-m conntrack --ctstate NEW -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "OUTPUT", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "PREROUTING", "-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
        ("nat", "POSTROUTING", "-m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING"),
    ];

    private void WriteJumpsFromBuiltInChains(KernelTables kernel)
    {
        // Inserted at the top only when missing, so a full sync repairs them and a partial sync
        // leaves them alone. Inserted in reverse so they end up in the listed order.
        for (var i = BuiltInJumps.Length - 1; i >= 0; i--)
        {
            var (table, chain, rule) = BuiltInJumps[i];
            var present = table == "nat" ? kernel.NatRules : kernel.FilterRules;
            if (present.Contains($"-A {chain} {rule}")) continue;
            (table == "nat" ? _nat : _filter).JumpFromBuiltIn(chain, rule, rule[(rule.LastIndexOf("-j ", StringComparison.Ordinal) + 3)..]);
        }
    }

    /// <summary>The canary chain of each table (see <see cref="ChainNames.Canary"/>): one rule, written only by a full sync.</summary>
    private void WriteCanary()
    {
        foreach (var writer in new[] { _filter, _nat })
        {
            writer.Chain(ChainNames.Canary);
            writer.Append(ChainNames.Canary).Comment("proxyplanes canary: when this rule is gone, a full sync restores every rule").Jump("RETURN").End();
        }
    }

    private void WriteFixedChains()
    {
        foreach (var chain in new[] { ChainNames.Services, ChainNames.ExternalServices, ChainNames.Forward, ChainNames.NodePorts, ChainNames.ProxyFirewall })
            _filter.Chain(chain);
        foreach (var chain in new[] { ChainNames.Services, ChainNames.NodePorts, ChainNames.PostRouting, ChainNames.MarkMasq })
            _nat.Chain(chain);

        // KUBE-SERVICES dispatches on the destination's low bits; the node-ports jump follows (see ChainNames.ServiceShards).
        var low = family == IpFamily.IPv4 ? "0.0.0." : "::";
        var mask = family == IpFamily.IPv4 ? (ChainNames.ServiceShards - 1).ToString(CultureInfo.InvariantCulture) : (ChainNames.ServiceShards - 1).ToString("x", CultureInfo.InvariantCulture);
        for (var shard = 0; shard < ChainNames.ServiceShards; shard++)
        {
            var shardChain = ChainNames.ServicesShard(shard);
            _nat.Chain(shardChain);
            var value = family == IpFamily.IPv4 ? shard.ToString(CultureInfo.InvariantCulture) : shard == 0 ? "" : shard.ToString("x", CultureInfo.InvariantCulture);
            _nat.Append(ChainNames.Services).Arg($"-d {low}{value}/{low}{mask}").Jump(shardChain).End();
        }

        // Packets marked for masquerade get SNAT on the way out; the mark is cleared first so a
        // packet re-entering the stack is not masqueraded twice.
        _nat.Append(ChainNames.PostRouting).Arg($"-m mark ! --mark {_mark}/{_mark}").Jump("RETURN").End();
        _nat.Append(ChainNames.PostRouting).Jump($"MARK --xor-mark {_mark}").End();
        _nat.Append(ChainNames.PostRouting).Comment("kubernetes service traffic requiring SNAT").Jump("MASQUERADE --random-fully").End();
        _nat.Append(ChainNames.MarkMasq).Jump($"MARK --or-mark {_mark}").End();

        _filter.Append(ChainNames.Forward).Arg("-m conntrack --ctstate INVALID").Jump("DROP").End();
        _filter.Append(ChainNames.Forward).Comment("kubernetes forwarding rules").Arg($"-m mark --mark {_mark}/{_mark}").Jump("ACCEPT").End();
        _filter.Append(ChainNames.Forward).Comment("kubernetes forwarding conntrack rule").Arg("-m conntrack --ctstate RELATED,ESTABLISHED").Jump("ACCEPT").End();
    }

    /// <summary>The rules that close nat KUBE-SERVICES: local destinations (or --nodeport-addresses) go on to KUBE-NODEPORTS.</summary>
    private ImmutableArray<string> NodePortsJumps(NodeNetwork network)
    {
        _shared.Clear();
        const string comment = "kubernetes service nodeports; NOTE: this must be the last rule in this chain";
        if (network.NodePortAddresses is { } addresses)
        {
            foreach (var address in addresses.Where(a => NodeAddresses.FamilyOf(a) == family))
                _shared.Start(SharedChain.NatServices).Comment(comment).Arg($"-d {address}{HostPrefix}").Jump(ChainNames.NodePorts).End();
        }
        else
        {
            // Every local address, except loopback: localhost node ports would need route_localnet.
            var loopback = family == IpFamily.IPv4 ? "127.0.0.0/8" : "::1/128";
            _shared.Start(SharedChain.NatServices).Comment(comment).Arg($"-m addrtype --dst-type LOCAL ! -d {loopback}").Jump(ChainNames.NodePorts).End();
        }
        return [.. _shared.ToImmutable().Select(r => r.Rule)];
    }

    /// <summary>
    /// One service port in this family: the verdicts Core decided for it, and how this planner names
    /// and renders them. Nothing here reads traffic policies.
    /// </summary>
    private sealed record PortShape(ServicePortState Port, IPAddress ClusterIP, ServicePortVerdict Verdict)
    {
        public ServicePortInfo Info => Port.Info;
        public string Comment => Info.Name.ToString();
        public string Protocol => ChainNames.ProtocolName(Info.Protocol);
        public TrafficVerdict Internal => Verdict.InternalTraffic;
        public TrafficVerdict External => Verdict.ExternalTraffic;

        /// <summary>The spread over a pool: <c>KUBE-SVC-*</c> (Cluster) or <c>KUBE-SVL-*</c> (Local).</summary>
        public string PoolChain(EndpointPool pool) => pool == EndpointPool.Local ? ChainNames.LocalPolicy(Info.Name) : ChainNames.ClusterPolicy(Info.Name);

        /// <summary>
        /// External traffic enters the port's nat chains unless it is rejected: when it is dropped,
        /// the short-circuit rules of the EXT chain still apply, and the rest meets the filter DROP.
        /// </summary>
        public bool ExternalEntersNat => External.Action != TrafficAction.Reject;

        public bool UsesExternalChain => ExternalEntersNat && Info.HasExternalFrontends;

        /// <summary>Rejected traffic needs no firewall: nothing is DNATed for it.</summary>
        public bool UsesFirewallChain(IpFamily family) =>
            ExternalEntersNat && Info.LoadBalancerIPs.Any(ip => NodeAddresses.FamilyOf(ip) == family) && !Verdict.SourceRanges.IsEmpty;

        /// <summary>
        /// The filter rule of traffic to <paramref name="frontend"/> that is not forwarded: REJECT when
        /// nothing can serve; DROP when only the Local policy has nothing here. The comment names the
        /// frontend (kube-proxy's does not), so <c>proxyplanes explain</c> can tell an external IP from a
        /// load-balancer IP or a node port by reading the kernel alone.
        /// </summary>
        public (string Target, string Comment) FilterOf(TrafficVerdict verdict, string frontend) =>
            verdict.Action == TrafficAction.Drop ? ("DROP", $"{Comment} {frontend} has no local endpoints") : ("REJECT", $"{Comment} {frontend} has no endpoints");

        public (string Target, string Comment) InternalFilter => FilterOf(Internal, "cluster IP");
        public (string Target, string Comment) ExternalFilter(string frontend) => FilterOf(External, frontend);
    }

    private PortShape ShapeOf(ServicePortState port, IPAddress clusterIP) => new(port, clusterIP, port.VerdictFor(family));

    /// <summary>
    /// Writes a service port's shared-chain rules (appended, or with <paramref name="rulesAhead"/> as a
    /// delta from <paramref name="oldFrontends"/>) and its own chains; returns what it holds now.
    /// </summary>
    private PortChains WriteServicePort(ServicePortState port, IPAddress clusterIP, NodeNetwork network, ImmutableArray<SharedRule> oldFrontends, Func<int, int>? rulesAhead)
    {
        var shape = ShapeOf(port, clusterIP);
        var frontends = Frontends(shape, network);
        if (rulesAhead is not null) WriteSharedDelta(oldFrontends, frontends, rulesAhead);
        else AppendShared(frontends);

        var chains = ImmutableArray.CreateBuilder<(string, int)>();
        var info = shape.Info;
        var name = info.Name;
        var comment = shape.Comment;
        var protocol = shape.Protocol;
        var detector = network.LocalDetector;
        int before;

        // Internal traffic: off-cluster sources reaching a cluster IP are masqueraded, so that
        // replies come back through this node even if the client routed the VIP to us.
        var verdict = shape.Verdict;
        var masqueradeRule = verdict.InternalMasquerade != SourceMasquerade.None;

        if (shape.UsesExternalChain)
        {
            var chain = ChainNames.External(name);
            before = _nat.RuleCount;
            _nat.OwnChain(chain);
            if (verdict.ExternalMasquerade)
            {
                // Cluster policy may cross to another node: masquerade so the reply comes back here.
                _nat.Append(chain).Comment($"masquerade traffic for {comment} external destinations").Jump(ChainNames.MarkMasq).End();
            }
            else if (verdict.LocalShortCircuit != LocalShortCircuit.None)
            {
                // Local policy keeps the client's source. Pods reaching an external destination of
                // their own cluster are short-circuited to the cluster chain, as if they had gone out
                // to the load balancer and come back.
                if (verdict.LocalShortCircuit == LocalShortCircuit.PodsAndNode)
                    _nat.Append(chain).Comment($"pod traffic for {comment} external destinations").Arg(IfLocal(detector)).Jump(ChainNames.ClusterPolicy(name)).End();
                // The node's own traffic has a local source address (the VIP may be local):
                // masquerade it and let it use any endpoint.
                _nat.Append(chain).Comment($"masquerade LOCAL traffic for {comment} external destinations").Arg("-m addrtype --src-type LOCAL").Jump(ChainNames.MarkMasq).End();
                _nat.Append(chain).Comment($"route LOCAL traffic for {comment} external destinations").Arg("-m addrtype --src-type LOCAL").Jump(ChainNames.ClusterPolicy(name)).End();
            }
            if (shape.External.IsForward) _nat.Append(chain).Jump(shape.PoolChain(shape.External.Pool)).End();
            chains.Add((chain, _nat.RuleCount - before));
            _nat.EndOwnChain(chain); // left out when the kernel holds it as written (a full sync over rules in place)
        }

        if (shape.UsesFirewallChain(family))
        {
            // loadBalancerSourceRanges: allowed sources continue to the EXT chain; anything that
            // falls through is not DNATed and meets the DROP in KUBE-PROXY-FIREWALL.
            var chain = ChainNames.Firewall(name);
            before = _nat.RuleCount;
            _nat.OwnChain(chain);
            foreach (var range in verdict.SourceRanges)
                _nat.Append(chain).Comment($"{comment} loadbalancer IP").Arg($"-s {range}").Jump(ChainNames.External(name)).End();
            // A VIP-like load balancer IP is often local: a request from the node to it loops back
            // with the VIP as its source, which must be allowed when the node itself is.
            if (verdict.SourceRangesAllowNode)
                foreach (var ip in OfFamily(info.LoadBalancerIPs))
                    _nat.Append(chain).Comment($"{comment} loadbalancer IP").Arg($"-s {ip}{HostPrefix}").Jump(ChainNames.External(name)).End();
            chains.Add((chain, _nat.RuleCount - before));
            _nat.EndOwnChain(chain); // left out when the kernel holds it as written (a full sync over rules in place)
        }

        // One spread per pool in use; the cluster IP's masquerade rule lives in its pool's chain.
        if (!verdict.ClusterEndpoints.IsEmpty)
        {
            var chain = ChainNames.ClusterPolicy(name);
            before = _nat.RuleCount;
            _nat.OwnChain(chain);
            if (masqueradeRule && shape.Internal.Pool == EndpointPool.Cluster) WriteMasqueradeRule(chain, shape, network);
            WriteEndpointJumps(shape, chain, verdict.ClusterEndpoints);
            chains.Add((chain, _nat.RuleCount - before));
            _nat.EndOwnChain(chain); // left out when the kernel holds it as written (a full sync over rules in place)
        }

        if (!verdict.LocalEndpoints.IsEmpty)
        {
            var chain = ChainNames.LocalPolicy(name);
            before = _nat.RuleCount;
            _nat.OwnChain(chain);
            if (masqueradeRule && shape.Internal.Pool == EndpointPool.Local) WriteMasqueradeRule(chain, shape, network);
            WriteEndpointJumps(shape, chain, verdict.LocalEndpoints);
            chains.Add((chain, _nat.RuleCount - before));
            _nat.EndOwnChain(chain); // left out when the kernel holds it as written (a full sync over rules in place)
        }

        foreach (var endpoint in verdict.Endpoints)
        {
            var chain = ChainNames.Endpoint(name, endpoint);
            before = _nat.RuleCount;
            _nat.OwnChain(chain);
            // Hairpin: a pod reaching itself through the service must be masqueraded, or its
            // reply would skip the un-DNAT.
            _nat.Append(chain).Comment(comment).Arg($"-s {endpoint.Address}{HostPrefix}").Jump(ChainNames.MarkMasq).End();
            _nat.Append(chain).Comment(comment);
            // ClientIP affinity: remember which endpoint this client was sent to.
            if (verdict.AffinityTimeoutSeconds is not null) _nat.Arg($"-m recent --name {chain} --set");
            _nat.Arg($"-m {protocol} -p {protocol}").Jump($"DNAT --to-destination {endpoint.Endpoint}").End();
            chains.Add((chain, _nat.RuleCount - before));
            _nat.EndOwnChain(chain); // left out when the kernel holds it as written (a full sync over rules in place)
        }
        return new PortChains(chains.ToImmutable(), frontends);
    }

    private void WriteMasqueradeRule(string chain, PortShape shape, NodeNetwork network)
    {
        _nat.Append(chain).Comment($"{shape.Comment} cluster IP")
            .Arg($"-m {shape.Protocol} -p {shape.Protocol} -d {shape.ClusterIP}{HostPrefix} --dport").Arg(shape.Info.Port);
        if (shape.Verdict.InternalMasquerade == SourceMasquerade.OffClusterSources) _nat.Arg(IfNotLocal(network.LocalDetector));
        _nat.Jump(ChainNames.MarkMasq).End();
    }

    private string IfLocal(LocalTrafficDetector detector) => detector.Mode switch
    {
        LocalDetectMode.InterfaceNamePrefix => $"-i {detector.Interface}+",
        LocalDetectMode.BridgeInterface => $"-i {detector.Interface}",
        _ => $"-s {detector.Cidrs.First(c => c.Family == family)}",
    };

    private string IfNotLocal(LocalTrafficDetector detector) => "! " + IfLocal(detector);

    /// <summary>Rules in the shared chains that lead to this port's chains, or drop or reject its traffic, in the order a full sync writes them.</summary>
    private ImmutableArray<SharedRule> Frontends(PortShape shape, NodeNetwork network)
    {
        _shared.Clear();
        var info = shape.Info;
        var name = info.Name;
        var comment = shape.Comment;
        var protocol = shape.Protocol;
        var match = $"-m {protocol} -p {protocol}";
        var externalChain = ChainNames.External(name);

        // Cluster IP.
        if (shape.Internal.IsForward)
            _shared.Start(SharedChain.NatServices, ChainNames.ShardOf(shape.ClusterIP)).Comment($"{comment} cluster IP")
                .Arg($"{match} -d {shape.ClusterIP}{HostPrefix} --dport").Arg(info.Port).Jump(shape.PoolChain(shape.Internal.Pool)).End();
        else
            // REJECT refuses at once (ICMP port unreachable → connection refused) rather than
            // letting clients time out; DROP when endpoints exist but policy keeps them away.
            _shared.Start(SharedChain.FilterServices).Comment(shape.InternalFilter.Comment)
                .Arg($"{match} -d {shape.ClusterIP}{HostPrefix} --dport").Arg(info.Port).Jump(shape.InternalFilter.Target).End();

        // External IPs.
        foreach (var ip in OfFamily(info.ExternalIPs))
        {
            if (shape.ExternalEntersNat)
                _shared.Start(SharedChain.NatServices, ChainNames.ShardOf(ip)).Comment($"{comment} external IP")
                    .Arg($"{match} -d {ip}{HostPrefix} --dport").Arg(info.Port).Jump(externalChain).End();
            if (!shape.External.IsForward)
                _shared.Start(SharedChain.FilterExternalServices).Comment(shape.ExternalFilter("external IP").Comment)
                    .Arg($"{match} -d {ip}{HostPrefix} --dport").Arg(info.Port).Jump(shape.ExternalFilter("external IP").Target).End();
        }

        // Load-balancer IPs, through the firewall chain when source ranges restrict them.
        var usesFirewall = shape.UsesFirewallChain(family);
        foreach (var ip in OfFamily(info.LoadBalancerIPs))
        {
            if (shape.ExternalEntersNat)
                _shared.Start(SharedChain.NatServices, ChainNames.ShardOf(ip)).Comment($"{comment} loadbalancer IP")
                    .Arg($"{match} -d {ip}{HostPrefix} --dport").Arg(info.Port).Jump(usesFirewall ? ChainNames.Firewall(name) : externalChain).End();
            if (usesFirewall)
                _shared.Start(SharedChain.FilterProxyFirewall).Comment($"{comment} traffic not accepted by {ChainNames.Firewall(name)}")
                    .Arg($"{match} -d {ip}{HostPrefix} --dport").Arg(info.Port).Jump("DROP").End();
        }
        if (!shape.External.IsForward)
            foreach (var ip in OfFamily(info.LoadBalancerIPs))
                _shared.Start(SharedChain.FilterExternalServices).Comment(shape.ExternalFilter("loadbalancer IP").Comment)
                    .Arg($"{match} -d {ip}{HostPrefix} --dport").Arg(info.Port).Jump(shape.ExternalFilter("loadbalancer IP").Target).End();

        // Node port.
        if (info.NodePort != 0)
        {
            if (shape.ExternalEntersNat)
                _shared.Start(SharedChain.NatNodePorts).Comment(comment).Arg($"{match} --dport").Arg(info.NodePort).Jump(externalChain).End();
            if (!shape.External.IsForward)
            {
                if (network.NodePortAddresses is { } addresses)
                    foreach (var address in addresses.Where(a => NodeAddresses.FamilyOf(a) == family))
                        _shared.Start(SharedChain.FilterExternalServices).Comment(shape.ExternalFilter("node port").Comment)
                            .Arg($"-d {address}{HostPrefix} {match} --dport").Arg(info.NodePort).Jump(shape.ExternalFilter("node port").Target).End();
                else
                    _shared.Start(SharedChain.FilterExternalServices).Comment(shape.ExternalFilter("node port").Comment)
                        .Arg($"-m addrtype --dst-type LOCAL {match} --dport").Arg(info.NodePort).Jump(shape.ExternalFilter("node port").Target).End();
            }
        }

        // The health check node port answers load balancers whatever the node's endpoints.
        if (info.HealthCheckNodePort != 0)
            _shared.Start(SharedChain.FilterNodePorts).Comment($"{comment} health check node port")
                .Arg("-m tcp -p tcp --dport").Arg(info.HealthCheckNodePort).Jump("ACCEPT").End();
        return _shared.ToImmutable();
    }

    private void WriteEndpointJumps(PortShape shape, string chain, EquatableArray<EndpointInfo> endpoints)
    {
        var name = shape.Info.Name;
        var comment = shape.Comment;
        // ClientIP affinity first: a client seen recently goes back to its endpoint.
        if (shape.Verdict.AffinityTimeoutSeconds is { } seconds)
            foreach (var endpoint in endpoints)
            {
                var endpointChain = ChainNames.Endpoint(name, endpoint);
                _nat.Append(chain).Comment($"{comment} -> {endpoint.Endpoint}")
                    .Arg($"-m recent --name {endpointChain} --rcheck --seconds").Arg(seconds).Arg("--reap").Jump(endpointChain).End();
            }
        // Random spread: endpoint i of n is taken with probability 1/(n-i) among those left.
        for (var i = 0; i < endpoints.Count; i++)
        {
            var endpoint = endpoints[i];
            _nat.Append(chain).Comment($"{comment} -> {endpoint.Endpoint}");
            var left = endpoints.Count - i;
            if (left > 1)
                _nat.Arg("-m statistic --mode random --probability").Arg((1.0 / left).ToString("0.0000000000", CultureInfo.InvariantCulture));
            _nat.Jump(ChainNames.Endpoint(name, endpoint)).End();
        }
    }

    private IEnumerable<IPAddress> OfFamily(EquatableArray<IPAddress> addresses) =>
        addresses.Where(a => NodeAddresses.FamilyOf(a) == family);

    /// <summary>
    /// Whether a table already holds service rules of ours (<c>KUBE-SERVICES</c>, its shards, per-service chains):
    /// then it is large, and a read of it whole (<see cref="RuleWriter.ListTableFirst"/>) would cost more than it saves.
    /// </summary>
    private static bool HoldsServiceChains(IReadOnlySet<string> chains) =>
        chains.Any(c => ChainNames.IsServices(c) || ChainNames.IsPerService(c));

    private void DeleteStaleChains(bool full, IptablesPlannerState previous, ImmutableDictionary<ServicePortName, PortChains>.Builder ports, KernelTables kernel)
    {
        var wanted = new HashSet<string>(ports.Values.SelectMany(p => p.Nat.Select(c => c.Chain)), StringComparer.Ordinal);
        var stale = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var chains in previous.Ports.Values)
            foreach (var (chain, _) in chains.Nat)
                if (!wanted.Contains(chain)) stale.Add(chain);
        if (full)
            foreach (var chain in kernel.NatChains)
                if (ChainNames.IsPerService(chain) && !wanted.Contains(chain)) stale.Add(chain);
        foreach (var chain in stale)
        {
            _nat.Chain(chain);
            _nat.DeleteChain(chain);
        }
    }
}
