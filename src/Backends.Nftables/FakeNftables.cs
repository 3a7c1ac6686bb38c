using System.Collections.Immutable;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// An in-memory nftables, checking transactions the way the kernel would (and knftables' fake
/// does): a transaction is applied to a copy and kept only if every operation succeeds, so it is
/// atomic. Refused: operations on a missing table, chain, set or map; rules that jump to a
/// missing chain (or to a base chain) or use a missing set; elements of a missing set, with the
/// wrong number of key parts, with or without a value where the set is (not) a map, pointing to
/// a missing chain, or overlapping another interval; an element added again with another value;
/// deleting a chain or set still referenced; the same object added twice in one transaction;
/// redefining an object's type. For tests, benchmarks without root, and a dry run of the planner.
/// </summary>
public sealed class FakeNftables : INftablesApplier
{
    private Dictionary<(IpFamily Family, string Name), Table> _tables = [];
    private readonly Lock _gate = new();

    /// <summary>Transactions applied successfully.</summary>
    public int Applied { get; private set; }

    /// <summary>Every transaction offered, applied or not (the last is the most recent).</summary>
    public List<NftTransaction> Offered { get; } = [];

    /// <summary>When set, called before each transaction; an exception it returns fails that transaction (fault injection).</summary>
    public Func<NftTransaction, Exception?>? FailWhen { get; set; }

    public Task<NftKernelState> ReadAsync(IpFamily family, string table, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (!_tables.TryGetValue((family, table), out var t)) return Task.FromResult(NftKernelState.Empty);
            return Task.FromResult(new NftKernelState(
                true,
                t.Chains.Values.ToImmutableDictionary(c => c.Definition.Name, c => c.Definition with { Comment = null }, StringComparer.Ordinal),
                t.Sets.Values.Where(s => s.Definition is NftSet).ToImmutableDictionary(s => s.Name, s => ((NftSet)s.Definition) with { Comment = null }, StringComparer.Ordinal),
                t.Sets.Values.Where(s => s.Definition is NftMap).ToImmutableDictionary(s => s.Name, s => ((NftMap)s.Definition) with { Comment = null }, StringComparer.Ordinal)));
        }
    }

    public Task ApplyAsync(NftTransaction transaction, CancellationToken cancellationToken)
    {
        Apply(transaction);
        return Task.CompletedTask;
    }

    /// <summary>Applies the transaction atomically, or throws <see cref="NftException"/> naming the first bad operation.</summary>
    public void Apply(NftTransaction transaction)
    {
        lock (_gate)
        {
            Offered.Add(transaction);
            if (FailWhen?.Invoke(transaction) is { } injected) throw new NftException($"injected failure: {injected.Message}", injected);
            var tables = _tables.ToDictionary(kv => kv.Key, kv => kv.Value.Clone());
            var run = new Run(tables, (transaction.Family, transaction.Table));
            for (var i = 0; i < transaction.Operations.Count; i++)
            {
                var (verb, obj) = transaction.Operations[i];
                try
                {
                    run.Apply(verb, obj);
                }
                catch (NftException e)
                {
                    throw new NftException($"operation {i + 1} ({verb.ToString().ToLowerInvariant()} {obj.Kind} {Describe(obj)}): {e.Message}", e);
                }
            }
            _tables = tables;
            Applied++;
        }
    }

    public Task<int> CountRulesAsync(IpFamily family, string table, string chain, CancellationToken cancellationToken)
    {
        lock (_gate)
            return Task.FromResult(_tables.TryGetValue((family, table), out var t) && t.Chains.TryGetValue(chain, out var c) ? c.Rules.Count : 0);
    }

    /// <summary>Whether the table exists.</summary>
    public bool HasTable(IpFamily family, string table = NftNames.Table)
    {
        lock (_gate) return _tables.ContainsKey((family, table));
    }

    /// <summary>How many chains, rules, sets (maps included) and elements the table holds.</summary>
    public (int Chains, int Rules, int Sets, int Elements) Count(IpFamily family, string table = NftNames.Table)
    {
        lock (_gate)
        {
            if (!_tables.TryGetValue((family, table), out var t)) return default;
            return (t.Chains.Count, t.Chains.Values.Sum(c => c.Rules.Count), t.Sets.Count, t.Sets.Values.Sum(s => s.Elements.Count));
        }
    }

    /// <summary>The rules of a chain, in order (empty when it does not exist).</summary>
    public IReadOnlyList<string> Rules(IpFamily family, string chain, string table = NftNames.Table)
    {
        lock (_gate)
            return _tables.TryGetValue((family, table), out var t) && t.Chains.TryGetValue(chain, out var c) ? c.Rules.Select(r => r.Text).ToList() : [];
    }

    /// <summary>The elements of a set or map as nft writes them ("key : value"), sorted.</summary>
    public IReadOnlyList<string> Elements(IpFamily family, string set, string table = NftNames.Table)
    {
        lock (_gate)
            return _tables.TryGetValue((family, table), out var t) && t.Sets.TryGetValue(set, out var s) ? s.Elements.Values.Select(e => e.ToString()).ToList() : [];
    }

    /// <summary>
    /// The whole model of one table as canonical text (objects sorted by name, rules in order,
    /// elements sorted), for comparing two ways of reaching the same state.
    /// </summary>
    public string Dump(IpFamily family, string table = NftNames.Table)
    {
        lock (_gate)
        {
            if (!_tables.TryGetValue((family, table), out var t)) return "";
            var text = new StringBuilder();
            text.Append("table ").Append(Nft.FamilyKeyword(family)).Append(' ').Append(table).Append('\n');
            foreach (var chain in t.Chains.Values.OrderBy(c => c.Definition.Name, StringComparer.Ordinal))
            {
                text.Append("chain ").Append(chain.Definition.Name);
                if (chain.Definition.Base is { } b) text.Append(" { ").Append(b).Append(" }");
                text.Append('\n');
                foreach (var rule in chain.Rules) text.Append('\t').Append(rule.Text).Append('\n');
            }
            foreach (var set in t.Sets.Values.OrderBy(s => s.Name, StringComparer.Ordinal))
            {
                switch (set.Definition)
                {
                    case NftSet s:
                        text.Append("set ").Append(s.Name).Append(" { type ").Append(string.Join(" . ", s.Type));
                        if (!s.Flags.IsEmpty) text.Append(" flags ").Append(string.Join(",", s.Flags.Order(StringComparer.Ordinal)));
                        if (s.TimeoutSeconds is { } timeout) text.Append(" timeout ").Append(timeout).Append('s');
                        break;
                    case NftMap m:
                        text.Append("map ").Append(m.Name).Append(" { type ").Append(string.Join(" . ", m.Type)).Append(" : ").Append(m.ValueType);
                        break;
                }
                text.Append(" }\n");
                foreach (var element in set.Elements.Values) text.Append('\t').Append(element).Append('\n');
            }
            return text.ToString();
        }
    }

    private static string Describe(NftObject obj) => obj switch
    {
        NftChain c => c.Name,
        NftRule r => $"{r.Chain}: {r.Text}",
        NftSet s => s.Name,
        NftMap m => m.Name,
        NftElement e => $"{e.Set} {{ {e} }}",
        _ => "",
    };

    private sealed class Chain(NftChain definition)
    {
        public NftChain Definition { get; set; } = definition;
        public List<NftRule> Rules { get; } = [];
        public Chain Clone()
        {
            var copy = new Chain(Definition);
            copy.Rules.AddRange(Rules);
            return copy;
        }
    }

    /// <summary>A set or a map (they share one namespace in the kernel).</summary>
    private sealed class Set(NftObject definition)
    {
        public NftObject Definition { get; set; } = definition;
        public string Name => Definition is NftSet s ? s.Name : ((NftMap)Definition).Name;
        public bool IsMap => Definition is NftMap;
        public int Arity => Definition is NftSet s ? s.Type.Count : ((NftMap)Definition).Type.Count;
        public bool IsInterval => (Definition is NftSet s ? s.Flags : ((NftMap)Definition).Flags).Contains("interval");
        public SortedDictionary<string, NftElement> Elements { get; } = new(StringComparer.Ordinal);
        public Set Clone()
        {
            var copy = new Set(Definition);
            foreach (var (k, v) in Elements) copy.Elements[k] = v;
            return copy;
        }
    }

    private sealed class Table
    {
        public Dictionary<string, Chain> Chains { get; } = new(StringComparer.Ordinal);
        public Dictionary<string, Set> Sets { get; } = new(StringComparer.Ordinal);
        public Table Clone()
        {
            var copy = new Table();
            foreach (var (k, v) in Chains) copy.Chains[k] = v.Clone();
            foreach (var (k, v) in Sets) copy.Sets[k] = v.Clone();
            return copy;
        }
    }

    /// <summary>One transaction being applied to a copy of the tables.</summary>
    private sealed class Run(Dictionary<(IpFamily, string), Table> tables, (IpFamily Family, string Name) tableKey)
    {
        private readonly HashSet<string> _added = new(StringComparer.Ordinal);

        private Table Table => tables.TryGetValue(tableKey, out var t) ? t : throw new NftException($"No such file or directory: table {Nft.FamilyKeyword(tableKey.Family)} {tableKey.Name} does not exist");

        public void Apply(NftVerb verb, NftObject obj)
        {
            switch (obj)
            {
                case NftTable:
                    ApplyTable(verb);
                    break;
                case NftChain chain:
                    ApplyChain(verb, chain);
                    break;
                case NftRule rule:
                    AddRule(rule);
                    break;
                case NftSet or NftMap:
                    ApplySet(verb, obj);
                    break;
                case NftElement element:
                    ApplyElement(verb, element);
                    break;
            }
        }

        private void ApplyTable(NftVerb verb)
        {
            switch (verb)
            {
                case NftVerb.Add:
                    tables.TryAdd(tableKey, new Table());
                    break;
                case NftVerb.Flush:
                    foreach (var c in Table.Chains.Values) c.Rules.Clear();
                    break;
                case NftVerb.Delete:
                    _ = Table;
                    tables.Remove(tableKey);
                    break;
            }
        }

        private void Once(string what)
        {
            if (!_added.Add(what)) throw new NftException($"{what} is added twice in one transaction");
        }

        private void ApplyChain(NftVerb verb, NftChain chain)
        {
            var table = Table;
            table.Chains.TryGetValue(chain.Name, out var existing);
            switch (verb)
            {
                case NftVerb.Add:
                    Once($"chain {chain.Name}");
                    if (existing is null) table.Chains[chain.Name] = new Chain(chain);
                    else if (existing.Definition.Base != chain.Base)
                        throw new NftException($"Operation not supported: chain {chain.Name} exists as {existing.Definition.Base?.ToString() ?? "a regular chain"}");
                    break;
                case NftVerb.Flush:
                    (existing ?? throw Missing("chain", chain.Name)).Rules.Clear();
                    break;
                case NftVerb.Delete:
                    if (existing is null) throw Missing("chain", chain.Name);
                    foreach (var other in table.Chains.Values.Where(c => c != existing))
                        if (other.Rules.Any(r => r.ChainReferences.Contains(chain.Name)))
                            throw new NftException($"Device or resource busy: chain {chain.Name} is still used by a rule in {other.Definition.Name}");
                    foreach (var set in table.Sets.Values)
                        if (set.Elements.Values.Any(e => e.ChainReference == chain.Name))
                            throw new NftException($"Device or resource busy: chain {chain.Name} is still used by an element of {set.Name}");
                    table.Chains.Remove(chain.Name);
                    break;
            }
        }

        private void AddRule(NftRule rule)
        {
            var table = Table;
            if (!table.Chains.TryGetValue(rule.Chain, out var chain)) throw Missing("chain", rule.Chain);
            foreach (var target in rule.ChainReferences)
            {
                if (!table.Chains.TryGetValue(target, out var t)) throw Missing("chain", target);
                if (t.Definition.Base is not null) throw new NftException($"Operation not supported: cannot jump to base chain {target}");
            }
            foreach (var set in rule.SetReferences)
                if (!table.Sets.ContainsKey(set)) throw Missing("set", set);
            chain.Rules.Add(rule);
        }

        private void ApplySet(NftVerb verb, NftObject definition)
        {
            var table = Table;
            var name = definition is NftSet s ? s.Name : ((NftMap)definition).Name;
            var kind = definition.Kind;
            table.Sets.TryGetValue(name, out var existing);
            if (existing is not null && existing.Definition.Kind != kind)
                throw new NftException($"{name} is a {existing.Definition.Kind}, not a {kind}");
            switch (verb)
            {
                case NftVerb.Add:
                    Once($"{kind} {name}");
                    if (existing is null)
                    {
                        table.Sets[name] = new Set(definition);
                        break;
                    }
                    var same = (existing.Definition, definition) switch
                    {
                        // The kernel updates a set's timeout in place; its type and flags cannot change.
                        (NftSet a, NftSet b) => a.Type.Equals(b.Type) && a.Flags.Order(StringComparer.Ordinal).SequenceEqual(b.Flags.Order(StringComparer.Ordinal)),
                        (NftMap a, NftMap b) => a.SameDefinition(b),
                        _ => false,
                    };
                    if (!same) throw new NftException($"File exists: {kind} {name} exists with another type or flags");
                    existing.Definition = definition;
                    break;
                case NftVerb.Flush:
                    (existing ?? throw Missing(kind, name)).Elements.Clear();
                    break;
                case NftVerb.Delete:
                    if (existing is null) throw Missing(kind, name);
                    foreach (var chain in table.Chains.Values)
                        if (chain.Rules.Any(r => r.SetReferences.Contains(name)))
                            throw new NftException($"Device or resource busy: {kind} {name} is still used by a rule in {chain.Definition.Name}");
                    table.Sets.Remove(name);
                    break;
            }
        }

        private void ApplyElement(NftVerb verb, NftElement element)
        {
            var table = Table;
            if (!table.Sets.TryGetValue(element.Set, out var set)) throw Missing("set", element.Set);
            var key = element.KeyText;
            if (verb == NftVerb.Delete)
            {
                if (!set.Elements.Remove(key)) throw new NftException($"No such file or directory: no element {key} in {element.Set}");
                return;
            }
            if (verb != NftVerb.Add) throw new NftException("elements are added or deleted");
            Once($"element {element.Set} {{ {key} }}");
            if (element.Key.Count != set.Arity) throw new NftException($"{element.Set} takes keys of {set.Arity} part(s), got {key}");
            if (set.IsMap != element.Value is not null) throw new NftException(set.IsMap ? $"map {element.Set} needs a value for {key}" : $"set {element.Set} takes no value for {key}");
            if (element.ChainReference is { } target)
            {
                if (!table.Chains.TryGetValue(target, out var t)) throw Missing("chain", target);
                if (t.Definition.Base is not null) throw new NftException($"Operation not supported: cannot jump to base chain {target}");
            }
            if (set.Elements.TryGetValue(key, out var existing))
            {
                if (existing.Value != element.Value) throw new NftException($"File exists: {element.Set} already maps {key} to {existing.Value}");
                return;
            }
            if (set.IsInterval && IpPrefix.TryParse(key, out var prefix))
                foreach (var other in set.Elements.Keys)
                    if (IpPrefix.TryParse(other, out var o) && (o.Contains(prefix.Address) || prefix.Contains(o.Address)))
                        throw new NftException($"conflicting intervals specified: {key} and {other} in {element.Set}");
            if (set.IsInterval && NumberRange(key) is var (low, high))
                foreach (var other in set.Elements.Keys)
                    if (NumberRange(other) is var (otherLow, otherHigh) && low <= otherHigh && otherLow <= high)
                        throw new NftException($"conflicting intervals specified: {key} and {other} in {element.Set}");
            set.Elements[key] = element;
        }

        /// <summary>A number or a range of numbers ("4096-6143") as an interval key; null for anything else.</summary>
        private static (long Low, long High)? NumberRange(string key)
        {
            var dash = key.IndexOf('-');
            var (lowText, highText) = dash < 0 ? (key, key) : (key[..dash], key[(dash + 1)..]);
            return long.TryParse(lowText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var low)
                && long.TryParse(highText, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var high)
                && low <= high ? (low, high) : null;
        }

        private static NftException Missing(string kind, string name) => new($"No such file or directory: {kind} {name} does not exist");
    }
}
