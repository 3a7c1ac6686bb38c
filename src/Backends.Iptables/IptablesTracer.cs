using System.Globalization;
using System.Net;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Iptables;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// Follows the first packet of a flow through iptables-save output as the kernel would: nat
/// PREROUTING (OUTPUT for a packet the node sends), then filter INPUT, FORWARD or OUTPUT on the
/// translated packet, then nat POSTROUTING for masquerading. A <c>statistic</c> rule splits the
/// flow into the share that takes it and the share that does not, so every endpoint a new flow can
/// reach comes out with its probability. A <c>recent --rcheck</c> (ClientIP affinity) does not match
/// a first packet; it marks the answer as having affinity.
/// It reads rules generically (any chain, the options kube-proxy-style rules use) and reads the
/// service port and frontend from the comments this data plane writes; a rule with an option it does
/// not know is left out, and said so in the steps.
/// </summary>
public static class IptablesTracer
{
    private const int MaxDepth = 64;

    public static PacketFate Trace(IReadOnlyList<SavedTable> tables, PacketQuestion question, TraceNode node)
    {
        var nat = Find(tables, "nat");
        var filter = Find(tables, "filter");
        var localOrigin = question.Source is not null && node.LocalAddresses.Contains(question.Source);
        var start = new Flow(question, question.Destination, question.Port, node, localOrigin);
        var ends = new List<Flow>();
        foreach (var afterNat in RunBuiltIn(nat, localOrigin ? "OUTPUT" : "PREROUTING", start))
        {
            if (afterNat.End is End.Drop or End.Reject) { ends.Add(afterNat); continue; }
            var toNode = !localOrigin && node.LocalAddresses.Contains(afterNat.Destination);
            var filterChain = localOrigin ? "OUTPUT" : toNode ? "INPUT" : "FORWARD";
            foreach (var afterFilter in RunBuiltIn(filter, filterChain, afterNat with { End = End.None }))
            {
                if (afterFilter.End is End.Drop or End.Reject || toNode) { ends.Add(afterFilter with { End = Final(afterFilter.End, afterNat) }); continue; }
                foreach (var afterPost in RunBuiltIn(nat, "POSTROUTING", afterFilter with { End = End.None }))
                    ends.Add(afterPost with { End = afterPost.End == End.Masquerade ? End.Masquerade : afterNat.End == End.Dnat ? End.Dnat : End.Accept, Dnat = afterNat.Dnat });
            }
        }
        return Summarize(ends);
    }

    /// <summary>Every frontend the tables hold: the destinations our service rules match, each traced from off the cluster.</summary>
    public static IReadOnlyList<FrontendFate> List(IReadOnlyList<SavedTable> tables, TraceNode node, IpFamily family)
    {
        var questions = new List<PacketQuestion>();
        var nodeAddress = node.LocalAddresses.FirstOrDefault(a => NodeAddresses.FamilyOf(a) == family && !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal);
        foreach (var table in tables.Where(t => t.Name is "nat" or "filter"))
            foreach (var (chain, rules) in table.Rules)
            {
                if (!ChainNames.IsServices(chain) && chain is not (ChainNames.NodePorts or ChainNames.ExternalServices or ChainNames.ProxyFirewall)) continue;
                foreach (var text in rules)
                {
                    var rule = Rule.Parse(table.Name, chain, text);
                    if (rule.Service is null || rule.Port is not { } port || rule.Protocol is not { } protocol || rule.Target == "ACCEPT") continue;
                    var destination = rule.Destination ?? (rule.DestinationLocal || chain == ChainNames.NodePorts ? nodeAddress : null);
                    if (destination is null) continue;
                    questions.Add(new PacketQuestion(protocol, destination, port));
                }
            }
        return questions.Distinct().OrderBy(q => q.ToString(), StringComparer.Ordinal)
            .Select(q => new FrontendFate(q, Trace(tables, q, node))).ToList();
    }

    private static SavedTable Find(IReadOnlyList<SavedTable> tables, string name) =>
        tables.FirstOrDefault(t => t.Name == name) ?? new SavedTable(name, new Dictionary<string, string>(), new Dictionary<string, IReadOnlyList<string>>());

    private static End Final(End filterEnd, Flow afterNat) =>
        filterEnd is End.Drop or End.Reject ? filterEnd : afterNat.End == End.Dnat ? End.Dnat : End.Accept;

    /// <summary>A built-in chain: falling off its end applies its policy (ACCEPT when the table does not declare it).</summary>
    private static IEnumerable<Flow> RunBuiltIn(SavedTable table, string chain, Flow flow)
    {
        if (!table.Rules.ContainsKey(chain)) { yield return flow with { End = End.Accept }; yield break; }
        foreach (var result in RunChain(table, chain, flow, 0))
        {
            if (result.End is End.None or End.Return)
            {
                var policy = table.Policies.GetValueOrDefault(chain, "ACCEPT");
                yield return policy == "DROP"
                    ? result.Step($"{table.Name} {chain}: policy DROP") with { End = End.Drop }
                    : result with { End = End.Accept };
            }
            else yield return result;
        }
    }

    /// <summary>The outcomes of one chain; <see cref="End.Return"/> and <see cref="End.None"/> mean "back to the caller".</summary>
    private static IEnumerable<Flow> RunChain(SavedTable table, string chain, Flow flow, int depth)
    {
        if (depth > MaxDepth) throw new ExplainException($"{table.Name} chain {chain}: jumps nest deeper than {MaxDepth}; is there a loop?");
        if (!table.Rules.TryGetValue(chain, out var rules)) throw new ExplainException($"{table.Name}: a rule jumps to chain {chain}, which does not exist");
        return RunFrom(table, chain, rules, 0, flow, depth);
    }

    private static IEnumerable<Flow> RunFrom(SavedTable table, string chain, IReadOnlyList<string> rules, int start, Flow flow, int depth)
    {
        for (var i = start; i < rules.Count; i++)
        {
            var rule = Rule.Parse(table.Name, chain, rules[i]);
            if (rule.NotUnderstood is { } unknown)
            {
                flow = flow.Step($"skipped (option {unknown} is not understood): -A {chain} {rules[i]}");
                continue;
            }
            var matched = rule.Matches(flow);
            if (rule.ChecksAffinity) flow = flow with { Affinity = true };
            if (!matched) continue;
            var taken = flow.Note(rule);
            if (rule.Probability is { } probability && probability < 1)
            {
                foreach (var result in Continue(table, chain, rules, i, Apply(table, rule, taken with { Weight = flow.Weight * probability }, depth), depth))
                    yield return result;
                flow = flow with { Weight = flow.Weight * (1 - probability) };
                if (flow.Weight <= 0) yield break;
                continue;
            }
            foreach (var result in Continue(table, chain, rules, i, Apply(table, rule, taken, depth), depth))
                yield return result;
            yield break;
        }
        yield return flow with { End = End.None };
    }

    /// <summary>Outcomes that go on in this chain (a mark set, a user chain returned) continue after rule <paramref name="index"/>.</summary>
    private static IEnumerable<Flow> Continue(SavedTable table, string chain, IReadOnlyList<string> rules, int index, IEnumerable<Flow> results, int depth)
    {
        foreach (var result in results)
        {
            if (result.End == End.None)
                foreach (var after in RunFrom(table, chain, rules, index + 1, result, depth)) yield return after;
            else yield return result;
        }
    }

    private static IEnumerable<Flow> Apply(SavedTable table, Rule rule, Flow flow, int depth)
    {
        switch (rule.Target)
        {
            case null:
                return [flow with { End = End.None }];
            case "RETURN":
                return [flow with { End = End.Return }];
            case "ACCEPT":
                return [flow with { End = End.Accept }];
            case "DROP":
                return [flow with { End = End.Drop, Decider = rule }];
            case "REJECT":
                return [flow with { End = End.Reject, Decider = rule }];
            case "MASQUERADE" or "SNAT":
                return [flow with { End = End.Masquerade }];
            case "DNAT":
                return [Dnat(flow, rule)];
            case "MARK":
                return [flow with { Mark = rule.NewMark(flow.Mark), End = End.None }];
            default:
                if (!table.Rules.ContainsKey(rule.Target))
                    return [flow.Step($"(target {rule.Target} is not followed)") with { End = End.None }];
                return RunChain(table, rule.Target, flow, depth + 1).Select(r => r.End switch
                {
                    // Back from a jump: go on after the jump. Back from a goto: leave this chain too.
                    End.None or End.Return => r with { End = rule.IsGoto ? End.Return : End.None },
                    _ => r,
                });
        }
    }

    private static Flow Dnat(Flow flow, Rule rule)
    {
        var to = rule.TargetOption("--to-destination") ?? throw new ExplainException($"-A {rule.Chain} {rule.Text}: DNAT without --to-destination");
        var (address, port) = SplitEndpoint(to, flow.Port);
        return flow with { End = End.Dnat, Dnat = to, Destination = address, Port = port, Decider = rule };
    }

    private static (IPAddress Address, int Port) SplitEndpoint(string text, int defaultPort)
    {
        string host, portText = "";
        if (text.StartsWith('['))
        {
            var close = text.IndexOf(']');
            host = text[1..close];
            if (close + 1 < text.Length && text[close + 1] == ':') portText = text[(close + 2)..];
        }
        else if (text.Count(c => c == ':') == 1)
        {
            host = text[..text.IndexOf(':')];
            portText = text[(text.IndexOf(':') + 1)..];
        }
        else host = text;
        if (!IPAddress.TryParse(host, out var address)) throw new ExplainException($"DNAT to '{text}': not an address");
        var port = portText.Length == 0 ? defaultPort : int.Parse(portText.Split('-')[0], CultureInfo.InvariantCulture);
        return (address, port);
    }

    private static PacketFate Summarize(List<Flow> ends)
    {
        var byVerdict = ends.GroupBy(Verdict).OrderByDescending(g => g.Sum(f => f.Weight)).ToList();
        var verdict = byVerdict[0].Key;
        var main = byVerdict[0].ToList();
        var service = ends.Select(f => f.Service).FirstOrDefault(s => s is not null);
        var frontend = ends.Select(f => f.Frontend).FirstOrDefault(s => s is not null);
        var affinity = ends.Any(f => f.Affinity);
        var source = main[0].Question.Source;
        var reached = verdict == PacketVerdict.Forward ? main.GroupBy(f => f.Dnat!).ToList() : [];
        var endpoints = reached
            .Select(g => new ReachedEndpoint(g.Key, Math.Round(g.Sum(f => f.Weight), 6), g.Any(f => f.End == End.Masquerade)))
            .OrderBy(e => e.Endpoint, StringComparer.Ordinal).ToList();
        // A pod reaching itself through the service (hairpin) is always masqueraded; that alone does not make the flow masqueraded.
        var masquerade = reached.Any(g => g.Any(f => f.End == End.Masquerade) && !g.First().Destination.Equals(source));
        var local = main.Any(f => f.Chains.Any(c => c.StartsWith("KUBE-SVL-", StringComparison.Ordinal)));
        var reason = verdict switch
        {
            PacketVerdict.Forward => TraceSteps.ForwardReason(endpoints.Count, local, masquerade, affinity),
            PacketVerdict.Reject or PacketVerdict.Drop => Why(main[0].Decider),
            _ => TraceSteps.PassReason(service),
        };
        return new PacketFate(service, frontend, verdict, endpoints, masquerade, affinity, reason, Steps(main));
    }

    private static PacketVerdict Verdict(Flow flow) => flow.End switch
    {
        End.Drop => PacketVerdict.Drop,
        End.Reject => PacketVerdict.Reject,
        _ when flow.Dnat is not null => PacketVerdict.Forward,
        _ => PacketVerdict.Pass,
    };

    private static string Why(Rule? decider)
    {
        if (decider is null) return "dropped by a chain's policy";
        var comment = decider.Comment ?? "";
        if (decider.Chain == ChainNames.ProxyFirewall) return "source outside loadBalancerSourceRanges";
        if (comment.EndsWith("has no local endpoints", StringComparison.Ordinal)) return "traffic policy Local, and no endpoint on this node";
        if (comment.EndsWith("has no endpoints", StringComparison.Ordinal)) return "no endpoints";
        return $"{decider.Target} by -A {decider.Chain} {decider.Text}";
    }

    /// <summary>The rules every outcome met, then the one that set each endpoint apart.</summary>
    private static IReadOnlyList<string> Steps(List<Flow> flows)
    {
        var steps = TraceSteps.CommonPrefix(flows.Select(f => (IReadOnlyList<string>)Pruned(f.Steps)).ToList());
        if (flows.Count > 1)
            foreach (var branch in flows.Where(f => f.Decider is not null).GroupBy(f => f.Dnat))
            {
                var decider = branch.First().Decider!;
                steps.Add(string.Create(CultureInfo.InvariantCulture, $"{branch.Sum(f => f.Weight) * 100:F1}%: {decider.Table} -A {decider.Chain} {decider.Text}"));
            }
        // A rule the tracer could not read, on any branch, is worth a line: the answer may miss what it does.
        steps.AddRange(flows.SelectMany(f => f.Steps).Where(s => s.StartsWith("skipped", StringComparison.Ordinal) || s.StartsWith("(target", StringComparison.Ordinal)).Distinct().Except(steps));
        return steps;
    }

    /// <summary>
    /// Leaves out a jump into a chain in which nothing then matched (the built-in chains' jumps into
    /// KUBE-FORWARD, KUBE-PROXY-FIREWALL, ... on most packets): it decided nothing.
    /// </summary>
    private static List<string> Pruned(IReadOnlyList<string> steps)
    {
        var kept = new List<string>();
        for (var i = 0; i < steps.Count; i++)
        {
            var words = steps[i].Split(' ');
            var jump = Array.FindLastIndex(words, w => w is "-j" or "-g");
            var target = jump >= 0 && jump + 1 < words.Length ? words[jump + 1] : null;
            var next = i + 1 < steps.Count ? steps[i + 1].Split(' ') : [];
            var nextChain = next.Length > 2 && next[1] == "-A" ? next[2] : null;
            if (words.Length > 2 && words[1] == "-A" && target is not null && target.StartsWith("KUBE-", StringComparison.Ordinal) && nextChain != target) continue;
            kept.Add(steps[i]);
        }
        return kept;
    }

    private enum End { None, Return, Accept, Drop, Reject, Dnat, Masquerade }

    private sealed record Flow(PacketQuestion Question, IPAddress Destination, int Port, TraceNode Node, bool LocalOrigin)
    {
        public double Weight { get; init; } = 1;
        public uint Mark { get; init; }
        public End End { get; init; }
        public string? Dnat { get; init; }
        public bool Affinity { get; init; }
        public string? Service { get; init; }
        public string? Frontend { get; init; }
        public Rule? Decider { get; init; }
        public IReadOnlyList<string> Steps { get; init; } = [];
        public IReadOnlyList<string> Chains { get; init; } = [];

        public Flow Step(string step) => this with { Steps = [.. Steps, step] };

        /// <summary>A rule matched: remember it, and the service port and frontend its comment names.</summary>
        public Flow Note(Rule rule)
        {
            var next = this with { Steps = [.. Steps, $"{rule.Table} -A {rule.Chain} {rule.Text}"], Chains = Chains.Contains(rule.Chain) ? Chains : [.. Chains, rule.Chain] };
            if (next.Service is null && rule.Service is not null && rule.Frontend is { } frontend)
                next = next with { Service = rule.Service, Frontend = frontend };
            return next;
        }
    }

    /// <summary>One rule, parsed: its matches, evaluated against a flow, and its target.</summary>
    private sealed class Rule
    {
        private readonly List<(bool Negated, string Option, string[] Args)> _matches = [];
        private SavedRule _saved = null!;

        public required string Chain { get; init; }
        public required string Text { get; init; }
        public required string Table { get; init; }
        public string? Target => _saved.Target;
        public bool IsGoto => _saved.IsGoto;
        public string? Comment { get; private set; }
        public double? Probability { get; private set; }
        public bool ChecksAffinity { get; private set; }
        public string? NotUnderstood { get; private set; }
        public Protocol? Protocol { get; private set; }
        public int? Port { get; private set; }
        public IPAddress? Destination { get; private set; }
        public bool DestinationLocal { get; private set; }

        /// <summary>The service port this rule belongs to: the first word of its comment, when it has the form ns/name[:port].</summary>
        public string? Service
        {
            get
            {
                if (Comment is null) return null;
                var word = Comment.Split(' ')[0];
                var slash = word.IndexOf('/');
                return slash > 0 && slash < word.Length - 1 && !word.StartsWith("kubernetes", StringComparison.Ordinal) ? word : null;
            }
        }

        /// <summary>The frontend a service rule is for, from its chain and comment (null for rules past the frontend: a pool, an endpoint).</summary>
        public string? Frontend => Chain switch
        {
            ChainNames.NodePorts when Target != "ACCEPT" => Frontends.NodePort,
            ChainNames.ProxyFirewall => Frontends.LoadBalancerIP,
            var chain when (ChainNames.IsServices(chain) || chain == ChainNames.ExternalServices) && Comment is { } c =>
                c.Contains(" cluster IP", StringComparison.Ordinal) ? Frontends.ClusterIP
                : c.Contains(" external IP", StringComparison.Ordinal) ? Frontends.ExternalIP
                : c.Contains(" loadbalancer IP", StringComparison.Ordinal) ? Frontends.LoadBalancerIP
                : c.Contains(" node port", StringComparison.Ordinal) ? Frontends.NodePort
                : null,
            _ => null,
        };

        public string? TargetOption(string option) => _saved.TargetOption(option);

        private static readonly Dictionary<string, Rule> Cache = new(StringComparer.Ordinal);

        public static Rule Parse(string table, string chain, string text)
        {
            var key = $"{table} {chain} {text}";
            lock (Cache)
            {
                if (Cache.TryGetValue(key, out var cached)) return cached;
                if (Cache.Count > 100_000) Cache.Clear();
                var rule = new Rule { Table = table, Chain = chain, Text = text };
                rule.Read(SavedRule.Parse(text));
                Cache[key] = rule;
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
                case "-m" or "--match":
                    return;
                case "--comment":
                    Comment = args.FirstOrDefault();
                    return;
                case "--mode" when args.FirstOrDefault() == "random":
                    return;
                case "--probability":
                    Probability = double.Parse(args[0], CultureInfo.InvariantCulture);
                    return;
                case "--name" or "--seconds" or "--reap" or "--rsource" or "--mask" or "--hitcount":
                    return;
                case "--set":
                    return;
                case "--rcheck" or "--update":
                    ChecksAffinity = true;
                    _matches.Add((negated, option, args));
                    return;
                case "-p" or "--protocol":
                    if (!negated) Protocol = args[0].ToLowerInvariant() switch { "tcp" or "6" => Model.Protocol.TCP, "udp" or "17" => Model.Protocol.UDP, "sctp" or "132" => Model.Protocol.SCTP, _ => null };
                    break;
                case "--dport" or "--destination-port":
                    if (!negated && int.TryParse(args[0], CultureInfo.InvariantCulture, out var port)) Port = port;
                    break;
                case "-d" or "--destination":
                    if (!negated && IpPrefix.TryParse(args[0], out var prefix) && prefix.Length == (prefix.Family == IpFamily.IPv4 ? 32 : 128)) Destination = prefix.Address;
                    break;
                case "--dst-type":
                    if (!negated && args[0].Split(',').Contains("LOCAL")) DestinationLocal = true;
                    break;
                case "-s" or "--source" or "-i" or "--in-interface" or "-o" or "--out-interface" or "--src-type" or "--mark"
                    or "--ctstate" or "--state" or "--dports" or "--sport" or "--source-port" or "--sports":
                    break;
                default:
                    NotUnderstood ??= option;
                    return;
            }
            _matches.Add((negated, option, args));
        }

        public bool Matches(Flow flow) => _matches.All(m => Match(m.Option, m.Args, flow) != m.Negated);

        private static bool Match(string option, string[] args, Flow flow)
        {
            var source = flow.Question.Source;
            switch (option)
            {
                case "-p" or "--protocol":
                    return args[0].ToLowerInvariant() switch
                    {
                        "all" or "0" => true,
                        "tcp" or "6" => flow.Question.Protocol == Model.Protocol.TCP,
                        "udp" or "17" => flow.Question.Protocol == Model.Protocol.UDP,
                        "sctp" or "132" => flow.Question.Protocol == Model.Protocol.SCTP,
                        _ => false,
                    };
                case "-s" or "--source":
                    return source is not null && IpPrefix.TryParse(args[0], out var s) && SameFamily(s.Address, source) && s.Contains(source);
                case "-d" or "--destination":
                    // A prefix, or an address with a mask (KUBE-SERVICES' dispatch into its shards: -d 0.0.0.5/0.0.0.63).
                    return IpPrefix.TryParse(args[0], out var d) ? SameFamily(d.Address, flow.Destination) && d.Contains(flow.Destination) : SavedRule.InMaskedAddress(args[0], flow.Destination);
                case "-i" or "--in-interface":
                    return !flow.LocalOrigin && flow.Node.InInterface is { } inInterface && Interface(args[0], inInterface);
                case "-o" or "--out-interface":
                    return false;
                case "--dport" or "--destination-port":
                    return SavedRule.InPorts(args[0], flow.Port);
                case "--dports":
                    return args[0].Split(',').Any(p => SavedRule.InPorts(p, flow.Port));
                case "--sport" or "--source-port" or "--sports":
                    return false;
                case "--dst-type":
                    return args[0].Split(',').Any(t => AddressType(t, flow.Destination, flow.Node));
                case "--src-type":
                    return source is not null && args[0].Split(',').Any(t => AddressType(t, source, flow.Node));
                case "--mark":
                    return SavedRule.MarkMatches(args[0], flow.Mark);
                case "--ctstate" or "--state":
                    // The first packet of a new flow: NEW, and DNAT once translated.
                    return args[0].Split(',').Any(s => s == "NEW" || (s == "DNAT" && flow.Dnat is not null));
                case "--rcheck" or "--update":
                    return false;
                default:
                    return false;
            }
        }

        public uint NewMark(uint mark) => _saved.NewMark(mark);

        private static bool SameFamily(IPAddress a, IPAddress b) => a.AddressFamily == b.AddressFamily;

        private static bool Interface(string pattern, string name) =>
            pattern.EndsWith('+') ? name.StartsWith(pattern[..^1], StringComparison.Ordinal) : name == pattern;

        private static bool AddressType(string type, IPAddress address, TraceNode node) => type switch
        {
            "LOCAL" => node.LocalAddresses.Contains(address) || IPAddress.IsLoopback(address),
            "UNICAST" => !node.LocalAddresses.Contains(address),
            _ => false,
        };
    }
}
