using System.Text;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Iptables;

/// <summary>
/// An in-memory iptables of one IP family that takes iptables-restore scripts and refuses what
/// the kernel and the tools refuse (checked against the real iptables-restore by
/// FakeIptablesKernelTests): a rule in a chain that does not exist; a jump (<c>-j</c>/<c>-g</c>)
/// to a name that is neither a chain of the table nor a target valid in that table (DNAT, SNAT,
/// MASQUERADE only in nat; REJECT only in filter); deleting a rule that is not there, a built-in
/// chain, a chain still referenced or not empty; creating a chain that exists (<c>-N</c>) or
/// whose name is longer than 28 characters; a table that does not exist; a script with no
/// COMMIT. Each table commits at its COMMIT, all or nothing: a refused line leaves that table
/// as it was, and the tables committed before it stay, as with the real tool.
/// With --noflush (what every data plane uses) a declared user chain is created or flushed and
/// a declared built-in chain keeps its rules; without it, each table in the script starts empty.
/// Not modelled: matches (rule text is opaque: a rule is deleted only by the same text it was
/// added with, where the kernel compares parsed rules) and which hooks may reach a target.
/// <see cref="Save"/> prints iptables-save's format, which <see cref="IptablesSave"/> reads back.
/// </summary>
public sealed class FakeIptables(IpFamily family = IpFamily.IPv4, IptablesVariant variant = IptablesVariant.Nft) : IIptablesApplier
{
    /// <summary>The longest chain name iptables takes (XT_EXTENSION_MAXNAMELEN - 1).</summary>
    public const int MaxChainName = 28;

    private static readonly Dictionary<string, string[]> BuiltIn = new(StringComparer.Ordinal)
    {
        ["filter"] = ["INPUT", "FORWARD", "OUTPUT"],
        ["nat"] = ["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        ["mangle"] = ["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        ["raw"] = ["PREROUTING", "OUTPUT"],
    };

    private static readonly HashSet<string> AnyTableTargets = ["ACCEPT", "DROP", "RETURN", "LOG", "MARK", "CONNMARK", "NFLOG"];
    private static readonly Dictionary<string, string> TableTargets = new(StringComparer.Ordinal)
    {
        ["DNAT"] = "nat",
        ["SNAT"] = "nat",
        ["MASQUERADE"] = "nat",
        ["REDIRECT"] = "nat",
        ["REJECT"] = "filter",
    };

    private readonly Lock _gate = new();
    private readonly Dictionary<string, Table> _tables = BuiltIn.ToDictionary(t => t.Key, t => Table.Empty(t.Value), StringComparer.Ordinal);

    public IptablesVariant Variant => variant;

    public IpFamily Family => family;

    /// <summary>The tool a real node would run ("iptables-restore" or "ip6tables-restore"), for error messages.</summary>
    private string Tool => IptablesTools.Base(family) + "-restore";

    /// <summary>Scripts restored successfully.</summary>
    public int Applied { get; private set; }

    /// <summary>Every script offered, restored or not (the last is the most recent).</summary>
    public List<string> Offered { get; } = [];

    /// <summary>When set, called before each restore; an exception it returns fails that restore before any table changes (fault injection).</summary>
    public Func<string, Exception?>? FailWhen { get; set; }

    /// <summary>
    /// Extra checks of a rule as it is added (table, chain, rule text): an error message refuses the
    /// line. The IPVS mode's fake kernel checks here that every ipset a rule matches exists.
    /// </summary>
    public Func<string, string, string, string?>? CheckRule { get; set; }

    public Task<string> SaveAsync(string table, CancellationToken cancellationToken) => Task.FromResult(Save(table));

    public Task RestoreAsync(string script, CancellationToken cancellationToken)
    {
        Restore(script);
        return Task.CompletedTask;
    }

    public Task<string?> ListChainAsync(string table, string chain, CancellationToken cancellationToken)
    {
        lock (_gate)
        {
            if (!_tables.TryGetValue(table, out var t)) throw new CommandException($"{IptablesTools.Base(family)}: table '{table}' does not exist");
            if (!t.Chains.TryGetValue(chain, out var found)) return Task.FromResult<string?>(null);
            var text = new StringBuilder(found.IsBuiltIn ? $"-P {chain} {found.Policy}\n" : $"-N {chain}\n");
            foreach (var rule in found.Rules) text.Append($"-A {chain} {rule}\n");
            return Task.FromResult<string?>(text.ToString());
        }
    }

    /// <summary>One table in iptables-save's format: built-in chains in the kernel's order, then user chains sorted; counters zero.</summary>
    public string Save(string table)
    {
        lock (_gate)
        {
            if (!_tables.TryGetValue(table, out var t)) throw new CommandException($"{IptablesTools.Base(family)}-save: table '{table}' does not exist");
            return t.Save(table);
        }
    }

    /// <summary>nat then filter (the tables the data planes use), as one text: two fakes holding the same rules dump the same text.</summary>
    public string Dump()
    {
        lock (_gate) return _tables["nat"].Save("nat") + _tables["filter"].Save("filter");
    }

    /// <summary>
    /// Runs an iptables-restore script (by default as <c>--noflush</c>); throws <see cref="CommandException"/>
    /// naming the first refused line, after committing the tables whose COMMIT came before it.
    /// </summary>
    public void Restore(string script, bool noflush = true)
    {
        lock (_gate)
        {
            Offered.Add(script);
            if (FailWhen?.Invoke(script) is { } injected) throw new CommandException($"{Tool}: injected failure: {injected.Message}", null, injected);
            string? tableName = null;
            Dictionary<string, Chain>? chains = null;
            var lines = script.Split('\n');
            for (var i = 0; i < lines.Length; i++)
            {
                var line = lines[i].TrimEnd('\r');
                var trimmed = line.Trim();
                if (trimmed.Length == 0 || trimmed.StartsWith('#')) continue;
                CommandException Refused(string message) => new($"{Tool}: line {i + 1} failed: {message}: {line}");
                if (trimmed.StartsWith('*'))
                {
                    if (tableName is not null) throw Refused($"table {tableName} has no COMMIT before the next table");
                    tableName = trimmed[1..];
                    if (!_tables.TryGetValue(tableName, out var current)) throw Refused($"can't initialize {IptablesTools.Base(family)} table '{tableName}': Table does not exist");
                    chains = noflush ? current.Copy() : Table.Empty(BuiltIn[tableName]).Chains;
                    continue;
                }
                if (tableName is null || chains is null) throw Refused("no table given (a line before *table)");
                if (trimmed == "COMMIT")
                {
                    _tables[tableName] = new Table(chains);
                    tableName = null;
                    chains = null;
                    continue;
                }
                var error = Apply(tableName, chains, trimmed);
                if (error is not null) throw Refused(error);
            }
            if (tableName is not null) throw new CommandException($"{Tool}: COMMIT expected at line {lines.Length + 1} (table {tableName} is left as it was)");
            Applied++;
        }
    }

    /// <summary>Applies one line to the table being built; returns why it is refused, or null.</summary>
    private string? Apply(string table, Dictionary<string, Chain> chains, string line)
    {
        if (line.StartsWith(':'))
        {
            var words = line[1..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var name = words[0];
            var policy = words.Length > 1 ? words[1] : "-";
            if (chains.TryGetValue(name, out var existing) && existing.IsBuiltIn)
            {
                if (policy is not ("ACCEPT" or "DROP")) return $"Can't set policy '{policy}' on '{name}'";
                chains[name] = existing with { Policy = policy };
                return null;
            }
            if (policy != "-") return $"'{name}' is not a built-in chain: it has no policy";
            if (name.Length > MaxChainName) return $"chain name '{name}' too long (must be under {MaxChainName + 1} chars)";
            chains[name] = new Chain("-", []); // created, or (--noflush) flushed
            return null;
        }
        var tokens = Tokenize(line);
        var command = tokens[0];
        var chainName = tokens.Count > 1 ? tokens[1] : null;
        var rule = RuleText(line, 2);
        switch (command)
        {
            case "-N":
                if (chainName is null) return "-N needs a chain";
                if (chains.ContainsKey(chainName)) return "Chain already exists";
                if (chainName.Length > MaxChainName) return $"chain name '{chainName}' too long (must be under {MaxChainName + 1} chars)";
                chains[chainName] = new Chain("-", []);
                return null;
            case "-A":
            {
                if (chainName is null || !chains.TryGetValue(chainName, out var chain)) return $"chain '{chainName}' does not exist";
                if (CheckNewRule(table, chains, chainName, tokens, rule) is { } problem) return problem;
                chain.Rules.Add(rule);
                return null;
            }
            case "-I":
            {
                if (chainName is null || !chains.TryGetValue(chainName, out var chain)) return $"chain '{chainName}' does not exist";
                var position = 1;
                if (tokens.Count > 2 && int.TryParse(tokens[2], out var given))
                {
                    position = given;
                    rule = RuleText(line, 3);
                }
                if (position < 1 || position > chain.Rules.Count + 1) return "Index of insertion too big";
                if (CheckNewRule(table, chains, chainName, tokens, rule) is { } problem) return problem;
                chain.Rules.Insert(position - 1, rule);
                return null;
            }
            case "-D":
            {
                if (chainName is null || !chains.TryGetValue(chainName, out var chain)) return $"chain '{chainName}' does not exist";
                if (tokens.Count == 3 && int.TryParse(tokens[2], out var number))
                {
                    if (number < 1 || number > chain.Rules.Count) return "Index of deletion too big";
                    chain.Rules.RemoveAt(number - 1);
                    return null;
                }
                return chain.Rules.Remove(rule) ? null : "Bad rule (does a matching rule exist in that chain?)";
            }
            case "-F":
                if (chainName is null)
                {
                    foreach (var c in chains.Values) c.Rules.Clear();
                    return null;
                }
                if (!chains.TryGetValue(chainName, out var flushed)) return $"chain '{chainName}' does not exist";
                flushed.Rules.Clear();
                return null;
            case "-S":
                // A read (the tool prints the rules): nothing changes.
                return chainName is null || chains.ContainsKey(chainName) ? null : $"chain '{chainName}' does not exist";
            case "-X":
            {
                if (chainName is null) return "-X without a chain is not supported by the fake";
                if (!chains.TryGetValue(chainName, out var chain)) return $"chain '{chainName}' does not exist";
                if (chain.IsBuiltIn) return $"Can't delete built-in chain '{chainName}'";
                if (chain.Rules.Count > 0) return "Directory not empty";
                if (chains.Any(c => c.Value.Rules.Any(r => Target(Tokenize(r)) == chainName))) return "Too many links";
                chains.Remove(chainName);
                return null;
            }
            default:
                return $"unknown command '{command}'";
        }
    }

    /// <summary>A rule being added: its jump must lead to a chain of this table or a target valid here.</summary>
    private string? CheckNewRule(string table, Dictionary<string, Chain> chains, string chain, List<string> tokens, string rule)
    {
        var target = Target(tokens);
        if (target is not null && !chains.ContainsKey(target))
        {
            if (TableTargets.TryGetValue(target, out var only))
            {
                if (only != table) return $"target '{target}' is only valid in the {only} table";
            }
            else if (!AnyTableTargets.Contains(target)) return $"Couldn't load target '{target}': No such file or directory";
        }
        if (target is not null && chains.TryGetValue(target, out var jumpedTo) && jumpedTo.IsBuiltIn) return $"cannot jump to the built-in chain '{target}'";
        return CheckRule?.Invoke(table, chain, rule);
    }

    /// <summary>The rule text after the command and chain (and position): what iptables-save prints after "-A CHAIN ".</summary>
    private static string RuleText(string line, int skipWords)
    {
        var index = 0;
        for (var w = 0; w < skipWords && index < line.Length; w++)
        {
            while (index < line.Length && line[index] == ' ') index++;
            while (index < line.Length && line[index] != ' ') index++;
        }
        return line[index..].Trim();
    }

    /// <summary>The jump (-j) or goto (-g) target of a rule's words, null when it has none.</summary>
    private static string? Target(List<string> tokens)
    {
        for (var i = tokens.Count - 2; i >= 0; i--)
            if (tokens[i] is "-j" or "--jump" or "-g" or "--goto") return tokens[i + 1];
        return null;
    }

    /// <summary>Splits a line into words, keeping a "quoted comment" as one word.</summary>
    private static List<string> Tokenize(string line)
    {
        var tokens = new List<string>();
        var word = new StringBuilder();
        var quoted = false;
        var inWord = false;
        foreach (var c in line)
        {
            if (c == '"') { quoted = !quoted; inWord = true; word.Append(c); }
            else if (c == ' ' && !quoted)
            {
                if (inWord) tokens.Add(word.ToString());
                word.Clear();
                inWord = false;
            }
            else { word.Append(c); inWord = true; }
        }
        if (inWord) tokens.Add(word.ToString());
        return tokens;
    }

    private sealed record Chain(string Policy, List<string> Rules)
    {
        public bool IsBuiltIn => Policy != "-";
    }

    private sealed class Table(Dictionary<string, Chain> chains)
    {
        public Dictionary<string, Chain> Chains { get; } = chains;

        public static Table Empty(IEnumerable<string> builtIn) =>
            new(builtIn.ToDictionary(c => c, _ => new Chain("ACCEPT", []), StringComparer.Ordinal));

        public Dictionary<string, Chain> Copy() => Chains.ToDictionary(c => c.Key, c => c.Value with { Rules = [.. c.Value.Rules] }, StringComparer.Ordinal);

        public string Save(string table)
        {
            var order = BuiltIn[table].Where(Chains.ContainsKey)
                .Concat(Chains.Where(c => !c.Value.IsBuiltIn).Select(c => c.Key).Order(StringComparer.Ordinal)).ToList();
            var text = new StringBuilder().Append('*').Append(table).Append('\n');
            foreach (var name in order) text.Append(':').Append(name).Append(' ').Append(Chains[name].Policy).Append(" [0:0]\n");
            foreach (var name in order)
                foreach (var rule in Chains[name].Rules) text.Append("-A ").Append(name).Append(rule.Length > 0 ? " " : "").Append(rule).Append('\n');
            return text.Append("COMMIT\n").ToString();
        }
    }
}
