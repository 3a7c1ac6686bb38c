using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using System.Text;
using ProxyPlanes.Core.Proxy;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>What the planner knows of the kernel: the chains it found and the rules of the built-in chains.</summary>
public sealed record KernelTables(IReadOnlySet<string> NatChains, IReadOnlySet<string> FilterChains, IReadOnlySet<string> NatRules, IReadOnlySet<string> FilterRules)
{
    public static KernelTables Empty { get; } = new(new HashSet<string>(), new HashSet<string>(), new HashSet<string>(), new HashSet<string>());
}

/// <summary>The per-service chains one service port owns after a sync, with their rule counts.</summary>
public sealed record PortChains(ImmutableArray<(string Chain, int Rules)> Nat, int FilterRules);

/// <summary>What the planner remembers between syncs, so a partial sync can skip unchanged chains and still count them.</summary>
public sealed record IptablesPlannerState(ImmutableDictionary<ServicePortName, PortChains> Ports)
{
    public static IptablesPlannerState Empty { get; } = new(ImmutableDictionary<ServicePortName, PortChains>.Empty);
}

/// <summary>
/// The planner's output: the exact iptables-restore input (<see cref="ToString"/>), and the
/// rule counts the metrics report.
/// </summary>
public sealed record IptablesPlan(string Script, IptablesPlannerState State, int NatRulesTotal, int FilterRulesTotal, int NatRulesWritten, int FilterRulesWritten, int ChainsSkipped)
{
    public override string ToString() => Script;
}

/// <summary>
/// Pure planner for the iptables data plane: DesiredState (+ the changed service ports) →
/// an iptables-restore script in kube-proxy's chain layout. Fixed chains are rewritten on every
/// sync; per-service chains only when their service port changed (or on a full sync); chains
/// no longer wanted are flushed and deleted in the same transaction.
/// </summary>
public sealed class IptablesPlanner(IpFamily family, int masqueradeBit = 14)
{
    private readonly string _mark = "0x" + (1 << masqueradeBit).ToString("x", CultureInfo.InvariantCulture);
    private readonly RuleWriter _nat = new();
    private readonly RuleWriter _filter = new();
    private readonly StringBuilder _script = new();

    private string HostPrefix => family == IpFamily.IPv4 ? "/32" : "/128";

    /// <summary>
    /// Plans one sync. <paramref name="previous"/> is what the last successful sync left (null when
    /// unknown: then every per-service chain is written); <paramref name="kernel"/> is what a full sync
    /// found in the kernel (stale chains to delete, built-in jumps already present).
    /// </summary>
    public IptablesPlan Plan(SyncRequest request, IptablesPlannerState? previous, KernelTables kernel)
    {
        _nat.Reset();
        _filter.Reset();
        var full = request.Full || previous is null;
        previous ??= IptablesPlannerState.Empty;
        var network = request.State.Network;

        if (full) WriteJumpsFromBuiltInChains(kernel);
        WriteFixedChains();

        var ports = ImmutableDictionary.CreateBuilder<ServicePortName, PortChains>();
        int skippedChains = 0, skippedNatRules = 0;
        foreach (var (name, port) in request.State.ServicePorts)
        {
            var clusterIP = port.Info.ClusterIPs.FirstOrDefault(ip => NodeAddresses.FamilyOf(ip) == family);
            if (clusterIP is null) continue; // not a service of this family
            if (full || request.ChangedPorts.Contains(name) || !previous.Ports.TryGetValue(name, out var unchanged))
            {
                ports[name] = WriteServicePort(port, clusterIP, network);
                continue;
            }
            // Unchanged since the last sync: its frontends live in shared chains and are
            // rewritten; its own chains stay in the kernel and are only counted.
            var filterBefore = _filter.RuleCount;
            WriteFrontends(port, clusterIP, network);
            ports[name] = unchanged with { FilterRules = _filter.RuleCount - filterBefore };
            skippedChains += unchanged.Nat.Length;
            foreach (var (_, rules) in unchanged.Nat) skippedNatRules += rules;
        }
        // Node ports are matched last, after every service IP rule of KUBE-SERVICES.
        WriteNodePortsJump(network);
        DeleteStaleChains(full, previous, ports, kernel);

        _script.Clear();
        _filter.WriteTable(_script, "filter");
        _nat.WriteTable(_script, "nat");
        return new IptablesPlan(
            _script.ToString(), new IptablesPlannerState(ports.ToImmutable()),
            NatRulesTotal: _nat.RuleCount + skippedNatRules, FilterRulesTotal: _filter.RuleCount,
            NatRulesWritten: _nat.RuleCount, FilterRulesWritten: _filter.RuleCount, ChainsSkipped: skippedChains);
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
            (table == "nat" ? _nat : _filter).Insert(chain).Arg(rule).End();
        }
    }

    private void WriteFixedChains()
    {
        foreach (var chain in new[] { ChainNames.Services, ChainNames.ExternalServices, ChainNames.Forward, ChainNames.NodePorts, ChainNames.ProxyFirewall })
            _filter.Chain(chain);
        foreach (var chain in new[] { ChainNames.Services, ChainNames.NodePorts, ChainNames.PostRouting, ChainNames.MarkMasq })
            _nat.Chain(chain);

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

    private void WriteNodePortsJump(NodeNetwork network)
    {
        if (network.NodePortAddresses is { } addresses)
        {
            foreach (var address in addresses.Where(a => NodeAddresses.FamilyOf(a) == family))
                _nat.Append(ChainNames.Services).Comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
                    .Arg($"-d {address}{HostPrefix}").Jump(ChainNames.NodePorts).End();
        }
        else
        {
            // Every local address, except loopback: localhost node ports would need route_localnet.
            var loopback = family == IpFamily.IPv4 ? "127.0.0.0/8" : "::1/128";
            _nat.Append(ChainNames.Services).Comment("kubernetes service nodeports; NOTE: this must be the last rule in this chain")
                .Arg($"-m addrtype --dst-type LOCAL ! -d {loopback}").Jump(ChainNames.NodePorts).End();
        }
    }

    /// <summary>Writes a service port's frontends and its own chains; returns the chains and counts.</summary>
    private PortChains WriteServicePort(ServicePortState port, IPAddress clusterIP, NodeNetwork network)
    {
        var filterBefore = _filter.RuleCount;
        WriteFrontends(port, clusterIP, network);
        var filterRules = _filter.RuleCount - filterBefore;

        var chains = ImmutableArray.CreateBuilder<(string, int)>();
        var info = port.Info;
        var name = info.Name;
        var comment = name.ToString();
        var protocol = ChainNames.ProtocolName(info.Protocol);
        var clusterEndpoints = OfFamily(port.Endpoints.Cluster);

        if (UsesClusterChain(port))
        {
            var chain = ChainNames.ClusterPolicy(name);
            var before = _nat.RuleCount;
            _nat.Chain(chain);
            // Off-cluster sources reaching a cluster IP are masqueraded so replies return through this node.
            var clusterCidr = network.ClusterCidrs.FirstOrDefault(c => c.Family == family);
            if (network.MasqueradeAll)
                _nat.Append(chain).Comment($"{comment} cluster IP").Arg($"-m {protocol} -p {protocol} -d {clusterIP}{HostPrefix} --dport").Arg(info.Port).Jump(ChainNames.MarkMasq).End();
            else if (clusterCidr != default)
                _nat.Append(chain).Comment($"{comment} cluster IP").Arg($"-m {protocol} -p {protocol} -d {clusterIP}{HostPrefix} --dport").Arg(info.Port)
                    .Arg($"! -s {clusterCidr}").Jump(ChainNames.MarkMasq).End();
            WriteEndpointJumps(name, chain, clusterEndpoints);
            chains.Add((chain, _nat.RuleCount - before));
        }

        if (info.HasExternalFrontends && port.Endpoints.HasAnyEndpoints)
        {
            var chain = ChainNames.External(name);
            var before = _nat.RuleCount;
            _nat.Chain(chain);
            // External traffic may cross to another node: masquerade so the reply comes back here.
            _nat.Append(chain).Comment($"masquerade traffic for {comment} external destinations").Jump(ChainNames.MarkMasq).End();
            _nat.Append(chain).Jump(ChainNames.ClusterPolicy(name)).End();
            chains.Add((chain, _nat.RuleCount - before));
        }

        foreach (var endpoint in OfFamily(port.Endpoints.AllReachable))
        {
            var chain = ChainNames.Endpoint(name, endpoint);
            var before = _nat.RuleCount;
            _nat.Chain(chain);
            // Hairpin: a pod reaching itself through the service must be masqueraded, or its
            // reply would skip the un-DNAT.
            _nat.Append(chain).Comment(comment).Arg($"-s {endpoint.Address}{HostPrefix}").Jump(ChainNames.MarkMasq).End();
            _nat.Append(chain).Comment(comment).Arg($"-m {protocol} -p {protocol}").Jump($"DNAT --to-destination {endpoint.Endpoint}").End();
            chains.Add((chain, _nat.RuleCount - before));
        }
        return new PortChains(chains.ToImmutable(), filterRules);
    }

    private bool UsesClusterChain(ServicePortState port) =>
        EndpointCategorizer.UsesClusterEndpoints(port.Info) && !OfFamily(port.Endpoints.Cluster).IsEmpty;

    /// <summary>Rules in the shared chains that lead to this port's chains (or reject its traffic).</summary>
    private void WriteFrontends(ServicePortState port, IPAddress clusterIP, NodeNetwork network)
    {
        var info = port.Info;
        var name = info.Name;
        var comment = name.ToString();
        var protocol = ChainNames.ProtocolName(info.Protocol);
        var hasEndpoints = port.Endpoints.HasAnyEndpoints && !OfFamily(port.Endpoints.AllReachable).IsEmpty;

        if (hasEndpoints && UsesClusterChain(port))
        {
            _nat.Append(ChainNames.Services).Comment($"{comment} cluster IP")
                .Arg($"-m {protocol} -p {protocol} -d {clusterIP}{HostPrefix} --dport").Arg(info.Port).Jump(ChainNames.ClusterPolicy(name)).End();
        }
        else
        {
            // Nothing can serve: refuse at once (ICMP port unreachable → connection refused)
            // instead of letting clients time out.
            _filter.Append(ChainNames.Services).Comment($"{comment} has no endpoints")
                .Arg($"-m {protocol} -p {protocol} -d {clusterIP}{HostPrefix} --dport").Arg(info.Port).Jump("REJECT").End();
        }

        if (info.NodePort != 0)
        {
            if (hasEndpoints)
            {
                _nat.Append(ChainNames.NodePorts).Comment(comment)
                    .Arg($"-m {protocol} -p {protocol} --dport").Arg(info.NodePort).Jump(ChainNames.External(name)).End();
            }
            else
            {
                if (network.NodePortAddresses is { } addresses)
                {
                    foreach (var address in addresses.Where(a => NodeAddresses.FamilyOf(a) == family))
                        _filter.Append(ChainNames.ExternalServices).Comment($"{comment} has no endpoints")
                            .Arg($"-d {address}{HostPrefix} -m {protocol} -p {protocol} --dport").Arg(info.NodePort).Jump("REJECT").End();
                }
                else
                {
                    _filter.Append(ChainNames.ExternalServices).Comment($"{comment} has no endpoints")
                        .Arg($"-m addrtype --dst-type LOCAL -m {protocol} -p {protocol} --dport").Arg(info.NodePort).Jump("REJECT").End();
                }
            }
        }
    }

    private void WriteEndpointJumps(ServicePortName name, string chain, ImmutableArray<EndpointInfo> endpoints)
    {
        var comment = name.ToString();
        // Random spread: endpoint i of n is taken with probability 1/(n-i) among those left.
        for (var i = 0; i < endpoints.Length; i++)
        {
            var endpoint = endpoints[i];
            _nat.Append(chain).Comment($"{comment} -> {endpoint.Endpoint}");
            var left = endpoints.Length - i;
            if (left > 1)
                _nat.Arg("-m statistic --mode random --probability").Arg((1.0 / left).ToString("0.0000000000", CultureInfo.InvariantCulture));
            _nat.Jump(ChainNames.Endpoint(name, endpoint)).End();
        }
    }

    private ImmutableArray<EndpointInfo> OfFamily(EquatableArray<EndpointInfo> endpoints) =>
        endpoints.Where(e => e.Family == family).ToImmutableArray();

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
