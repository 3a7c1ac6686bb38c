using System.Globalization;
using System.Net;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>
/// What <c>proxyplanes explain</c> reads of a node in IPVS mode: the IPVS table, kube-ipvs0, the node's
/// addresses and this mode's ipsets (<see cref="View"/>, as a full sync reads them), and the whole nat
/// and filter tables of each family as iptables-save prints them.
/// </summary>
public sealed record IpvsKernelSnapshot(IpvsKernelView View, IReadOnlyDictionary<IpFamily, IReadOnlyList<SavedTable>> Tables);

/// <summary>
/// Follows the first packet of a flow through a node in IPVS mode as the kernel does: nat PREROUTING
/// (OUTPUT for a packet the node sends) marks it for masquerade; filter INPUT (OUTPUT) may refuse or drop
/// it; IPVS, where a virtual server has the packet's address, protocol and port, picks a real server
/// (weight 0: draining, never picked; none left: IPVS answers port unreachable); nat POSTROUTING
/// masquerades. The iptables rules are read generically (the options the helper rules use, ipset matches
/// against the sets' entries); a rule with an option it does not know is left out, and said so. Virtual
/// servers are named from the comments of <see cref="IpvsNames.ServiceNames"/>, and their frontend from the
/// sets that hold them.
/// </summary>
public static class IpvsTracer
{
    private const int MaxDepth = 32;

    /// <summary>
    /// The fate of <paramref name="question"/>. <paramref name="inInterface"/> is the link a packet from the
    /// asked source arrives on (for the rules that tell pods by interface), null when unknown.
    /// </summary>
    public static PacketFate Trace(IpvsKernelSnapshot kernel, PacketQuestion question, string? inInterface = null) =>
        new Tracer(kernel, question, inInterface).Run();

    /// <summary>Every virtual server of the kernel, each with the fate of a packet from off the cluster.</summary>
    public static IReadOnlyList<FrontendFate> List(IpvsKernelSnapshot kernel) =>
        kernel.View.Services.Keys
            .Select(k => new PacketQuestion(k.Protocol, k.Address, k.Port))
            .OrderBy(q => q.ToString(), StringComparer.Ordinal)
            .Select(q => new FrontendFate(q, Trace(kernel, q)))
            .ToList();

    private enum End { None, Return, Accept, Drop, Reject, Masquerade }

    /// <summary>One question's walk; the packet's state changes as it goes (mark, translated destination).</summary>
    private sealed class Tracer(IpvsKernelSnapshot kernel, PacketQuestion question, string? inInterface)
    {
        private readonly SetIndex _sets = SetIndex.For(kernel.View);
        private readonly List<string> _steps = [];
        private readonly HashSet<IPAddress> _local = [.. kernel.View.NodeAddresses, .. kernel.View.LinkAddresses];
        private IPAddress? _source = question.Source;
        private IPAddress _destination = question.Destination;
        private int _port = question.Port;
        private uint _mark;
        private bool _translated;
        private bool _localOrigin;

        private IReadOnlyList<SavedTable> Tables => kernel.Tables.GetValueOrDefault(question.Family) ?? [];

        public PacketFate Run()
        {
            var key = new VirtualServerKey(question.Destination, question.Protocol, question.Port);
            var match = NameOf(key);
            var frontend = FrontendOf(key);
            _localOrigin = question.Source is not null && (_local.Contains(question.Source) || IPAddress.IsLoopback(question.Source));
            if (_localOrigin && kernel.View.LinkAddresses.Contains(question.Destination) && !question.Destination.Equals(question.Source))
            {
                // The node's own connection to an address it holds leaves from that address (the local route's source).
                _source = question.Destination;
                _steps.Add($"from the node to its own address {question.Destination}: the connection's source is {question.Destination}");
            }

            var nat = Find("nat");
            var filter = Find("filter");
            var (natEnd, natDecider) = RunBuiltIn(nat, _localOrigin ? "OUTPUT" : "PREROUTING");
            if (natEnd is End.Drop or End.Reject) return Refused(match, frontend, natEnd, natDecider);

            if (!_localOrigin)
            {
                if (!_local.Contains(question.Destination))
                    return Pass(match, frontend, $"{question.Destination} is not an address of this node: IPVS sees only packets to the node's addresses");
                var (inputEnd, inputDecider) = RunBuiltIn(filter, "INPUT");
                if (inputEnd is End.Drop or End.Reject) return Refused(match, frontend, inputEnd, inputDecider);
            }

            if (!kernel.View.Services.TryGetValue(key, out var server))
                return Pass(match, frontend, match is null ? "nothing of ours matches: no virtual server for it" : $"{match} is named, but the kernel has no virtual server for it");
            var definition = server.Definition;
            _steps.Add($"ipvs {definition.Key.IpvsadmService} {definition.IpvsadmOptions}");
            foreach (var draining in server.Destinations.Where(d => d.Weight <= 0))
                _steps.Add($"ipvs   -r {draining.Key} -w {draining.Weight}: draining, gets no new connections");
            var shares = Shares(definition.Scheduler, server.Destinations.Where(d => d.Weight > 0).ToList());
            if (shares.Count == 0)
            {
                _steps.Add("ipvs   no real server with a weight above 0: IPVS answers ICMP port unreachable");
                return new PacketFate(match, frontend, PacketVerdict.Reject, [], false, definition.Persistent, "no endpoints", _steps);
            }

            var endpoints = new List<ReachedEndpoint>();
            foreach (var (destination, share) in shares)
            {
                var masquerade = Masqueraded(destination, filter, nat, out var refused);
                if (refused is { } end) return Refused(match, frontend, end.End, end.Decider);
                endpoints.Add(new ReachedEndpoint(destination.Key.ToString(), Math.Round(share, 6), masquerade));
                _steps.Add(string.Create(CultureInfo.InvariantCulture,
                    $"ipvs   -r {destination.Key} -m -w {destination.Weight}: {share * 100:F1}%{(masquerade ? ", masqueraded" : "")}"));
            }
            // A pod reaching itself through the service (hairpin) is always masqueraded; that alone does not make the flow masqueraded.
            var masqueraded = endpoints.Zip(shares).Any(p => p.First.Masquerade && !p.Second.Destination.Key.Address.Equals(question.Source));
            var local = IsLocalPolicy(key);
            var reason = TraceSteps.ForwardReason(endpoints.Count, local, masqueraded, definition.Persistent, definition.TimeoutSeconds);
            return new PacketFate(match, frontend, PacketVerdict.Forward, endpoints.OrderBy(e => e.Endpoint, StringComparer.Ordinal).ToList(),
                masqueraded, definition.Persistent, reason, _steps);
        }

        /// <summary>
        /// Whether the flow to one real server is masqueraded: filter OUTPUT for the node's own packet (after
        /// IPVS, as the kernel runs it), then nat POSTROUTING, on the translated packet with this packet's mark.
        /// </summary>
        private bool Masqueraded(KernelDestination destination, SavedTable filter, SavedTable nat, out (End End, string? Decider)? refused)
        {
            refused = null;
            var (destinationBefore, portBefore, markBefore, stepsBefore) = (_destination, _port, _mark, _steps.Count);
            _destination = destination.Key.Address;
            _port = destination.Key.Port;
            _translated = true;
            try
            {
                if (_localOrigin)
                {
                    var (outputEnd, outputDecider) = RunBuiltIn(filter, "OUTPUT");
                    if (outputEnd is End.Drop or End.Reject)
                    {
                        refused = (outputEnd, outputDecider);
                        return false;
                    }
                }
                var (end, _) = RunBuiltIn(nat, "POSTROUTING");
                return end == End.Masquerade;
            }
            finally
            {
                // Each real server's own walk; the rules it met are summed up in its ipvs line.
                if (refused is null) _steps.RemoveRange(stepsBefore, _steps.Count - stepsBefore);
                (_destination, _port, _mark, _translated) = (destinationBefore, portBefore, markBefore, false);
            }
        }

        private PacketFate Refused(string? match, string? frontend, End end, string? decider) =>
            new(match, frontend, end == End.Reject ? PacketVerdict.Reject : PacketVerdict.Drop, [], false, false, Why(end, decider), _steps);

        private PacketFate Pass(string? match, string? frontend, string reason) =>
            new(match, frontend, PacketVerdict.Pass, [], false, false, reason, _steps);

        /// <summary>The reason for a refusal, from the chain and the rule that decided it.</summary>
        private static string Why(End end, string? decider)
        {
            if (decider is null) return $"{(end == End.Drop ? "dropped" : "rejected")} by a chain's policy";
            if (decider.Contains($" -A {IpvsNames.SourceRangesFirewall} ", StringComparison.Ordinal)) return "source outside loadBalancerSourceRanges";
            if (decider.Contains($" -A {IpvsNames.IpvsOutFilter} ", StringComparison.Ordinal)) return "the node itself is outside the load balancer's loadBalancerSourceRanges";
            if (decider.Contains(IpvsNames.NoLocalEndpoints.Name(IpFamily.IPv4) + " ", StringComparison.Ordinal)
                || decider.Contains(IpvsNames.NoLocalEndpoints.Name(IpFamily.IPv6) + " ", StringComparison.Ordinal))
                return "traffic policy Local, and no endpoint on this node";
            if (decider.Contains($" -A {IpvsNames.IpvsFilter} ", StringComparison.Ordinal))
                return "no service port at this address and port (new connections to other ports of service addresses are refused)";
            return $"{(end == End.Drop ? "DROP" : "REJECT")} by {decider}";
        }

        /// <summary>Each real server's share of new flows, as the scheduler hands them out.</summary>
        private static List<(KernelDestination Destination, double Share)> Shares(string scheduler, List<KernelDestination> destinations)
        {
            if (destinations.Count == 0) return [];
            switch (scheduler)
            {
                case "rr" or "lc" or "dh" or "sh" or "lblc" or "lblcr" or "twos":
                    // Weights only say who may be picked: equal shares (sh, dh and lblc hash or pin per address: over many clients).
                    return destinations.Select(d => (d, 1.0 / destinations.Count)).ToList();
                case "fo" or "ovf":
                    {
                        // The highest weight takes everything.
                        var top = destinations.OrderByDescending(d => d.Weight).ThenBy(d => d.Key).First();
                        return destinations.Select(d => (d, d == top ? 1.0 : 0.0)).Where(p => p.Item2 > 0).ToList();
                    }
                default:
                    {
                        var total = (double)destinations.Sum(d => (long)d.Weight);
                        return destinations.Select(d => (d, d.Weight / total)).ToList();
                    }
            }
        }

        private string? NameOf(VirtualServerKey key)
        {
            if (!kernel.View.Ipsets.TryGetValue(IpvsNames.ServiceNames.Name(key.Family), out var entries)) return null;
            var wanted = $"{key.Address},{IpvsText.ProtocolName(key.Protocol)}:{key.Port.ToString(CultureInfo.InvariantCulture)}";
            var entry = entries.FirstOrDefault(e => SetIndex.Canonical(IpvsNames.ServiceNames.Type, IpsetDefinition.KeyOf(e)) == wanted);
            return entry is null ? null : IpsetDefinition.CommentOf(entry);
        }

        /// <summary>The frontend a virtual server is, from the sets its address and port are in (a node address: node port).</summary>
        private string? FrontendOf(VirtualServerKey key)
        {
            if (_sets.Contains(key, IpvsNames.ClusterIP)) return Frontends.ClusterIP;
            if (_sets.Contains(key, IpvsNames.ExternalIP) || _sets.Contains(key, IpvsNames.ExternalIPLocal)) return Frontends.ExternalIP;
            if (_sets.Contains(key, IpvsNames.LoadBalancerSet)) return Frontends.LoadBalancerIP;
            if (kernel.View.NodeAddresses.Contains(key.Address) && kernel.View.Services.ContainsKey(key)) return Frontends.NodePort;
            return null;
        }

        /// <summary>externalTrafficPolicy Local: the frontend is in one of the *-LOCAL sets (the client's source is kept).</summary>
        private bool IsLocalPolicy(VirtualServerKey key)
        {
            if (_sets.Contains(key, IpvsNames.ExternalIPLocal) || _sets.Contains(key, IpvsNames.LoadBalancerLocal)) return true;
            if (!kernel.View.NodeAddresses.Contains(key.Address)) return false;
            return key.Protocol switch
            {
                Protocol.TCP => _sets.ContainsPort(key, IpvsNames.NodePortLocalTcp),
                Protocol.UDP => _sets.ContainsPort(key, IpvsNames.NodePortLocalUdp),
                _ => _sets.Contains(key, IpvsNames.NodePortLocalSctp),
            };
        }

        private SavedTable Find(string name) =>
            Tables.FirstOrDefault(t => t.Name == name) ?? new SavedTable(name, new Dictionary<string, string>(), new Dictionary<string, IReadOnlyList<string>>());

        /// <summary>A built-in chain: falling off its end applies its policy (ACCEPT when the table does not declare it).</summary>
        private (End End, string? Decider) RunBuiltIn(SavedTable table, string chain)
        {
            if (!table.Rules.ContainsKey(chain)) return (End.Accept, null);
            var (end, decider) = RunChain(table, chain, 0);
            if (end is not (End.None or End.Return)) return (end, decider);
            if (table.Policies.GetValueOrDefault(chain, "ACCEPT") == "DROP")
            {
                _steps.Add($"{table.Name} {chain}: policy DROP");
                return (End.Drop, null);
            }
            return (End.Accept, null);
        }

        private (End End, string? Decider) RunChain(SavedTable table, string chain, int depth)
        {
            if (depth > MaxDepth) throw new ExplainException($"{table.Name} chain {chain}: jumps nest deeper than {MaxDepth}; is there a loop?");
            if (!table.Rules.TryGetValue(chain, out var rules)) throw new ExplainException($"{table.Name}: a rule jumps to chain {chain}, which does not exist");
            foreach (var text in rules)
            {
                var rule = Rule.Parse(text);
                var line = $"{table.Name} -A {chain} {text}";
                if (rule.NotUnderstood is { } unknown)
                {
                    _steps.Add($"skipped (option {unknown} is not understood): {line}");
                    continue;
                }
                if (!rule.Matches(this)) continue;
                switch (rule.Target)
                {
                    case null:
                        continue;
                    case "RETURN":
                        _steps.Add(line);
                        return (End.Return, null);
                    case "ACCEPT":
                        _steps.Add(line);
                        return (End.Accept, null);
                    case "DROP":
                        _steps.Add(line);
                        return (End.Drop, line);
                    case "REJECT":
                        _steps.Add(line);
                        return (End.Reject, line);
                    case "MASQUERADE" or "SNAT":
                        _steps.Add(line);
                        return (End.Masquerade, line);
                    case "MARK":
                        _steps.Add(line);
                        _mark = rule.NewMark(_mark);
                        continue;
                    default:
                        if (!table.Rules.ContainsKey(rule.Target))
                        {
                            _steps.Add($"(target {rule.Target} is not followed): {line}");
                            continue;
                        }
                        var before = _steps.Count;
                        _steps.Add(line);
                        var (end, decider) = RunChain(table, rule.Target, depth + 1);
                        if (end is End.None or End.Return)
                        {
                            // A jump into a chain in which nothing matched decided nothing: left out.
                            if (_steps.Count == before + 1) _steps.RemoveAt(before);
                            if (rule.IsGoto) return (End.Return, null);
                            continue;
                        }
                        return (end, decider);
                }
            }
            return (End.None, null);
        }

        // ------------------------------------------------------------------ what the rules match

        public bool MatchProtocol(string name) => name.ToLowerInvariant() switch
        {
            "all" or "0" => true,
            "tcp" or "6" => question.Protocol == Protocol.TCP,
            "udp" or "17" => question.Protocol == Protocol.UDP,
            "sctp" or "132" => question.Protocol == Protocol.SCTP,
            _ => false,
        };

        public bool MatchSource(string prefix) => _source is not null && IpPrefix.TryParse(prefix, out var p) && SameFamily(p.Address, _source) && p.Contains(_source);

        public bool MatchDestination(string prefix) => IpPrefix.TryParse(prefix, out var p) && SameFamily(p.Address, _destination) && p.Contains(_destination);

        public bool MatchInInterface(string pattern) =>
            !_localOrigin && inInterface is { } name && (pattern.EndsWith('+') ? name.StartsWith(pattern[..^1], StringComparison.Ordinal) : name == pattern);

        public bool MatchDestinationPort(string ports) => ports.Split(',').Any(p => SavedRule.InPorts(p, _port));

        public bool MatchAddressType(string types, bool ofSource)
        {
            var address = ofSource ? _source : _destination;
            if (address is null) return false;
            var local = _local.Contains(address) || IPAddress.IsLoopback(address);
            return types.Split(',').Any(t => t switch
            {
                "LOCAL" => local,
                "UNICAST" => !local,
                _ => false,
            });
        }

        /// <summary>The first packet of a new flow: NEW, and DNAT once IPVS translated it.</summary>
        public bool MatchConnectionState(string states) => states.Split(',').Any(s => s == "NEW" || (s == "DNAT" && _translated));

        public bool MatchOriginalDestination(string prefix) => IpPrefix.TryParse(prefix, out var p) && SameFamily(p.Address, question.Destination) && p.Contains(question.Destination);

        public bool MatchOriginalDestinationPort(string ports) => ports.Split(',').Any(p => SavedRule.InPorts(p, question.Port));

        public bool MatchMark(string text) => SavedRule.MarkMatches(text, _mark);

        /// <summary>An ipset match: the packet's fields named by <paramref name="flags"/> (src, dst per dimension) are an entry of the set.</summary>
        public bool MatchSet(string set, string flags) =>
            _sets.Matches(set, flags.Split(','), _source, _destination, question.Protocol, _port);

        private static bool SameFamily(IPAddress a, IPAddress b) => a.AddressFamily == b.AddressFamily;
    }

    /// <summary>This mode's ipsets, indexed: each entry's key in one canonical text per set type.</summary>
    private sealed class SetIndex
    {
        private readonly Dictionary<string, (string Type, HashSet<string> Keys, List<string[]> Nets)> _sets = new(StringComparer.Ordinal);

        public static SetIndex For(IpvsKernelView view)
        {
            var index = new SetIndex();
            foreach (var (name, entries) in view.Ipsets)
            {
                var definition = IpvsNames.Sets.FirstOrDefault(s => s.Name(IpFamily.IPv4) == name || s.Name(IpFamily.IPv6) == name);
                if (definition is null) continue;
                var keys = new HashSet<string>(StringComparer.Ordinal);
                var nets = new List<string[]>();
                foreach (var entry in entries)
                {
                    var key = IpsetDefinition.KeyOf(entry);
                    if (definition.Type == "hash:ip,port,net") nets.Add(key.Split(','));
                    else if (Canonical(definition.Type, key) is { } canonical) keys.Add(canonical);
                }
                index._sets[name] = (definition.Type, keys, nets);
            }
            return index;
        }

        /// <summary>An entry's key as this index writes it (addresses as .NET prints them, protocols lower case); null when it cannot be read.</summary>
        public static string? Canonical(string type, string key)
        {
            var parts = key.Split(',');
            var dimensions = Dimensions(type);
            if (parts.Length != dimensions.Length) return null;
            var text = new StringBuilder();
            for (var i = 0; i < parts.Length; i++)
            {
                if (i > 0) text.Append(',');
                switch (dimensions[i])
                {
                    case 'i':
                        if (!IPAddress.TryParse(parts[i], out var ip)) return null;
                        text.Append(ip);
                        break;
                    case 'p':
                        {
                            var protoPort = parts[i].Split(':');
                            if (type.StartsWith("bitmap:", StringComparison.Ordinal)) text.Append(parts[i]);
                            else if (protoPort.Length == 2) text.Append(protoPort[0].ToLowerInvariant()).Append(':').Append(protoPort[1]);
                            else return null;
                            break;
                        }
                    default:
                        text.Append(parts[i]);
                        break;
                }
            }
            return text.ToString();
        }

        /// <summary>The dimensions of a set type: i (address), p (port, with its protocol in a hash set), n (network).</summary>
        private static char[] Dimensions(string type) => type switch
        {
            "hash:ip" => ['i'],
            "hash:ip,port" => ['i', 'p'],
            "hash:ip,port,ip" => ['i', 'p', 'i'],
            "hash:ip,port,net" => ['i', 'p', 'n'],
            "bitmap:port" => ['p'],
            _ => [],
        };

        public bool Contains(VirtualServerKey key, IpsetDefinition set) =>
            Matches(set.Name(key.Family), ["dst", "dst"], null, key.Address, key.Protocol, key.Port);

        public bool ContainsPort(VirtualServerKey key, IpsetDefinition set) =>
            Matches(set.Name(key.Family), ["dst"], null, key.Address, key.Protocol, key.Port);

        public bool Matches(string name, string[] flags, IPAddress? source, IPAddress destination, Protocol protocol, int port)
        {
            if (!_sets.TryGetValue(name, out var set)) return false;
            var dimensions = Dimensions(set.Type);
            if (flags.Length < dimensions.Length) return false;
            var protocolName = IpvsText.ProtocolName(protocol);
            var parts = new string[dimensions.Length];
            IPAddress? netAddress = null;
            for (var i = 0; i < dimensions.Length; i++)
            {
                var fromSource = flags[i] == "src";
                switch (dimensions[i])
                {
                    case 'i':
                        var address = fromSource ? source : destination;
                        if (address is null) return false;
                        parts[i] = address.ToString();
                        break;
                    case 'p':
                        if (fromSource) return false; // the client's port is not part of the question
                        parts[i] = set.Type.StartsWith("bitmap:", StringComparison.Ordinal)
                            ? port.ToString(CultureInfo.InvariantCulture)
                            : $"{protocolName}:{port.ToString(CultureInfo.InvariantCulture)}";
                        break;
                    default:
                        netAddress = fromSource ? source : destination;
                        if (netAddress is null) return false;
                        break;
                }
            }
            if (netAddress is null) return set.Keys.Contains(string.Join(',', parts));
            var head = string.Join(',', parts[..2]);
            return set.Nets.Any(entry => entry.Length == 3 && Canonical("hash:ip,port", $"{entry[0]},{entry[1]}") == head && InNet(entry[2], netAddress));
        }

        private static bool InNet(string net, IPAddress address) =>
            net.Contains('/')
                ? IpPrefix.TryParse(net, out var prefix) && prefix.Family == NodeAddresses.FamilyOf(address) && prefix.Contains(address)
                : IPAddress.TryParse(net, out var single) && single.Equals(address);
    }

    /// <summary>One rule of iptables-save, parsed: its matches and its target.</summary>
    private sealed class Rule
    {
        private readonly List<(bool Negated, string Option, string[] Args)> _matches = [];
        private SavedRule _saved = null!;

        public string? Target => _saved.Target;
        public bool IsGoto => _saved.IsGoto;
        public string? NotUnderstood { get; private set; }

        private static readonly Dictionary<string, Rule> Cache = new(StringComparer.Ordinal);

        public static Rule Parse(string text)
        {
            lock (Cache)
            {
                if (Cache.TryGetValue(text, out var cached)) return cached;
                if (Cache.Count > 10_000) Cache.Clear();
                var rule = new Rule();
                rule.Read(SavedRule.Parse(text));
                Cache[text] = rule;
                return rule;
            }
        }

        private void Read(SavedRule saved)
        {
            _saved = saved;
            foreach (var match in saved.Matches)
            {
                if (match.Stray) NotUnderstood ??= match.Option;
                else Add(match.Negated, match.Option, match.Args);
            }
        }

        private void Add(bool negated, string option, string[] args)
        {
            switch (option)
            {
                case "-m" or "--match" or "--comment":
                    return;
                case "-p" or "--protocol" or "-s" or "--source" or "-d" or "--destination" or "-i" or "--in-interface" or "-o" or "--out-interface"
                    or "--dport" or "--destination-port" or "--dports" or "--sport" or "--source-port" or "--sports"
                    or "--dst-type" or "--src-type" or "--ctstate" or "--state" or "--ctorigdst" or "--ctorigdstport" or "--mark"
                    or "--match-set" or "--physdev-is-in" or "--physdev-is-bridged":
                    if (args.Length == 0 && option is not ("--physdev-is-in" or "--physdev-is-bridged")) { NotUnderstood ??= option; return; }
                    _matches.Add((negated, option, args));
                    return;
                default:
                    NotUnderstood ??= option;
                    return;
            }
        }

        public bool Matches(Tracer packet) => _matches.All(m => Match(m.Option, m.Args, packet) != m.Negated);

        private static bool Match(string option, string[] args, Tracer packet) => option switch
        {
            "-p" or "--protocol" => packet.MatchProtocol(args[0]),
            "-s" or "--source" => packet.MatchSource(args[0]),
            "-d" or "--destination" => packet.MatchDestination(args[0]),
            "-i" or "--in-interface" => packet.MatchInInterface(args[0]),
            "--dport" or "--destination-port" or "--dports" => packet.MatchDestinationPort(args[0]),
            "--dst-type" => packet.MatchAddressType(args[0], ofSource: false),
            "--src-type" => packet.MatchAddressType(args[0], ofSource: true),
            "--ctstate" or "--state" => packet.MatchConnectionState(args[0]),
            "--ctorigdst" => packet.MatchOriginalDestination(args[0]),
            "--ctorigdstport" => packet.MatchOriginalDestinationPort(args[0]),
            "--mark" => packet.MatchMark(args[0]),
            "--match-set" => args.Length > 1 && packet.MatchSet(args[0], args[1]),
            // Not known from the question: the out interface, the client's port, a bridge port it came in on.
            _ => false,
        };

        public uint NewMark(uint mark) => _saved.NewMark(mark);
    }
}
