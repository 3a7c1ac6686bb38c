namespace ProxyPlanes.Backends.Iptables;

/// <summary>Reads iptables-save output: chain names, and the rules of built-in chains.</summary>
public static class IptablesSave
{
    private static readonly HashSet<string> BuiltInChains = ["INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING"];

    public static KernelTables Parse(string natSave, string filterSave)
    {
        var (natChains, natRules) = ParseTable(natSave);
        var (filterChains, filterRules) = ParseTable(filterSave);
        return new KernelTables(natChains, filterChains, natRules.ToHashSet(StringComparer.Ordinal), filterRules.ToHashSet(StringComparer.Ordinal));
    }

    /// <summary>Chains declared in one table's save, and the "-A BUILTIN ..." rule lines (a rule present twice is listed twice).</summary>
    public static (HashSet<string> Chains, List<string> BuiltInRules) ParseTable(string save)
    {
        var chains = new HashSet<string>(StringComparer.Ordinal);
        var rules = new List<string>();
        foreach (var raw in save.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.StartsWith(':'))
            {
                var end = line.IndexOf(' ');
                chains.Add(end < 0 ? line[1..] : line[1..end]);
            }
            else if (line.StartsWith("-A ", StringComparison.Ordinal))
            {
                var end = line.IndexOf(' ', 3);
                if (end > 0 && BuiltInChains.Contains(line[3..end])) rules.Add(line);
            }
        }
        return (chains, rules);
    }
}
