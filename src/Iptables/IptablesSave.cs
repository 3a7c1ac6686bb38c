using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Iptables;

/// <summary>What a data plane knows of the kernel before a full sync: the chains found in nat and filter, and the rules of their built-in chains.</summary>
public sealed record KernelTables(IReadOnlySet<string> NatChains, IReadOnlySet<string> FilterChains, IReadOnlySet<string> NatRules, IReadOnlySet<string> FilterRules)
{
    /// <summary>Per table ("nat", "filter"), the digest of every chain's rules, when the reader was asked for them (<see cref="RestoreDiff"/>).</summary>
    public IReadOnlyDictionary<string, ChainDigests>? Digests { get; init; }

    public static KernelTables Empty { get; } = new(new HashSet<string>(), new HashSet<string>(), new HashSet<string>(), new HashSet<string>());
}

/// <summary>One table as iptables-save prints it: each chain's policy ("-" for a user chain) and rules in order.</summary>
public sealed record SavedTable(string Name, IReadOnlyDictionary<string, string> Policies, IReadOnlyDictionary<string, IReadOnlyList<string>> Rules);

/// <summary>Reads iptables-save output: chain names, the rules of built-in chains, or whole tables.</summary>
public static class IptablesSave
{
    /// <summary>The built-in chains of every table.</summary>
    public static readonly IReadOnlySet<string> BuiltInChains = new HashSet<string>(["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"], StringComparer.Ordinal);

    private static readonly HashSet<string>.AlternateLookup<ReadOnlySpan<char>> BuiltInChainOf =
        ((HashSet<string>)BuiltInChains).GetAlternateLookup<ReadOnlySpan<char>>();

    public static KernelTables Parse(string natSave, string filterSave) => Kernel(ParseTable(natSave), ParseTable(filterSave));

    /// <summary>The kernel's tables from the nat and filter tables each read with <see cref="ParseTable"/> or <see cref="ReadTableAsync"/>.</summary>
    public static KernelTables Kernel((HashSet<string> Chains, List<string> BuiltInRules) nat, (HashSet<string> Chains, List<string> BuiltInRules) filter) =>
        new(nat.Chains, filter.Chains, nat.BuiltInRules.ToHashSet(StringComparer.Ordinal), filter.BuiltInRules.ToHashSet(StringComparer.Ordinal));

    /// <summary>
    /// Chains declared in one table's save, and the "-A BUILTIN ..." rule lines (a rule present twice is
    /// listed twice). Walks the lines as spans: at 10,000 services the nat save is ~110,000 lines, of
    /// which only the chain names and the built-in chains' rules are kept.
    /// </summary>
    public static (HashSet<string> Chains, List<string> BuiltInRules) ParseTable(string save, ChainDigests? digests = null)
    {
        var reader = new TableReader(digests);
        OutputLines.ForEach(save, reader.Line);
        return (reader.Chains, reader.BuiltInRules);
    }

    /// <summary>
    /// <see cref="ParseTable"/> of one table read from the tool as it prints it, line by line: the save is never one
    /// string. A failing tool throws its <see cref="NodeTools.CommandException"/>, and nothing read is kept.
    /// With <paramref name="digests"/>, every chain's rules are also fingerprinted into it as they pass.
    /// </summary>
    public static async Task<(HashSet<string> Chains, List<string> BuiltInRules)> ReadTableAsync(IIptablesApplier applier, string table, CancellationToken cancellationToken, ChainDigests? digests = null)
    {
        var reader = new TableReader(digests);
        await applier.SaveAsync(table, reader.Line, cancellationToken).ConfigureAwait(false);
        return (reader.Chains, reader.BuiltInRules);
    }

    /// <summary>Gathers the chain names and built-in chains' rules of one table's save, a line at a time.</summary>
    private sealed class TableReader(ChainDigests? digests)
    {
        public HashSet<string> Chains { get; } = new(StringComparer.Ordinal);

        private HashSet<string>.AlternateLookup<ReadOnlySpan<char>> ChainOf => Chains.GetAlternateLookup<ReadOnlySpan<char>>();

        public List<string> BuiltInRules { get; } = [];

        public void Line(ReadOnlySpan<char> raw)
        {
            var line = raw.TrimEnd('\r');
            if (line.StartsWith(':'))
            {
                // One string per chain, shared by the set of chains and the digests.
                var declared = ChainDigests.DeclaredChain(line);
                if (!ChainOf.TryGetValue(declared, out var chain))
                {
                    chain = declared.ToString();
                    Chains.Add(chain);
                }
                digests?.Declare(chain);
            }
            else if (ChainDigests.RuleOf(line, out var chain, out var rule))
            {
                if (chain.Length < line.Length - 3 && BuiltInChainOf.Contains(chain)) BuiltInRules.Add(line.ToString());
                digests?.Rule(chain, rule);
            }
        }
    }

    /// <summary>
    /// Every table of a save (one or several "*table ... COMMIT" blocks), with every chain and rule.
    /// Comment lines ("# Generated by ...") and counters are left out; a rule is the text after "-A CHAIN ".
    /// </summary>
    public static IReadOnlyList<SavedTable> ParseTables(string save)
    {
        var tables = new List<SavedTable>();
        string? name = null;
        Dictionary<string, string> policies = [];
        Dictionary<string, List<string>> rules = [];
        foreach (var raw in save.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.Length == 0 || line.StartsWith('#')) continue;
            if (line.StartsWith('*'))
            {
                name = line[1..];
                policies = new Dictionary<string, string>(StringComparer.Ordinal);
                rules = new Dictionary<string, List<string>>(StringComparer.Ordinal);
            }
            else if (name is null) throw new FormatException($"not inside a table: {line}");
            else if (line == "COMMIT")
            {
                tables.Add(new SavedTable(name, policies, rules.ToDictionary(r => r.Key, r => (IReadOnlyList<string>)r.Value, StringComparer.Ordinal)));
                name = null;
            }
            else if (line.StartsWith(':'))
            {
                var words = line[1..].Split(' ');
                policies[words[0]] = words.Length > 1 ? words[1] : "-";
                rules.TryAdd(words[0], []);
            }
            else if (line.StartsWith("-A ", StringComparison.Ordinal))
            {
                var end = line.IndexOf(' ', 3);
                var chain = end < 0 ? line[3..] : line[3..end];
                if (!rules.TryGetValue(chain, out var list)) throw new FormatException($"rule of an undeclared chain: {line}");
                list.Add(end < 0 ? "" : line[(end + 1)..]);
            }
            else throw new FormatException($"not a line of iptables-save: {line}");
        }
        if (name is not null) throw new FormatException($"table {name} has no COMMIT");
        return tables;
    }
}
