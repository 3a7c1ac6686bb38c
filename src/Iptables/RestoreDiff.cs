namespace ProxyPlanes.Iptables;

/// <summary>
/// A full restore script cut down to what differs from the kernel: a chain the script declares whose
/// rules the kernel already holds, in the same order (<see cref="ChainDigests"/> of the kernel), is neither
/// declared (which would flush it) nor written; every other line stays as it was (the chains that differ
/// or are missing, declared and rewritten; jumps inserted into built-in chains; chains deleted). The kernel
/// then ends up exactly where the full script would have left it, and a table with nothing left is left out.
/// </summary>
public sealed record RestoreDiff(RestoreScript Script, int ChainsUnchanged, IReadOnlyDictionary<string, int> RulesWritten)
{
    /// <summary>The tables still in <see cref="Script"/>.</summary>
    public IReadOnlyCollection<string> Tables => (IReadOnlyCollection<string>)RulesWritten.Keys;

    /// <summary>What the script does to one chain the kernel holds: whether it declares it, and the digest of the rules it writes there.</summary>
    private struct Planned
    {
        public bool Declared;
        public ChainDigests.Digest Digest;
    }

    /// <summary>One table of the script (a <c>*table</c> ... <c>COMMIT</c> block) and the kernel's chains of that table.</summary>
    private sealed class Block(ChainDigests? kernel)
    {
        public ChainDigests? Kernel => kernel;

        /// <summary>Per chain of the kernel (by its <see cref="ChainDigests.IndexOf"/>), what the script does to it.</summary>
        public Planned[] Planned { get; } = new Planned[kernel?.Count ?? 0];

        /// <summary>Whether the chain named is one the script declares and writes exactly as the kernel holds it: left out.</summary>
        public bool Unchanged(ReadOnlySpan<char> chain) => kernel?.IndexOf(chain) is { } index && index >= 0 && Unchanged(index);

        public bool Unchanged(int index) => Planned[index].Declared && Planned[index].Digest == kernel![index];
    }

    /// <summary>
    /// Cuts <paramref name="full"/> (a script that declares every chain it writes) down against
    /// <paramref name="kernel"/>: per table, the digests of the kernel's chains read from iptables-save.
    /// Two reads of the script and no table of the plan's chains: the first folds each rule of a chain the
    /// kernel holds into an array numbered as the kernel's table (a chain the kernel lacks is written whatever
    /// its rules), the second copies the lines of every chain not found unchanged. Chain declarations come
    /// before the rules, so the cut cannot be decided as the script is read once.
    /// </summary>
    public static RestoreDiff Of(RestoreScript full, IReadOnlyDictionary<string, ChainDigests> kernel)
    {
        var blocks = new List<Block>();
        var canonical = new CanonicalRule();
        Block? block = null;
        full.ForEachLine(raw =>
        {
            var line = raw.TrimEnd('\r');
            if (line.StartsWith('*'))
            {
                blocks.Add(block = new Block(kernel.GetValueOrDefault(line[1..].ToString())));
                return;
            }
            if (line.SequenceEqual("COMMIT")) block = null;
            if (block?.Kernel is not { } table) return;
            if (ChainDigests.DeclaredChain(line) is var declared && !declared.IsEmpty)
            {
                if (table.IndexOf(declared) is var index && index >= 0) block.Planned[index].Declared = true;
            }
            else if (ChainDigests.RuleOf(line, out var chain, out var rule) && table.IndexOf(chain) is var index && index >= 0)
            {
                ref var planned = ref block.Planned[index];
                planned.Digest = planned.Digest.With(canonical.Read(rule));
            }
        });

        var unchanged = 0;
        foreach (var b in blocks)
            for (var i = 0; i < b.Planned.Length; i++)
                if (b.Unchanged(i)) unchanged++;

        // Second read: the lines of the chains that differ, and every line that is no chain's rule.
        var script = new RestoreScript();
        var body = new RestoreScript();
        var written = new Dictionary<string, int>(StringComparer.Ordinal);
        string? name = null;
        var blockNumber = -1;
        var rules = 0;
        full.ForEachLine(line =>
        {
            if (line.StartsWith('*'))
            {
                name = line[1..].ToString();
                block = blocks[++blockNumber];
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
                    written[name] = written.GetValueOrDefault(name) + rules;
                }
                name = null;
                return;
            }
            var trimmed = line.TrimEnd('\r');
            var isRule = ChainDigests.RuleOf(trimmed, out var chain, out _);
            if (!isRule) chain = ChainDigests.DeclaredChain(trimmed);
            if (!chain.IsEmpty && block!.Unchanged(chain)) return;
            if (isRule) rules++;
            body.Append(line).Append('\n');
        });
        return new RestoreDiff(script, unchanged, written);
    }
}
