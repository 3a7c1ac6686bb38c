using System.Globalization;
using System.Net;
using System.Net.Sockets;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// What <c>proxyplanes explain</c> reads of a node in eBPF mode: the pinned maps' contents.
/// <see cref="NodeAddresses"/> (the socket hooks' and tc's), <see cref="SourceRanges"/> (pp_egress's and tc's) and
/// <see cref="LocalSources"/> (pp_localsrc4_v1's and pp_localsrc6_v1's prefixes, the pods by Core's detect-local; tc's own)
/// are null when their maps are not pinned; without pp_localsrc4_v1 the tc programs are not in use: only the socket
/// hooks act, on processes in --bpf-cgroup.
/// </summary>
public sealed record EbpfSnapshot(
    IReadOnlyDictionary<ServiceKey, ServiceValue> Services,
    IReadOnlyDictionary<uint, Backend> Backends,
    IReadOnlySet<IPAddress>? NodeAddresses,
    IReadOnlyCollection<SourceRange>? SourceRanges,
    IReadOnlyDictionary<uint, string>? Names = null,
    IReadOnlyCollection<IpPrefix>? LocalSources = null)
{
    /// <summary>Whether the tc programs' maps are pinned, so off-node clients meet the tc programs.</summary>
    public bool TcInUse => LocalSources is not null;
}

/// <summary>
/// Follows the first packet of a flow through the eBPF programs as they read the maps (bpf/sock.c and
/// bpf/tc.c, see bpf/README.md). A client on this node (a process in --bpf-cgroup, asked as <c>--from</c>
/// one of the node's addresses (its interfaces' or pp_nodeip4_v1's), or any source while the tc programs are not in use) meets the socket
/// hooks: the internal-scope master entry of (destination, port, protocol), else a node port (key address 0,
/// flag <c>nodeport</c>, internal scope) when the destination is in pp_nodeip4_v1; no masquerade; count 0 refuses
/// (ECONNREFUSED), or with the drop flag drops (pp_egress); source ranges checked on the source (pp_egress: a range
/// holds it, or it is a node address and flag <c>source-ranges-node</c>). A client off the node
/// meets tc ingress: the external-scope master first, then the internal one; a node port (key address 0,
/// flag <c>nodeport</c>) when the destination is in pp_nodeip4_v1; source ranges in pp_srcrange_v1; count
/// 0 drops with the drop flag, else the reject mark; the masquerade flag. A new flow picks slot
/// <c>rand % count + 1</c>, so each slot gets an equal share.
/// </summary>
public static class EbpfTracer
{
    public static PacketFate Trace(EbpfSnapshot snapshot, PacketQuestion question, TraceNode node)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        ArgumentNullException.ThrowIfNull(question);
        ArgumentNullException.ThrowIfNull(node);
        if (question.Protocol is not (Protocol.TCP or Protocol.UDP))
            return Pass("the eBPF programs act on TCP and UDP only", []);
        if (question.Destination.Equals(IPAddress.Any) || question.Destination.Equals(IPAddress.IPv6Any))
            return Pass("0.0.0.0 / :: is no frontend (the family's any address keys the node ports; a socket's 0.0.0.0 is the kernel's loopback)", []);
        // The node's addresses: the interfaces' and the ones the daemon put in pp_nodeip4_v1.
        var local = question.Source is { } source
            && (node.LocalAddresses.Contains(source) || IPAddress.IsLoopback(source) || snapshot.NodeAddresses?.Contains(source) == true);
        if (!snapshot.TcInUse || local) return TraceSocket(snapshot, question, []);
        // A pod (a source in pp_localsrc4_v1 / pp_localsrc6_v1): its process is taken to be in --bpf-cgroup (the default, the root, holds every pod).
        if (question.Source is { } client && LocalSourceOf(snapshot.LocalSources, client) is { } pods)
        {
            var map = client.AddressFamily == AddressFamily.InterNetworkV6 ? MapLayout.LocalSources6Map : MapLayout.LocalSourcesMap;
            return TraceSocket(snapshot, question, [$"{map}[{client}]: in {pods}, a pod of this cluster: its process is in --bpf-cgroup"], pod: client);
        }
        return TraceTc(snapshot, question);
    }

    /// <summary>The longest local-sources prefix of the client's family holding <paramref name="client"/>, as the LPM trie answers; null when none does.</summary>
    private static IpPrefix? LocalSourceOf(IReadOnlyCollection<IpPrefix>? prefixes, IPAddress client)
    {
        if (prefixes is null) return null;
        IpPrefix? best = null;
        foreach (var prefix in prefixes)
        {
            if (prefix.Address.AddressFamily != client.AddressFamily || !prefix.Contains(client)) continue;
            if (best is null || prefix.Length > best.Value.Length) best = prefix;
        }
        return best;
    }

    /// <summary>Every master entry, each with the fate of a packet from off the node (tc), or from a process on it while the tc programs are not in use.</summary>
    public static IReadOnlyList<FrontendFate> List(EbpfSnapshot snapshot, TraceNode node)
    {
        ArgumentNullException.ThrowIfNull(snapshot);
        var all = new List<FrontendFate>();
        var seen = new HashSet<(MapAddress, ushort, byte)>();
        foreach (var (key, _) in snapshot.Services.Where(s => s.Key.Slot == 0).OrderBy(s => s.Key.Address.ToString(), StringComparer.Ordinal)
                     .ThenBy(s => MapLayout.HostPort(s.Key.Port)).ThenBy(s => s.Key.Proto).ThenBy(s => s.Key.Scope))
        {
            if (!seen.Add((key.Address, key.Port, key.Proto))) continue; // the other scope of one frontend
            if (key.Proto is not ((byte)ProtocolType.Tcp or (byte)ProtocolType.Udp)) continue;
            var protocol = key.Proto == (byte)ProtocolType.Tcp ? Protocol.TCP : Protocol.UDP;
            IPAddress destination;
            if (!key.Address.IsUnspecified) destination = key.Address.ToIPAddress();
            else if (snapshot.NodeAddresses?.Where(a => a.AddressFamily == key.Address.ToIPAddress().AddressFamily).OrderBy(a => a.ToString(), StringComparer.Ordinal).FirstOrDefault() is { } nodeAddress) destination = nodeAddress;
            else continue; // a node port with no node address of its family to reach it on
            var question = new PacketQuestion(protocol, destination, MapLayout.HostPort(key.Port));
            all.Add(new FrontendFate(question, Trace(snapshot, question, node)));
        }
        return all;
    }

    /// <summary>
    /// The socket hooks' path; <paramref name="pod"/> is the client's address when it is a pod (its socket is in another network
    /// namespace than the node's): a frontend that masquerades pods (node port, external or load-balancer IP under policy Cluster,
    /// a cluster IP under --masquerade-all) or an endpoint that is the pod itself (hairpin) leaves its socket on the frontend,
    /// and tc ingress on its veth masquerades it.
    /// </summary>
    private static PacketFate TraceSocket(EbpfSnapshot snapshot, PacketQuestion question, List<string> steps, IPAddress? pod = null)
    {
        steps.Add(question.Destination.AddressFamily == AddressFamily.InterNetworkV6
            ? "socket hooks (connect6/sendmsg6) of a process in --bpf-cgroup"
            : "socket hooks (connect4/sendmsg4) of a process in --bpf-cgroup");
        var key = ServiceKey.For(question.Destination, question.Port, Proto(question.Protocol));
        if (!snapshot.Services.TryGetValue(key, out var master))
        {
            steps.Add($"{MapLayout.ServicesMap}[{Describe(key)}]: no entry");
            if (snapshot.NodeAddresses?.Contains(question.Destination) != true)
                return Pass(TraceSteps.PassReason(null), steps);
            steps.Add($"{(question.Destination.AddressFamily == AddressFamily.InterNetworkV6 ? MapLayout.NodeAddresses6Map : MapLayout.NodeAddressesMap)}[{question.Destination}]: a node address");
            key = key with { Address = MapAddress.Unspecified(question.Destination.AddressFamily) };
            var found = snapshot.Services.TryGetValue(key, out master);
            if (!found || (master.Flags & MapLayout.ServiceFlagNodePort) == 0)
            {
                steps.Add($"{MapLayout.ServicesMap}[{Describe(key)}]: {(found ? "the entry has no nodeport flag: not a node port" : "no entry")}");
                return Pass(TraceSteps.PassReason(null), steps);
            }
        }
        steps.Add(DescribeMaster(key, master));
        var frontend = FrontendOf(master);
        var name = Name(snapshot, master);
        if (master.Count == 0)
        {
            return (master.Flags & MapLayout.ServiceFlagDrop) != 0
                ? new PacketFate(name, frontend, PacketVerdict.Drop, [], false, Affine(master), $"no endpoints, and the drop flag: the socket keeps the VIP and {SockPrograms.Egress} drops its packets", steps)
                : new PacketFate(name, frontend, PacketVerdict.Reject, [], false, Affine(master), "no endpoints: connect() and sendto() fail with ECONNREFUSED", steps);
        }
        if ((master.Flags & MapLayout.ServiceFlagSourceRanges) != 0 && !SocketSourceAllowed(snapshot, key, master, question.Source, steps))
            return new PacketFate(name, frontend, PacketVerdict.Drop, [], false, Affine(master),
                $"the source is outside loadBalancerSourceRanges: the socket is connected to a backend and {SockPrograms.Egress} drops its packets", steps);
        var masqueradesPods = pod is not null && (master.Flags & MapLayout.ServiceFlagMasquerade) != 0
            && (master.Flags & (MapLayout.ServiceFlagNodePort | MapLayout.ServiceFlagExternal | MapLayout.ServiceFlagMasqueradeLocal)) != 0;
        if (masqueradesPods)
            steps.Add("a pod's socket on a frontend that masquerades pods: connect/sendmsg leave it on the frontend; tc ingress on the pod's veth DNATs it with the masquerade mark");
        return Forward(snapshot, key, master, name, frontend, masqueradesPods, steps, hairpin: pod);
    }

    /// <summary>
    /// pp_egress's check of a local socket's source (the address the kernel chose, checked after connect): a range of the
    /// frontend holds it, or the ranges hold a node IP (flag <c>source-ranges-node</c>) and it is a node address.
    /// </summary>
    private static bool SocketSourceAllowed(EbpfSnapshot snapshot, ServiceKey key, ServiceValue master, IPAddress? source, List<string> steps)
    {
        if (source is null)
        {
            steps.Add($"{RangesMap(key)}: source ranges apply and no client address was given: an arbitrary client is outside them");
            return false;
        }
        if (LongestRange(snapshot.SourceRanges, master.RevNatId, source) is { } range)
        {
            steps.Add($"{SockPrograms.Egress}: {range.Map}[rev_nat {master.RevNatId}, {source}]: allowed by {range.Prefix}");
            return true;
        }
        if ((master.Flags & MapLayout.ServiceFlagSourceRangesNode) != 0 && snapshot.NodeAddresses?.Contains(source) == true)
        {
            steps.Add($"{SockPrograms.Egress}: {source} is a node address and a range holds a node IP (flag source-ranges-node): allowed");
            return true;
        }
        steps.Add($"{SockPrograms.Egress}: {RangesMap(key)}[rev_nat {master.RevNatId}, {source}]: no range holds the source");
        return false;
    }

    private static PacketFate TraceTc(EbpfSnapshot snapshot, PacketQuestion question)
    {
        var steps = new List<string> { "tc ingress (a packet from off the node)" };
        var key = ServiceKey.For(question.Destination, question.Port, Proto(question.Protocol));
        var found = Master(snapshot, key, steps);
        if (found is null)
        {
            if (!snapshot.NodeAddresses!.Contains(question.Destination))
                return Pass(TraceSteps.PassReason(null), steps);
            steps.Add($"{(question.Destination.AddressFamily == AddressFamily.InterNetworkV6 ? MapLayout.NodeAddresses6Map : MapLayout.NodeAddressesMap)}[{question.Destination}]: a node address");
            key = key with { Address = MapAddress.Unspecified(question.Destination.AddressFamily) };
            found = Master(snapshot, key, steps);
            if (found is { } nodePort && (nodePort.Item2.Flags & MapLayout.ServiceFlagNodePort) == 0)
            {
                steps.Add("the entry has no nodeport flag: not a node port");
                found = null;
            }
            if (found is null) return Pass(TraceSteps.PassReason(null), steps);
        }
        var (masterKey, master) = found.Value;
        var frontend = FrontendOf(master);
        var name = Name(snapshot, master);
        var masquerade = (master.Flags & MapLayout.ServiceFlagMasquerade) != 0;
        if ((master.Flags & MapLayout.ServiceFlagSourceRanges) != 0)
        {
            var source = question.Source;
            var range = source is null ? null : LongestRange(snapshot.SourceRanges, master.RevNatId, source);
            if (range is null)
            {
                steps.Add(source is null
                    ? $"{RangesMap(masterKey)}: source ranges apply and no client address was given: an arbitrary client is outside them"
                    : $"{RangesMap(masterKey)}[rev_nat {master.RevNatId}, {source}]: no range holds the client");
                return new PacketFate(name, frontend, PacketVerdict.Drop, [], masquerade, Affine(master), "the source is outside loadBalancerSourceRanges: dropped (TC_ACT_SHOT)", steps);
            }
            steps.Add($"{range.Value.Map}[rev_nat {master.RevNatId}, {source}]: allowed by {range.Value.Prefix}");
        }
        if (master.Count == 0)
        {
            return (master.Flags & MapLayout.ServiceFlagDrop) != 0
                ? new PacketFate(name, frontend, PacketVerdict.Drop, [], masquerade, Affine(master), "no endpoints, and the drop flag: dropped (TC_ACT_SHOT)", steps)
                : new PacketFate(name, frontend, PacketVerdict.Reject, [], masquerade, Affine(master),
                    string.Create(CultureInfo.InvariantCulture, $"no endpoints: the reject mark 0x{MapLayout.MarkReject:x8}, answered by table inet proxyplanes-ebpf"), steps);
        }
        return Forward(snapshot, masterKey, master, name, frontend, masquerade, steps);
    }

    /// <summary>The master entry tc reads for <paramref name="key"/>: external scope first, then internal.</summary>
    private static (ServiceKey, ServiceValue)? Master(EbpfSnapshot snapshot, ServiceKey key, List<string> steps)
    {
        foreach (var scope in new[] { MapLayout.ScopeExternal, MapLayout.ScopeInternal })
        {
            var scoped = key with { Slot = 0, Scope = scope };
            if (snapshot.Services.TryGetValue(scoped, out var master))
            {
                steps.Add(DescribeMaster(scoped, master));
                return (scoped, master);
            }
        }
        steps.Add($"{MapLayout.ServicesMap}[{Describe(key with { Scope = MapLayout.ScopeExternal })}] and [{Describe(key with { Scope = MapLayout.ScopeInternal })}]: no entry");
        return null;
    }

    /// <summary>
    /// The spread over the master's slots. <paramref name="hairpin"/>: a pod client; an endpoint on its own address is masqueraded
    /// (the socket hooks leave the socket to tc, which masquerades a backend equal to the source).
    /// </summary>
    private static PacketFate Forward(EbpfSnapshot snapshot, ServiceKey key, ServiceValue master, string? name, string frontend, bool masquerade, List<string> steps,
        IPAddress? hairpin = null)
    {
        var shares = new Dictionary<string, int>(StringComparer.Ordinal);
        var hairpins = new HashSet<string>(StringComparer.Ordinal);
        var missing = 0;
        for (var slot = 1; slot <= master.Count; slot++)
        {
            var slotKey = key with { Slot = (ushort)slot };
            if (!snapshot.Services.TryGetValue(slotKey, out var value))
            {
                steps.Add($"{MapLayout.ServicesMap}[{Describe(slotKey)}]: missing (a flow picking it is refused)");
                missing++;
                continue;
            }
            if (!snapshot.Backends.TryGetValue(value.BackendId, out var backend))
            {
                steps.Add($"{MapLayout.ServicesMap}[{Describe(slotKey)}] -> backend {value.BackendId}: not in {MapLayout.BackendsMap} (a flow picking it is refused)");
                missing++;
                continue;
            }
            var endpoint = EbpfText.Endpoint(backend.Address.ToIPAddress(), backend.Port);
            steps.Add($"{MapLayout.ServicesMap}[{Describe(slotKey)}] -> {MapLayout.BackendsMap}[{value.BackendId}] = {endpoint}");
            shares[endpoint] = shares.GetValueOrDefault(endpoint) + 1;
            if (hairpin is not null && backend.Address.ToIPAddress().Equals(hairpin) && hairpins.Add(endpoint))
                steps.Add($"{endpoint} is the client itself (hairpin): the socket is left to tc, which masquerades it");
        }
        var affinity = Affine(master);
        if (shares.Count == 0)
            return new PacketFate(name, frontend, PacketVerdict.Reject, [], masquerade, affinity, "every slot is missing or names no backend: refused", steps);
        var endpoints = shares.OrderBy(s => s.Key, StringComparer.Ordinal)
            .Select(s => new ReachedEndpoint(s.Key, (double)s.Value / master.Count, masquerade || hairpins.Contains(s.Key))).ToList();
        var reason = TraceSteps.ForwardReason(endpoints.Count, local: false, masquerade, affinity, affinity ? (int)master.AffinityTimeout : null)
            + (missing > 0 ? $"; {missing} of {master.Count} slots lead nowhere (refused)" : "");
        return new PacketFate(name, frontend, PacketVerdict.Forward, endpoints, masquerade, affinity, reason, steps);
    }

    /// <summary>The longest prefix of <paramref name="revNatId"/>'s ranges holding <paramref name="client"/>, as the LPM trie answers.</summary>
    private static SourceRange? LongestRange(IReadOnlyCollection<SourceRange>? ranges, uint revNatId, IPAddress client)
    {
        if (ranges is null) return null;
        SourceRange? best = null;
        foreach (var range in ranges)
        {
            if (range.RevNatId != revNatId || range.Prefix.Address.AddressFamily != client.AddressFamily || !range.Prefix.Contains(client)) continue;
            if (best is null || range.Prefix.Length > best.Value.Prefix.Length) best = range;
        }
        return best;
    }

    /// <summary>The source-ranges trie of a frontend's family.</summary>
    private static string RangesMap(ServiceKey frontend) => frontend.Address.IsIPv4 ? MapLayout.SourceRangesMap : MapLayout.SourceRanges6Map;

    private static string FrontendOf(ServiceValue master) =>
        (master.Flags & MapLayout.ServiceFlagNodePort) != 0 ? Frontends.NodePort
        : (master.Flags & MapLayout.ServiceFlagSourceRanges) != 0 ? Frontends.LoadBalancerIP
        : (master.Flags & MapLayout.ServiceFlagExternal) != 0 ? Frontends.ExternalIP
        : Frontends.ClusterIP;

    /// <summary>The service port of a master entry, from <see cref="EbpfNames"/>' map by its reverse-NAT id; null when none is pinned.</summary>
    private static string? Name(EbpfSnapshot snapshot, ServiceValue master) => snapshot.Names?.GetValueOrDefault(master.RevNatId);

    private static bool Affine(ServiceValue master) => (master.Flags & MapLayout.ServiceFlagAffinity) != 0;

    private static ProtocolType Proto(Protocol protocol) => protocol == Protocol.TCP ? ProtocolType.Tcp : ProtocolType.Udp;

    private static PacketFate Pass(string reason, List<string> steps) => new(null, null, PacketVerdict.Pass, [], false, false, reason, steps);

    private static string Describe(ServiceKey key) =>
        $"{EbpfText.Endpoint(key.Address.ToIPAddress(), key.Port)}/{((ProtocolType)key.Proto).ToString().ToLowerInvariant()} slot {key.Slot} scope {(key.Scope == MapLayout.ScopeExternal ? "external" : "internal")}";

    private static string DescribeMaster(ServiceKey key, ServiceValue master) =>
        string.Create(CultureInfo.InvariantCulture, $"{MapLayout.ServicesMap}[{Describe(key)}]: count {master.Count}, rev_nat {master.RevNatId}, flags {FlagNames(master)}")
        + ((master.Flags & MapLayout.ServiceFlagAffinity) != 0 ? string.Create(CultureInfo.InvariantCulture, $", affinity timeout {master.AffinityTimeout}s") : "");

    private static string FlagNames(ServiceValue master)
    {
        var names = new List<string>();
        if ((master.Flags & MapLayout.ServiceFlagAffinity) != 0) names.Add("affinity");
        if ((master.Flags & MapLayout.ServiceFlagNodePort) != 0) names.Add("nodeport");
        if ((master.Flags & MapLayout.ServiceFlagExternal) != 0) names.Add("external");
        if ((master.Flags & MapLayout.ServiceFlagSourceRanges) != 0) names.Add("source-ranges");
        if ((master.Flags & MapLayout.ServiceFlagSourceRangesNode) != 0) names.Add("source-ranges-node");
        if ((master.Flags & MapLayout.ServiceFlagDrop) != 0) names.Add("drop");
        if ((master.Flags & MapLayout.ServiceFlagMasquerade) != 0) names.Add("masquerade");
        if ((master.Flags & MapLayout.ServiceFlagMasqueradeLocal) != 0) names.Add("masquerade-local");
        return names.Count == 0 ? "none" : string.Join('|', names);
    }
}
