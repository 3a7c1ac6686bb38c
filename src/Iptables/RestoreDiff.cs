namespace ProxyPlanes.Iptables;

/// <summary>
/// A full restore script cut down to what differs from the kernel: a chain the script declares whose
/// rules the kernel already holds, in the same order (<see cref="ChainDigests"/> of both), is neither
/// declared (which would flush it) nor written; every other line stays as it was (the chains that differ
/// or are missing, declared and rewritten; jumps inserted into built-in chains; chains deleted). The kernel
/// then ends up exactly where the full script would have left it, and a table with nothing left is left out.
/// </summary>
public sealed record RestoreDiff(RestoreScript Script, int ChainsUnchanged, IReadOnlyDictionary<string, int> RulesWritten)
{
    /// <summary>The tables still in <see cref="Script"/>.</summary>
    public IReadOnlyCollection<string> Tables => (IReadOnlyCollection<string>)RulesWritten.Keys;

    /// <summary>
    /// Cuts <paramref name="full"/> (a script that declares every chain it writes) down against
    /// <paramref name="kernel"/>: per table, the digests of the kernel's chains read from iptables-save.
    /// </summary>
    public static RestoreDiff Of(RestoreScript full, IReadOnlyDictionary<string, ChainDigests> kernel)
    {
        // First pass: the digests of the chains the script declares, per table.
        var planned = new Dictionary<string, ChainDigests>(StringComparer.Ordinal);
        ChainDigests? table = null;
        full.ForEachLine(line =>
        {
            if (line.StartsWith('*')) planned[line[1..].ToString()] = table = new ChainDigests();
            else if (line.SequenceEqual("COMMIT")) table = null;
            else table?.Line(line);
        });

        // Second pass: the lines of the chains that differ, and every line that is no chain's rule.
        var script = new RestoreScript();
        var body = new RestoreScript();
        var written = new Dictionary<string, int>(StringComparer.Ordinal);
        string? name = null;
        var rules = 0;
        var unchanged = 0;
        HashSet<string> same = [];
        full.ForEachLine(line =>
        {
            if (line.StartsWith('*'))
            {
                name = line[1..].ToString();
                same = Unchanged(planned[name], kernel.GetValueOrDefault(name));
                unchanged += same.Count;
                rules = 0;
                body.Clear();
                return;
            }
            if (name is null) return;
            if (line.SequenceEqual("COMMIT"))
            {
                if (!body.IsEmpty)
                {
                    script.Append('*').Append(name).Append('\n').MoveFrom(body).Append("COMMIT\n");
                    written[name] = rules;
                }
                name = null;
                return;
            }
            var chain = line.StartsWith(':') ? ChainOf(line[1..]) : line.StartsWith("-A ", StringComparison.Ordinal) ? ChainOf(line[3..]) : default;
            if (!chain.IsEmpty && same.GetAlternateLookup<ReadOnlySpan<char>>().Contains(chain)) return;
            if (line.StartsWith("-A ", StringComparison.Ordinal)) rules++;
            body.Append(line).Append('\n');
        });
        return new RestoreDiff(script, unchanged, written);
    }

    private static ReadOnlySpan<char> ChainOf(ReadOnlySpan<char> rest)
    {
        var end = rest.IndexOf(' ');
        return end < 0 ? rest : rest[..end];
    }

    /// <summary>The chains the script declares whose rules the kernel holds already.</summary>
    private static HashSet<string> Unchanged(ChainDigests planned, ChainDigests? kernel)
    {
        var same = new HashSet<string>(StringComparer.Ordinal);
        if (kernel is null) return same;
        foreach (var (chain, digest) in planned.All)
            if (kernel.TryGet(chain, out var found) && found == digest) same.Add(chain);
        return same;
    }
}
