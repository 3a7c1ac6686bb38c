using System.Text;
using ProxyPlanes.NodeTools;

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
        var reader = new Reader(table, owned);
        OutputLines.ForEach(save, reader.Line);
        var text = new RestoreScript();
        reader.AppendTo(text);
        if (!text.IsEmpty) script.Append(text.ToString());
    }

    /// <summary>
    /// <see cref="AppendCleanup(StringBuilder, string, string, Func{string, bool})"/> of the table <paramref name="applier"/>
    /// saves, read as the tool prints it: only the owned chains' names and the jumps into them are kept, never the
    /// save (~10 MB at 10,000 services) nor its rules. A failing tool throws and appends nothing.
    /// </summary>
    public static async Task AppendCleanupAsync(StringBuilder script, string table, IIptablesApplier applier, Func<string, bool> owned, CancellationToken cancellationToken)
    {
        var text = new RestoreScript();
        await AppendCleanupAsync(text, table, applier, owned, cancellationToken).ConfigureAwait(false);
        if (!text.IsEmpty) script.Append(text.ToString());
    }

    /// <summary>
    /// <see cref="AppendCleanupAsync(StringBuilder, string, IIptablesApplier, Func{string, bool}, CancellationToken)"/> into a
    /// script held as UTF-8 chunks: at 50,000 services × 5 endpoints the cleanup declares and deletes 300,000 chains
    /// (~18 MB of text), which a <see cref="StringBuilder"/> holds as 36 MB of UTF-16 and its string as 36 MB more, on
    /// the large object heap.
    /// </summary>
    public static async Task AppendCleanupAsync(RestoreScript script, string table, IIptablesApplier applier, Func<string, bool> owned, CancellationToken cancellationToken)
    {
        var reader = new Reader(table, owned);
        await applier.SaveAsync(table, reader.Line, cancellationToken).ConfigureAwait(false);
        reader.AppendTo(script, listFirst: applier.Variant == IptablesVariant.Nft);
    }

    /// <summary>
    /// From this many owned chains in a table, the cleanup for iptables-nft starts that table with <c>-S</c>
    /// (<see cref="RuleWriter.ListTableFirst"/>): every line of the cleanup names a chain, and iptables-nft 1.8.x keeps
    /// the names in a list sorted by an insertion walk, unless a command that names none made it fetch the table
    /// whole (40,000 chains: 3.9 s of CPU → 0.4 s, measured; the walk is quadratic, so minutes at 300,000).
    /// </summary>
    public const int ListTableFromChains = 1000;

    /// <summary>Gathers, a line of the save at a time, the owned chains of one table and the rules of other chains that jump or go to them.</summary>
    private sealed class Reader(string table, Func<string, bool> owned)
    {
        private readonly HashSet<string> _ours = new(StringComparer.Ordinal);
        private readonly List<string> _jumps = [];
        private bool _inTable;
        private bool _found;

        public void Line(ReadOnlySpan<char> raw)
        {
            var line = raw.TrimEnd('\r');
            if (line.StartsWith('*'))
            {
                _inTable = line[1..].SequenceEqual(table);
                _found |= _inTable;
            }
            else if (!_inTable) return;
            else if (line.SequenceEqual("COMMIT")) _inTable = false;
            else if (line.StartsWith(':'))
            {
                var end = line.IndexOf(' ');
                var chain = (end < 0 ? line[1..] : line[1..end]).ToString();
                if (owned(chain)) _ours.Add(chain);
            }
            else if (line.StartsWith("-A ", StringComparison.Ordinal))
            {
                // "-A CHAIN ... -j TARGET" (or -g): the last two words.
                var chainEnd = line[3..].IndexOf(' ');
                if (chainEnd < 0) return;
                var rule = line[(3 + chainEnd + 1)..];
                var last = rule.LastIndexOf(' ');
                if (last < 0) return;
                var before = rule[..last];
                var verb = before[(before.LastIndexOf(' ') + 1)..];
                if (!verb.SequenceEqual("-j") && !verb.SequenceEqual("-g")) return;
                if (owned(rule[(last + 1)..].ToString()) && !owned(line.Slice(3, chainEnd).ToString())) _jumps.Add(line.ToString());
            }
        }

        public void AppendTo(RestoreScript script, bool listFirst = false)
        {
            if (!_found || (_jumps.Count == 0 && _ours.Count == 0)) return;
            var ours = _ours.ToArray();
            Array.Sort(ours, StringComparer.Ordinal);
            _jumps.Sort(StringComparer.Ordinal);
            script.Append('*').Append(table).Append('\n');
            if (listFirst && ours.Length >= ListTableFromChains) script.Append("-S\n");
            foreach (var chain in ours) script.Append(':').Append(chain).Append(" - [0:0]\n");
            foreach (var jump in _jumps) script.Append("-D").Append(jump.AsSpan(2)).Append('\n');
            foreach (var chain in ours) script.Append("-X ").Append(chain).Append('\n');
            script.Append("COMMIT\n");
        }
    }
}
