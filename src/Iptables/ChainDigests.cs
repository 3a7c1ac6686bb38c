using System.Runtime.InteropServices;

namespace ProxyPlanes.Iptables;

/// <summary>
/// Per chain of one table, a fingerprint of its rules in order (their <see cref="CanonicalRule"/> forms):
/// what a full sync over rules already in place compares with its plan, without holding the table's text
/// (~10 MB of nat at 10,000 services; a fingerprint is a few words per chain). Chains are found by name as
/// spans of the line read (no string per rule), numbered in the order declared (<see cref="IndexOf"/>), so
/// that <see cref="RestoreDiff"/> keeps its own per-chain values in an array beside this table rather than
/// in a second table keyed by name. A chain's name is one string, the caller's when it has one
/// (<see cref="Declare(string)"/>: <see cref="IptablesSave"/> shares it with its set of chains).
/// </summary>
public sealed class ChainDigests
{
    private readonly Dictionary<string, int> _index = new(StringComparer.Ordinal);
    private readonly Dictionary<string, int>.AlternateLookup<ReadOnlySpan<char>> _byName;
    private readonly CanonicalRule _canonical = new();
    private Digest[] _digests = new Digest[16];

    public ChainDigests() => _byName = _index.GetAlternateLookup<ReadOnlySpan<char>>();

    /// <summary>Two independent 64-bit hashes of the canonical rules in order, and their count.</summary>
    public readonly record struct Digest(ulong A, ulong B, int Rules)
    {
        /// <summary>This digest followed by one more rule, given in its canonical form.</summary>
        public Digest With(ReadOnlySpan<char> canonical)
        {
            // FNV-1a over the rule, then folded into the chain's running value (order counts).
            ulong a = 14695981039346656037UL, b = 0x9E3779B97F4A7C15UL;
            foreach (var c in canonical)
            {
                a = (a ^ c) * 1099511628211UL;
                b = (b ^ c) * 0x100000001B3UL + 0x632BE59BD9B4E019UL;
                b ^= b >> 29;
            }
            return new Digest((A ^ a) * 0x9E3779B97F4A7C15UL + 1, (B * 31) ^ b, Rules + 1);
        }
    }

    /// <summary>The chains seen.</summary>
    public int Count => _index.Count;

    /// <summary>A chain declared (it may hold no rule); a chain declared again keeps its rules.</summary>
    public void Declare(string chain)
    {
        ref var index = ref CollectionsMarshal.GetValueRefOrAddDefault(_index, chain, out var exists);
        if (!exists) index = Add();
    }

    /// <summary><see cref="Declare(string)"/> of a name read from a line: a string is made for a chain not seen before only.</summary>
    public void Declare(ReadOnlySpan<char> chain)
    {
        if (!_byName.ContainsKey(chain)) Declare(chain.ToString());
    }

    /// <summary>The next rule of <paramref name="chain"/>, the text after <c>-A CHAIN</c> (a chain not declared is declared).</summary>
    public void Rule(ReadOnlySpan<char> chain, ReadOnlySpan<char> rule)
    {
        var index = IndexOf(chain);
        if (index < 0)
        {
            Declare(chain);
            index = IndexOf(chain);
        }
        _digests[index] = _digests[index].With(_canonical.Read(rule));
    }

    /// <summary>The number of a chain seen (0 to <see cref="Count"/> - 1, in the order first seen), or -1.</summary>
    public int IndexOf(ReadOnlySpan<char> chain) => _byName.TryGetValue(chain, out var index) ? index : -1;

    /// <summary>The digest of the chain numbered <paramref name="index"/> (<see cref="IndexOf"/>).</summary>
    public Digest this[int index] => (uint)index < (uint)Count ? _digests[index] : throw new ArgumentOutOfRangeException(nameof(index));

    public bool TryGet(ReadOnlySpan<char> chain, out Digest digest)
    {
        var index = IndexOf(chain);
        digest = index < 0 ? default : _digests[index];
        return index >= 0;
    }

    /// <summary>Feeds one line of a table's iptables-save (or of a restore script's table): <c>:CHAIN</c> and <c>-A CHAIN rule</c> lines.</summary>
    public void Line(ReadOnlySpan<char> raw)
    {
        var line = raw.TrimEnd('\r');
        if (DeclaredChain(line) is var declared && !declared.IsEmpty) Declare(declared);
        else if (RuleOf(line, out var chain, out var rule)) Rule(chain, rule);
    }

    /// <summary>The chain a <c>:CHAIN POLICY [counters]</c> line declares (empty for any other line).</summary>
    public static ReadOnlySpan<char> DeclaredChain(ReadOnlySpan<char> line)
    {
        if (!line.StartsWith(':')) return [];
        var end = line.IndexOf(' ');
        return end < 0 ? line[1..] : line[1..end];
    }

    /// <summary>Whether <paramref name="line"/> is <c>-A CHAIN rule</c>, and its chain and rule.</summary>
    public static bool RuleOf(ReadOnlySpan<char> line, out ReadOnlySpan<char> chain, out ReadOnlySpan<char> rule)
    {
        chain = rule = [];
        if (!line.StartsWith("-A ", StringComparison.Ordinal)) return false;
        var end = line[3..].IndexOf(' ');
        chain = end < 0 ? line[3..] : line.Slice(3, end);
        rule = end < 0 ? [] : line[(3 + end + 1)..];
        return true;
    }

    private int Add()
    {
        var index = _index.Count - 1; // the entry just added
        if (index == _digests.Length) Array.Resize(ref _digests, _digests.Length * 2);
        _digests[index] = default;
        return index;
    }
}
