using System.Text;

namespace ProxyPlanes.Iptables;

/// <summary>Removes the chains a data plane owns, and every jump into them from the built-in chains, leaving all other rules as they were.</summary>
public static class IptablesCleanup
{
    /// <summary>
    /// Appends the cleanup of one table, given its iptables-save, to a restore script (nothing when
    /// nothing is ours): the owned chains are flushed, the jumps into them from every chain that stays
    /// (built-in chains, other software's chains, and the chains of a mode still running, which
    /// <paramref name="owned"/> leaves out) deleted, then the owned chains deleted.
    /// </summary>
    public static void AppendCleanup(StringBuilder script, string table, string save, Func<string, bool> owned)
    {
        var parsed = IptablesSave.ParseTables(save).SingleOrDefault(t => t.Name == table);
        if (parsed is null) return;
        var jumps = parsed.Rules
            .Where(chain => !owned(chain.Key))
            .SelectMany(chain => chain.Value.Where(rule => rule.Split(' ') is var words && words.Length > 1 && words[^2] is "-j" or "-g" && owned(words[^1])).Select(rule => $"-A {chain.Key} {rule}"))
            .Order(StringComparer.Ordinal).ToList();
        var ours = parsed.Rules.Keys.Where(owned).Order(StringComparer.Ordinal).ToList();
        if (jumps.Count == 0 && ours.Count == 0) return;
        script.Append('*').Append(table).Append('\n');
        foreach (var chain in ours) script.Append(':').Append(chain).Append(" - [0:0]\n");
        foreach (var jump in jumps) script.Append("-D").Append(jump.AsSpan(2)).Append('\n');
        foreach (var chain in ours) script.Append("-X ").Append(chain).Append('\n');
        script.Append("COMMIT\n");
    }
}
