using System.Globalization;
using System.Net;
using System.Text.Json;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// Follows the first packet of a flow through a table as <c>nft -j list table</c> shows it, in the
/// kernel's order: the base chains of the prerouting hook by priority (output for a packet the node
/// sends), then input for a packet to the node or forward and postrouting for one passing through
/// (postrouting after output); an <c>accept</c> ends only its base chain, drop and reject end the
/// packet, <c>dnat</c> and <c>masquerade</c> end their chain. It reads expressions generically (payload,
/// meta, fib, ct, concatenations, sets, verdict maps, marks); <c>numgen random mod N</c> splits the
/// flow into the share that takes the rule and the share that does not, so every endpoint a new flow
/// can reach comes out with its probability. A lookup in a dynamic set (ClientIP affinity) marks the
/// answer as having affinity; a client the set already holds goes back to its endpoint. The service
/// port and frontend come from the comments the planner writes on map elements (else from chain
/// names). A rule with a match it does not understand is left out, a statement it does not know is
/// skipped, and either is named in the steps.
/// </summary>
public static class NftablesTracer
{
    private const int MaxDepth = 64;

    public static PacketFate Trace(NftListing table, PacketQuestion question, TraceNode node) => new Run(table).Trace(question, node);

    /// <summary>Every frontend the table's verdict maps hold (address . protocol . port, or protocol . port on a node address), each traced from off the cluster.</summary>
    public static IReadOnlyList<FrontendFate> List(NftListing table, TraceNode node)
    {
        var nodeAddress =
            (table.Sets.TryGetValue(NftNames.NodePortIPs, out var nodePortIPs)
                ? nodePortIPs.Elements.Select(e => Address(e.Key)).FirstOrDefault(a => a is not null)
                : null)
            ?? node.LocalAddresses.FirstOrDefault(a => NodeAddresses.FamilyOf(a) == table.Family && !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal);
        var questions = new HashSet<PacketQuestion>();
        foreach (var map in table.Sets.Values.Where(s => s.ValueType == "verdict"))
            foreach (var element in map.Elements)
            {
                var parts = element.Key.ValueKind == JsonValueKind.Object && element.Key.TryGetProperty("concat", out var concat)
                    ? concat.EnumerateArray().ToList()
                    : [element.Key];
                if (parts.Count == 3 && Address(parts[0]) is { } address && ProtocolOf(parts[1]) is { } protocol && PortOf(parts[2]) is { } port)
                    questions.Add(new PacketQuestion(protocol, address, port));
                else if (parts.Count == 2 && nodeAddress is not null && ProtocolOf(parts[0]) is { } nodePortProtocol && PortOf(parts[1]) is { } nodePort)
                    questions.Add(new PacketQuestion(nodePortProtocol, nodeAddress, nodePort));
            }
        var run = new Run(table);
        return questions.OrderBy(q => q.ToString(), StringComparer.Ordinal).Select(q => new FrontendFate(q, run.Trace(q, node))).ToList();
    }

    private static IPAddress? Address(JsonElement e) =>
        e.ValueKind == JsonValueKind.String && IPAddress.TryParse(e.GetString(), out var address) ? address : null;

    private static Protocol? ProtocolOf(JsonElement e) => Canonical(e) switch
    {
        "tcp" => Protocol.TCP,
        "udp" => Protocol.UDP,
        "sctp" => Protocol.SCTP,
        _ => null,
    };

    private static int? PortOf(JsonElement e) => e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var port) && port is > 0 and < 65536 ? port : null;

    private enum End { None, Return, Accept, Drop, Reject }

    /// <summary>A value an expression evaluates to that matches nothing: an unknown source, a source port.</summary>
    private sealed class Unknown
    {
        public static readonly Unknown Value = new();
    }

    /// <summary>An expression the kernel cannot evaluate on this packet (<c>tcp dport</c> of a UDP packet): the rule does not match, negated or not.</summary>
    private sealed class Break
    {
        public static readonly Break Value = new();
    }

    /// <summary>One rule (or map element) that decided something, for people.</summary>
    private sealed record Step(string Chain, ListedRule? Rule, string Text, string? Jump = null, bool Skipped = false)
    {
        public override string ToString() => Skipped ? Text : $"{Chain}: {Text}";
    }

    private sealed record Flow(PacketQuestion Question, TraceNode Node, bool LocalOrigin, IPAddress Destination, int Port)
    {
        public double Weight { get; init; } = 1;
        public long Mark { get; init; }
        public End End { get; init; }
        public string? Dnat { get; init; }
        public bool Masqueraded { get; init; }
        public bool Affinity { get; init; }
        public string? Service { get; init; }
        public string? Frontend { get; init; }
        public Step? Decider { get; init; }
        public (string Map, string Value)? Element { get; init; }
        public IReadOnlyList<Step> Steps { get; init; } = [];
        public IReadOnlyList<string> Chains { get; init; } = [];

        public Flow Note(Step step) => this with
        {
            Steps = [.. Steps, step],
            Chains = step.Skipped || Chains.Contains(step.Chain) ? Chains : [.. Chains, step.Chain],
        };

        /// <summary>Adds the rule as a step unless it is already the last one (a rule with several statements).</summary>
        public Flow Record(ListedChain chain, ListedRule rule, string? jump = null) =>
            Steps.Count > 0 && ReferenceEquals(Steps[^1].Rule, rule) ? this : Note(new Step(chain.Name, rule, rule.Text, jump));
    }

    private sealed class Run(NftListing table)
    {
        private readonly Dictionary<string, (Dictionary<string, ListedElement> Exact, List<ListedElement> Others)> _index = new(StringComparer.Ordinal);

        public PacketFate Trace(PacketQuestion question, TraceNode node)
        {
            var localOrigin = question.Source is not null && node.LocalAddresses.Contains(question.Source);
            var start = new Flow(question, node, localOrigin, question.Destination, question.Port);
            var ends = new List<Flow>();
            foreach (var first in Hook(localOrigin ? "output" : "prerouting", start))
            {
                if (first.End is End.Drop or End.Reject) { ends.Add(first); continue; }
                if (!localOrigin && IsLocal(first.Destination, node)) { ends.AddRange(Hook("input", first)); continue; }
                foreach (var passed in localOrigin ? [first] : Hook("forward", first))
                {
                    if (passed.End is End.Drop or End.Reject) { ends.Add(passed); continue; }
                    ends.AddRange(Hook("postrouting", passed));
                }
            }
            return Summarize(ends.Where(f => f.Weight > 0).ToList());
        }

        /// <summary>The base chains of a hook, by priority; a drop or reject ends the packet, anything else goes on to the next.</summary>
        private List<Flow> Hook(string hook, Flow flow)
        {
            List<Flow> flows = [flow with { End = End.None }];
            foreach (var chain in table.Chains.Values.Where(c => c.Hook == hook).OrderBy(c => c.Priority).ThenBy(c => c.Name, StringComparer.Ordinal))
                flows = flows.SelectMany(f => f.End is End.Drop or End.Reject ? [f] : Base(chain, f)).ToList();
            return flows;
        }

        private IEnumerable<Flow> Base(ListedChain chain, Flow flow)
        {
            foreach (var result in RunFrom(chain, 0, flow, 0))
            {
                if (result.End is End.None or End.Return or End.Accept)
                    yield return chain.Policy == "drop" && result.End != End.Accept
                        ? result.Note(new Step(chain.Name, null, "policy drop")) with { End = End.Drop, Decider = new Step(chain.Name, null, "policy drop") }
                        : result with { End = End.None };
                else yield return result;
            }
        }

        private IEnumerable<Flow> RunChain(string name, Flow flow, int depth)
        {
            var where = $"{Nft.FamilyKeyword(table.Family)} {table.Table}";
            if (depth > MaxDepth) throw new ExplainException($"{where}: jumps nest deeper than {MaxDepth} at chain {name}; is there a loop?");
            if (!table.Chains.TryGetValue(name, out var chain)) throw new ExplainException($"{where}: a rule jumps to chain {name}, which is not in the table");
            return RunFrom(chain, 0, flow, depth);
        }

        /// <summary>The outcomes of a chain from rule <paramref name="start"/>; <see cref="End.None"/> and <see cref="End.Return"/> mean "back to the caller".</summary>
        private IEnumerable<Flow> RunFrom(ListedChain chain, int start, Flow flow, int depth)
        {
            for (var i = start; i < chain.Rules.Count; i++)
            {
                var rule = chain.Rules[i];
                if (NotUnderstood(rule) is { } unknown)
                {
                    flow = flow.Note(new Step(chain.Name, rule, $"skipped ({unknown} is not understood): {chain.Name}: {rule.Text}", Skipped: true));
                    continue;
                }
                var goOn = new List<Flow>();
                foreach (var result in Exec(chain, rule, 0, flow, depth))
                {
                    if (result.End == End.None) goOn.Add(result);
                    else yield return result;
                }
                if (goOn.Count == 0) yield break;
                if (goOn.Count == 1) { flow = goOn[0]; continue; }
                foreach (var branch in goOn)
                    foreach (var result in RunFrom(chain, i + 1, branch, depth)) yield return result;
                yield break;
            }
            yield return flow with { End = End.None };
        }

        /// <summary>Expression <paramref name="k"/> of a rule and what follows it; <see cref="End.None"/>: on to the next rule.</summary>
        private IEnumerable<Flow> Exec(ListedChain chain, ListedRule rule, int k, Flow flow, int depth)
        {
            if (k == rule.Expressions.Count) return [flow with { End = End.None }];
            var (kind, value) = Single(rule.Expressions[k]);
            IEnumerable<Flow> Next(Flow f) => Exec(chain, rule, k + 1, f, depth);
            switch (kind)
            {
                case "match":
                    var (probability, affinity) = Match(value, flow);
                    if (affinity) flow = flow with { Affinity = true };
                    if (probability <= 0) return [flow with { End = End.None }];
                    if (probability >= 1) return Next(flow);
                    return Next(flow with { Weight = flow.Weight * probability }).Prepend(flow with { Weight = flow.Weight * (1 - probability), End = End.None });
                case "counter" or "log":
                    return Next(flow);
                case "vmap":
                    return Vmap(chain, rule, k, value, flow, depth);
                case "mangle" when value.TryGetProperty("key", out var key) && Single(key) is ("meta", var meta) && Text(meta, "key") == "mark"
                                   && Eval(value.GetProperty("value"), flow) is long mark:
                    return Next(flow.Record(chain, rule) with { Mark = mark });
                case "set":
                    // update @affinity-… { ip saddr }: the kernel learns the client; the packet goes on.
                    var learns = value.TryGetProperty("set", out var set) && set.GetString() is { } name
                        && table.Sets.TryGetValue(name.TrimStart('@'), out var s) && s.IsDynamic;
                    return Next(flow.Record(chain, rule) with { Affinity = flow.Affinity || learns });
                case "dnat" when value.TryGetProperty("addr", out var addr) && addr.ValueKind == JsonValueKind.Object && addr.TryGetProperty("map", out var dnatMap):
                    return DnatMap(chain, rule, dnatMap, flow);
                case "dnat" when Endpoint(value, flow) is { } to:
                    var dnat = flow.Record(chain, rule);
                    return [dnat with { End = End.Accept, Dnat = to.Text, Destination = to.Address, Port = to.Port, Decider = dnat.Steps[^1] }];
                case "masquerade" or "snat":
                    return [flow.Record(chain, rule) with { End = End.Accept, Masqueraded = true }];
                case "jump" or "goto" or "return" or "accept" or "drop" or "reject" or "continue":
                    var target = kind is "jump" or "goto" ? Text(value, "target") : null;
                    return Verdict(chain, rule, k, kind, target, flow.Record(chain, rule, target), depth);
                default:
                    var statement = NftJsonText.Statement(rule.Expressions[k]);
                    return Next(flow.Note(new Step(chain.Name, rule, $"skipped statement '{statement}' (not understood) in {chain.Name}: {rule.Text}", Skipped: true)));
            }
        }

        /// <summary>A verdict, from a rule or a map element: jump and goto run the chain; a jump's return goes on after the rule's expression <paramref name="k"/>.</summary>
        private IEnumerable<Flow> Verdict(ListedChain chain, ListedRule rule, int k, string kind, string? target, Flow flow, int depth)
        {
            switch (kind)
            {
                case "jump" or "goto":
                    foreach (var result in RunChain(target!, flow, depth + 1))
                    {
                        if (result.End is not (End.None or End.Return)) yield return result;
                        else if (kind == "goto") yield return result with { End = End.Return };
                        else foreach (var after in Exec(chain, rule, k + 1, result with { End = End.None }, depth)) yield return after;
                    }
                    break;
                case "return":
                    yield return flow with { End = End.Return };
                    break;
                case "accept":
                    yield return flow with { End = End.Accept };
                    break;
                case "drop":
                    yield return flow with { End = End.Drop, Decider = flow.Steps.LastOrDefault() };
                    break;
                case "reject":
                    yield return flow with { End = End.Reject, Decider = flow.Steps.LastOrDefault() };
                    break;
                default: // continue
                    foreach (var after in Exec(chain, rule, k + 1, flow, depth)) yield return after;
                    break;
            }
        }

        /// <summary>A verdict map lookup: the element whose key the packet has decides; none, and the rule does not match.</summary>
        private IEnumerable<Flow> Vmap(ListedChain chain, ListedRule rule, int k, JsonElement vmap, Flow flow, int depth)
        {
            var keyExpression = vmap.GetProperty("key");
            var data = vmap.GetProperty("data");
            string mapName;
            IReadOnlyList<ListedElement> inline = [];
            if (data.ValueKind == JsonValueKind.String) mapName = data.GetString()!.TrimStart('@');
            else
            {
                mapName = "";
                inline = data.TryGetProperty("set", out var pairs)
                    ? pairs.EnumerateArray().Where(p => p.ValueKind == JsonValueKind.Array && p.GetArrayLength() == 2)
                        .Select(p => new ListedElement(p[0], p[1], null)).ToList()
                    : [];
            }

            // numgen random mod N vmap { 0 : …, 1 : … } (kube-proxy's spread): each value is 1/N of the flow.
            List<(object Key, double Share)> keys;
            if (Single(keyExpression) is ("numgen", var numgen))
            {
                var mod = numgen.GetProperty("mod").GetInt64();
                var offset = numgen.TryGetProperty("offset", out var o) ? o.GetInt64() : 0;
                keys = [.. Enumerable.Range(0, (int)Math.Min(mod, 4096)).Select(i => ((object)(offset + i), 1.0 / mod))];
            }
            else
            {
                var key = Eval(keyExpression, flow);
                if (key is Break or Unknown) return [flow with { End = End.None }];
                keys = [(key!, 1.0)];
            }

            var results = new List<Flow>();
            var missed = 0.0;
            foreach (var (key, share) in keys)
            {
                var element = mapName.Length > 0 ? Lookup(mapName, key) : inline.FirstOrDefault(e => Equal(key, e.Key));
                if (element?.Value is not { } verdict) { missed += share; continue; }
                var (kind, v) = Single(verdict);
                var target = kind is "jump" or "goto" ? Text(v, "target") : null;
                // Kept in the steps even when nothing happens in the chain it goes to: it names the service port.
                var step = new Step(chain.Name, rule, $"{rule.Text}: {element.Text}");
                var taken = flow.Note(step) with { Weight = flow.Weight * share };
                if (mapName.Length > 0)
                {
                    taken = taken with { Element = (mapName, NftJsonText.Statement(verdict)) };
                    if (taken.Service is null && Frontend(mapName, element, target) is var (service, frontend) && service is not null)
                        taken = taken with { Service = service, Frontend = frontend };
                }
                if (kind is "jump" or "goto" or "return" or "accept" or "drop" or "reject" or "continue")
                    results.AddRange(Verdict(chain, rule, k, kind, target, taken, depth));
                else
                {
                    var skipped = new Step(chain.Name, rule, $"skipped verdict '{NftJsonText.Statement(verdict)}' (not understood) in {mapName}", Skipped: true);
                    results.Add(taken.Note(skipped) with { End = End.None });
                }
            }
            if (missed > 0) results.Insert(0, flow with { Weight = flow.Weight * missed, End = End.None });
            return results;
        }

        /// <summary>
        /// <c>dnat to KEY map @m</c> (the endpoint-slots layout: KEY is <c>numgen random mod N offset O</c>,
        /// and each element maps a range of its values to <c>address . port</c>): the flow splits over the
        /// elements by the share of N each covers; values no element holds, and a key the packet has
        /// no element for, leave the rule unmatched, as in the kernel.
        /// </summary>
        private IEnumerable<Flow> DnatMap(ListedChain chain, ListedRule rule, JsonElement map, Flow flow)
        {
            var keyExpression = map.GetProperty("key");
            var data = map.GetProperty("data");
            IReadOnlyList<ListedElement> elements;
            if (data.ValueKind == JsonValueKind.String)
                elements = table.Sets.TryGetValue(data.GetString()!.TrimStart('@'), out var set) ? set.Elements : [];
            else
                elements = data.TryGetProperty("set", out var pairs)
                    ? pairs.EnumerateArray().Where(p => p.ValueKind == JsonValueKind.Array && p.GetArrayLength() == 2)
                        .Select(p => new ListedElement(p[0], p[1], null)).ToList()
                    : [];

            List<(ListedElement Element, double Share)> picks = [];
            if (Single(keyExpression) is ("numgen", var numgen))
            {
                var mod = numgen.GetProperty("mod").GetInt64();
                // nft -j writes the offset as a signed 32-bit number, the keys unsigned.
                var low = numgen.TryGetProperty("offset", out var o) ? NftJsonText.Unsigned32(o.GetInt64()) : 0;
                var high = low + mod - 1;
                foreach (var element in elements)
                {
                    if (KeyRange(element.Key) is not var (from, to)) continue;
                    var covered = Math.Min(to, high) - Math.Max(from, low) + 1;
                    if (covered > 0) picks.Add((element, (double)covered / mod));
                }
            }
            else
            {
                var key = Eval(keyExpression, flow);
                if (key is Break or Unknown) return [flow with { End = End.None }];
                var element = data.ValueKind == JsonValueKind.String ? Lookup(data.GetString()!.TrimStart('@'), key!) : elements.FirstOrDefault(e => Equal(key!, e.Key));
                if (element is not null) picks.Add((element, 1.0));
            }

            var results = new List<Flow>();
            var missed = 1.0;
            foreach (var (element, share) in picks)
            {
                if (element.Value is not { } target || SlotEndpoint(target, flow) is not { } to) continue;
                missed -= share;
                var step = new Step(chain.Name, rule, $"{rule.Text}: {element.Text}");
                results.Add(flow.Note(step) with
                {
                    Weight = flow.Weight * share,
                    End = End.Accept,
                    Dnat = to.Text,
                    Destination = to.Address,
                    Port = to.Port,
                    Decider = step,
                });
            }
            if (missed > 1e-9) results.Insert(0, flow with { Weight = flow.Weight * missed, End = End.None });
            return results;
        }

        /// <summary>A numeric key or range of keys.</summary>
        private static (long From, long To)? KeyRange(JsonElement key)
        {
            if (key.ValueKind == JsonValueKind.Number && key.TryGetInt64(out var n)) return (n, n);
            if (key.ValueKind == JsonValueKind.Object && Single(key) is ("range", var r)
                && r[0].ValueKind == JsonValueKind.Number && r[1].ValueKind == JsonValueKind.Number)
                return (r[0].GetInt64(), r[1].GetInt64());
            return null;
        }

        /// <summary>A dnat map's value: <c>address . port</c>, or an address (the port unchanged).</summary>
        private static (IPAddress Address, int Port, string Text)? SlotEndpoint(JsonElement value, Flow flow)
        {
            var addressPart = value;
            var port = flow.Port;
            if (value.ValueKind == JsonValueKind.Object && Single(value) is ("concat", var parts) && parts.GetArrayLength() == 2)
            {
                addressPart = parts[0];
                if (parts[1].ValueKind != JsonValueKind.Number) return null;
                port = parts[1].GetInt32();
            }
            if (addressPart.ValueKind != JsonValueKind.String || !IPAddress.TryParse(addressPart.GetString(), out var address)) return null;
            var host = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
            return (address, port, string.Create(CultureInfo.InvariantCulture, $"{host}:{port}"));
        }

        /// <summary>The service port and frontend of a map element: its comment ("ns/name:port external IP"), else the map and the chain it goes to.</summary>
        private (string? Service, string? Frontend) Frontend(string map, ListedElement element, string? target)
        {
            if (element.Comment is { } comment)
                foreach (var (words, frontend) in CommentFrontends)
                    if (comment.EndsWith(" " + words, StringComparison.Ordinal))
                        return (comment[..^(words.Length + 1)], frontend);
            var service = ServiceOf(target);
            if (service is null) return (null, null);
            if (map is NftNames.ServiceNodePorts or NftNames.NoEndpointNodePorts) return (service, Frontends.NodePort);
            if (map == NftNames.FirewallIPs) return (service, Frontends.LoadBalancerIP);
            // Without a comment an external IP and a load-balancer IP look the same: both go to external-….
            return (service, target!.StartsWith(NftNames.ExternalPrefix, StringComparison.Ordinal) ? Frontends.ExternalIP : Frontends.ClusterIP);
        }

        private static readonly (string Words, string Frontend)[] CommentFrontends =
        [
            (NftablesPlanner.ClusterIPComment, Frontends.ClusterIP),
            (NftablesPlanner.ExternalIPComment, Frontends.ExternalIP),
            (NftablesPlanner.LoadBalancerIPComment, Frontends.LoadBalancerIP),
            (NftablesPlanner.NodePortComment, Frontends.NodePort),
        ];

        /// <summary>"ns/name:port" from a per-port chain name, <c>PREFIX-HASH-ns/name/protocol/port</c>.</summary>
        private static string? ServiceOf(string? chain)
        {
            if (chain is null) return null;
            var parts = chain.Split('-', 3);
            if (parts.Length < 3) return null;
            var path = parts[2].Split("__")[0].Split('/');
            return path.Length == 4 ? $"{path[0]}/{path[1]}:{path[3]}" : null;
        }

        /// <summary>The probability that a match holds (numgen splits), and whether it looked up an affinity set.</summary>
        private (double Probability, bool Affinity) Match(JsonElement match, Flow flow)
        {
            var op = match.TryGetProperty("op", out var o) ? o.GetString() : "==";
            var left = match.GetProperty("left");
            var right = match.GetProperty("right");
            var affinity = right.ValueKind == JsonValueKind.String && right.GetString()!.StartsWith('@')
                && table.Sets.TryGetValue(right.GetString()![1..], out var set) && set.IsDynamic;
            if (Single(left) is ("numgen", var numgen))
            {
                var mod = numgen.GetProperty("mod").GetInt64();
                var offset = numgen.TryGetProperty("offset", out var off) ? off.GetInt64() : 0;
                var hits = Enumerable.Range(0, (int)Math.Min(mod, 4096)).Count(i => Matches(offset + i, right));
                var p = (double)hits / mod;
                return (op == "!=" ? 1 - p : p, affinity);
            }
            var value = Eval(left, flow);
            if (value is Break) return (0, affinity);
            var equal = Matches(value, right);
            return ((op == "!=" ? !equal : equal) ? 1 : 0, affinity);
        }

        private bool Matches(object? value, JsonElement right)
        {
            if (value is Unknown or Break or null) return false;
            if (right.ValueKind == JsonValueKind.String && right.GetString()!.StartsWith('@')) return Lookup(right.GetString()![1..], value) is not null;
            return Equal(value, right);
        }

        /// <summary>The element of a set or map whose key holds <paramref name="value"/> (exact keys through an index; prefixes and ranges scanned).</summary>
        private ListedElement? Lookup(string name, object value)
        {
            if (!table.Sets.TryGetValue(name, out var set)) return null;
            if (!_index.TryGetValue(name, out var index))
            {
                index = (new Dictionary<string, ListedElement>(StringComparer.Ordinal), []);
                foreach (var element in set.Elements)
                {
                    if (Canonical(element.Key) is { } exact) index.Exact.TryAdd(exact, element);
                    else index.Others.Add(element);
                }
                _index[name] = index;
            }
            if (CanonicalValue(value) is { } canonical && index.Exact.TryGetValue(canonical, out var found)) return found;
            return index.Others.FirstOrDefault(e => Equal(value, e.Key));
        }

        /// <summary>What an expression evaluates to for this packet: an address, a number, a word, a concatenation, <see cref="Unknown"/> or <see cref="Break"/>.</summary>
        private static object? Eval(JsonElement e, Flow flow)
        {
            switch (e.ValueKind)
            {
                case JsonValueKind.Number:
                    return e.GetInt64();
                case JsonValueKind.String:
                    return e.GetString();
                case JsonValueKind.Object:
                    break;
                default:
                    return Unknown.Value;
            }
            var (kind, v) = Single(e);
            var question = flow.Question;
            var protocol = NftNames.Protocol(question.Protocol);
            switch (kind)
            {
                case "payload":
                    var header = Text(v, "protocol");
                    return Text(v, "field") switch
                    {
                        "saddr" => (object?)question.Source ?? Unknown.Value,
                        "daddr" => flow.Destination,
                        "dport" => header == "th" || header == protocol ? (long)flow.Port : Break.Value,
                        "sport" => header == "th" || header == protocol ? Unknown.Value : Break.Value,
                        _ => Unknown.Value,
                    };
                case "meta":
                    return Text(v, "key") switch
                    {
                        "l4proto" => protocol,
                        "mark" => flow.Mark,
                        // A packet the node sends has no input interface: the kernel gives "" (so `iifname != "veth*"` holds).
                        "iifname" => flow.LocalOrigin ? "" : (object?)flow.Node.InInterface ?? Unknown.Value,
                        "nfproto" => question.Family == IpFamily.IPv4 ? "ipv4" : "ipv6",
                        _ => Unknown.Value,
                    };
                case "fib":
                    var flags = v.GetProperty("flags");
                    var onSource = flags.ValueKind == JsonValueKind.Array ? flags.EnumerateArray().Any(f => f.GetString() == "saddr") : flags.GetString() == "saddr";
                    if (onSource) return question.Source is { } source && IsLocal(source, flow.Node) ? "local" : "unicast";
                    return IsLocal(flow.Destination, flow.Node) ? "local" : "unicast";
                case "ct":
                    return Text(v, "key") switch
                    {
                        "state" => "new",
                        "status" => flow.Dnat is null ? Unknown.Value : "dnat",
                        _ => Unknown.Value,
                    };
                case "concat":
                    var parts = v.EnumerateArray().Select(p => Eval(p, flow)).ToArray();
                    return parts.Any(p => p is Break) ? Break.Value : parts;
                case "&" or "|" or "^":
                    if (Eval(v[0], flow) is not long a || Eval(v[1], flow) is not long b) return Unknown.Value;
                    return kind switch { "&" => a & b, "|" => a | b, _ => a ^ b };
                default:
                    return Unknown.Value;
            }
        }

        /// <summary>A match or map key this tracer cannot evaluate, named; null when the rule is understood.</summary>
        private static string? NotUnderstood(ListedRule rule)
        {
            foreach (var e in rule.Expressions)
            {
                var (kind, v) = Single(e);
                var what = kind switch
                {
                    "match" => Understood(v.GetProperty("left")),
                    "vmap" => Single(v.GetProperty("key")) is ("numgen", _) ? null : Understood(v.GetProperty("key")),
                    _ => null,
                };
                if (what is not null) return what;
            }
            return null;
        }

        private static string? Understood(JsonElement e)
        {
            if (e.ValueKind is JsonValueKind.Number or JsonValueKind.String) return null;
            var (kind, v) = Single(e);
            return kind switch
            {
                "payload" when Text(v, "field") is "saddr" or "daddr" or "dport" or "sport" => null,
                "meta" when Text(v, "key") is "l4proto" or "mark" or "iifname" or "nfproto" => null,
                "fib" when Text(v, "result") == "type" => null,
                "ct" when Text(v, "key") is "state" or "status" => null,
                "numgen" when Text(v, "mode") == "random" => null,
                "concat" => v.EnumerateArray().Select(Understood).FirstOrDefault(w => w is not null),
                "&" or "|" or "^" => Understood(v[0]) ?? Understood(v[1]),
                _ => $"'{NftJsonText.Expression(e)}'",
            };
        }

        private static (IPAddress Address, int Port, string Text)? Endpoint(JsonElement dnat, Flow flow)
        {
            if (!dnat.TryGetProperty("addr", out var addr) || addr.ValueKind != JsonValueKind.String || !IPAddress.TryParse(addr.GetString(), out var address)) return null;
            var port = dnat.TryGetProperty("port", out var p) && p.ValueKind == JsonValueKind.Number ? p.GetInt32() : flow.Port;
            var host = address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
            return (address, port, string.Create(CultureInfo.InvariantCulture, $"{host}:{port}"));
        }

        private PacketFate Summarize(List<Flow> ends)
        {
            if (ends.Count == 0) return new PacketFate(null, null, PacketVerdict.Pass, [], false, false, TraceSteps.PassReason(null), []);
            var byVerdict = ends.GroupBy(Verdict).OrderByDescending(g => g.Sum(f => f.Weight)).ToList();
            var verdict = byVerdict[0].Key;
            var main = byVerdict[0].ToList();
            var service = ends.Select(f => f.Service).FirstOrDefault(s => s is not null);
            var frontend = ends.Select(f => f.Frontend).FirstOrDefault(s => s is not null);
            var affinity = ends.Any(f => f.Affinity);
            var source = main[0].Question.Source;
            var reached = verdict == PacketVerdict.Forward ? main.GroupBy(f => f.Dnat!).ToList() : [];
            var endpoints = reached
                .Select(g => new ReachedEndpoint(g.Key, Math.Round(g.Sum(f => f.Weight), 6), g.Any(f => f.Masqueraded)))
                .OrderBy(e => e.Endpoint, StringComparer.Ordinal).ToList();
            // A pod reaching itself through the service (hairpin) is always masqueraded; that alone does not make the flow masqueraded.
            var masquerade = reached.Any(g => g.Any(f => f.Masqueraded) && !g.First().Destination.Equals(source));
            var local = main.Any(f => f.Chains.Any(c => c.StartsWith(NftNames.LocalPolicyPrefix, StringComparison.Ordinal)));
            var reason = verdict switch
            {
                PacketVerdict.Forward => TraceSteps.ForwardReason(endpoints.Count, local, masquerade, affinity),
                PacketVerdict.Reject or PacketVerdict.Drop => Why(main[0]),
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

        private static string Why(Flow flow)
        {
            if (flow.Decider is not { } decider) return $"{flow.End.ToString().ToLowerInvariant()}ped";
            if (decider.Rule is null) return $"{decider.Chain}: policy drop";
            if (decider.Chain.StartsWith(NftNames.FirewallPrefix, StringComparison.Ordinal)) return "source outside loadBalancerSourceRanges";
            if (flow.Element is { } element && element.Map.StartsWith("no-endpoint-", StringComparison.Ordinal))
            {
                var value = element.Value;
                if (value == "drop") return "traffic policy Local, and no endpoint on this node";
                if (value == $"goto {NftNames.RejectChain}") return "no endpoints";
            }
            return $"{flow.End.ToString().ToLowerInvariant()} by {decider}";
        }

        /// <summary>The steps every outcome met, then the one that set each endpoint apart; a rule not understood on any branch is named too.</summary>
        private static List<string> Steps(List<Flow> flows)
        {
            var steps = TraceSteps.CommonPrefix(flows.Select(f => (IReadOnlyList<Step>)Pruned(f.Steps)).ToList()).Select(s => s.ToString()).ToList();
            if (flows.Count > 1)
                foreach (var branch in flows.Where(f => f.Decider is not null).GroupBy(f => f.Dnat))
                    steps.Add(string.Create(CultureInfo.InvariantCulture, $"{branch.Sum(f => f.Weight) * 100:F1}%: {branch.First().Decider}"));
            steps.AddRange(flows.SelectMany(f => f.Steps).Where(s => s.Skipped).Select(s => s.ToString()).Distinct().Except(steps));
            return steps;
        }

        /// <summary>Leaves out a jump into a chain in which nothing then happened (<c>ct state new jump firewall-check</c> on most packets): it decided nothing.</summary>
        private static List<Step> Pruned(IReadOnlyList<Step> steps)
        {
            var kept = new List<Step>();
            for (var i = 0; i < steps.Count; i++)
            {
                var step = steps[i];
                if (step.Jump is { } target && !step.Skipped && (i + 1 >= steps.Count || steps[i + 1].Chain != target)) continue;
                kept.Add(step);
            }
            return kept;
        }
    }

    private static bool IsLocal(IPAddress address, TraceNode node) => node.LocalAddresses.Contains(address) || IPAddress.IsLoopback(address);

    private static (string Kind, JsonElement Value) Single(JsonElement e)
    {
        if (e.ValueKind == JsonValueKind.Object)
            foreach (var property in e.EnumerateObject()) return (property.Name, property.Value);
        return ("", e);
    }

    private static string? Text(JsonElement o, string property) =>
        o.ValueKind == JsonValueKind.Object && o.TryGetProperty(property, out var value)
            ? value.ValueKind == JsonValueKind.String ? value.GetString() : value.GetRawText()
            : null;

    /// <summary>Whether a value the packet has equals (or falls in) a literal: an address, prefix, range, number, word, wildcard, concatenation or set.</summary>
    private static bool Equal(object value, JsonElement literal)
    {
        switch (literal.ValueKind)
        {
            case JsonValueKind.Array:
                return literal.EnumerateArray().Any(l => Equal(value, l));
            case JsonValueKind.Number:
                return value switch
                {
                    long n => literal.TryGetInt64(out var m) && n == m,
                    string s => ProtocolNumber(s) is { } p && literal.TryGetInt64(out var m) && p == m,
                    _ => false,
                };
            case JsonValueKind.String:
                var text = literal.GetString()!;
                return value switch
                {
                    IPAddress address => IPAddress.TryParse(text, out var other) && address.Equals(other),
                    long n => ParseNumber(text) is { } m && n == m,
                    string s => text.EndsWith('*') ? s.StartsWith(text[..^1], StringComparison.Ordinal) : s == text,
                    _ => false,
                };
            case JsonValueKind.Object:
                var (kind, v) = Single(literal);
                switch (kind)
                {
                    case "elem":
                        return v.TryGetProperty("val", out var val) && Equal(value, val);
                    case "prefix":
                        return value is IPAddress a && IpPrefix.TryParse($"{Text(v, "addr")}/{Text(v, "len")}", out var prefix)
                            && prefix.Address.AddressFamily == a.AddressFamily && prefix.Contains(a);
                    case "range":
                        return InRange(value, v[0], v[1]);
                    case "set":
                        return v.EnumerateArray().Any(l => Equal(value, l.ValueKind == JsonValueKind.Array ? l[0] : l));
                    case "concat":
                        var parts = v.EnumerateArray().ToList();
                        return value is object?[] values && values.Length == parts.Count && values.Zip(parts).All(x => x.First is not null && Equal(x.First, x.Second));
                }
                return false;
            default:
                return false;
        }
    }

    private static bool InRange(object value, JsonElement low, JsonElement high)
    {
        if (value is long n) return ParseNumber(Canonical(low)) is { } a && ParseNumber(Canonical(high)) is { } b && n >= a && n <= b;
        if (value is IPAddress address && IPAddress.TryParse(Canonical(low), out var from) && IPAddress.TryParse(Canonical(high), out var to))
        {
            var bytes = address.GetAddressBytes();
            return bytes.Length == from.GetAddressBytes().Length
                && ((ReadOnlySpan<byte>)bytes).SequenceCompareTo(from.GetAddressBytes()) >= 0
                && ((ReadOnlySpan<byte>)bytes).SequenceCompareTo(to.GetAddressBytes()) <= 0;
        }
        return false;
    }

    /// <summary>A key literal as one comparable string ("10.96.0.10|tcp|80"); null for a prefix, a range or anything not exact.</summary>
    private static string? Canonical(JsonElement e) => e.ValueKind switch
    {
        JsonValueKind.Number => e.GetRawText(),
        JsonValueKind.String => IPAddress.TryParse(e.GetString(), out var address) ? address.ToString() : e.GetString()!.EndsWith('*') ? null : e.GetString(),
        JsonValueKind.Object when Single(e) is ("concat", var parts) => Join(parts.EnumerateArray().Select(Canonical).ToList()),
        JsonValueKind.Object when Single(e) is ("elem", var v) && v.TryGetProperty("val", out var val) => Canonical(val),
        _ => null,
    };

    private static string? CanonicalValue(object value) => value switch
    {
        IPAddress address => address.ToString(),
        long n => n.ToString(CultureInfo.InvariantCulture),
        string s => s,
        object?[] parts => Join(parts.Select(p => p is null ? null : CanonicalValue(p)).ToList()),
        _ => null,
    };

    private static string? Join(List<string?> parts) => parts.Any(p => p is null) ? null : string.Join("|", parts);

    private static long? ParseNumber(string? text) =>
        text is null ? null
        : text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) && long.TryParse(text[2..], NumberStyles.HexNumber, CultureInfo.InvariantCulture, out var hex) ? hex
        : long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n
        : null;

    private static long? ProtocolNumber(string name) => name switch { "tcp" => 6, "udp" => 17, "sctp" => 132, _ => null };
}
