using System.Text;

namespace ProxyPlanes.Iptables;

/// <summary>
/// A reusable line buffer for one table of an iptables-restore script: chain declarations and
/// rules are written in order and counted, without building a string per argument.
/// </summary>
public sealed class RuleWriter
{
    private readonly List<string> _chains = [];
    // UTF-8 in small chunks (RestoreScript): a full sync's rules are never one large string.
    private readonly RestoreScript _ruleDeletes = new();
    private readonly RestoreScript _jumps = new();
    private readonly List<string> _jumpTargets = [];
    private readonly RestoreScript _rules = new();
    private readonly RestoreScript _deletes = new();
    // Leaving out chains the kernel holds as planned (LeaveOutUnchanged): its digests, where the chain being written
    // started in _rules, and buffers reused to read it back.
    private ChainDigests? _kernel;
    private long _chainStart = -1;
    private CanonicalRule? _canonical;
    private byte[] _bytes = [];
    private char[] _chars = [];

    /// <summary>
    /// Whether the table's first command is <c>-S</c> (list the table's rules; the tool prints them and
    /// changes nothing). iptables-nft 1.8.x collects, per command, the names of the chains it touches
    /// into a list kept sorted by an insertion walk from the smallest name (nft-cache.c,
    /// <c>cache_chain_list_insert</c>), so that it fetches only those chains before the commit: with
    /// 30,000 chains and 80,000 rules that walk is quadratic (~6 s of CPU at 10,000 services). A
    /// command that names no chain makes the tool fetch the whole table instead and skip the list for
    /// every later command; <c>-S</c> is the only one that changes nothing (<c>-F</c>, <c>-X</c>,
    /// <c>-Z</c> without a chain flush, delete or zero every chain). Its price is a read of the whole
    /// table, cheap only while the table holds few rules: the planner asks for it on a cold sync
    /// (none of our chains in the table yet) of many chains, and only for iptables-nft: iptables-legacy
    /// keeps no such list, and its listing fails on a jump to a chain created earlier in the same
    /// restore ("Can't find library for target").
    /// </summary>
    public bool ListTableFirst { get; set; }

    /// <summary>Chains declared so far.</summary>
    public int ChainCount => _chains.Count;

    /// <summary>Rules appended to our own chains: what the rule-count metrics report (jumps inserted into built-in chains are not counted, as in kube-proxy).</summary>
    public int RuleCount { get; private set; }

    public void Reset()
    {
        _chains.Clear();
        _ruleDeletes.Clear();
        _jumps.Clear();
        _jumpTargets.Clear();
        _rules.Clear();
        _deletes.Clear();
        RuleCount = 0;
        ListTableFirst = false;
        _kernel = null;
        _chainStart = -1;
        ChainsUnchanged = 0;
    }

    /// <summary>
    /// For a full sync over rules in place: from now on, a chain written between <see cref="OwnChain"/> and
    /// <see cref="EndOwnChain"/> whose rules <paramref name="kernel"/> (this table's, read from iptables-save) already
    /// holds, in the same order, is left out at once, its declaration and rules dropped from the buffer, as
    /// <see cref="RestoreDiff"/> would cut it from the whole script: the whole script (~120 MB at 50,000 services ×
    /// 5 endpoints, of which a restart sends nothing) is never held. Until <see cref="Reset"/>.
    /// </summary>
    public void LeaveOutUnchanged(ChainDigests kernel)
    {
        _kernel = kernel;
        _canonical ??= new CanonicalRule();
    }

    /// <summary>Chains left out since <see cref="Reset"/> (<see cref="LeaveOutUnchanged"/>).</summary>
    public int ChainsUnchanged { get; private set; }

    /// <summary>
    /// Declares a chain all of whose rules follow, before <see cref="EndOwnChain"/> and before any rule of another
    /// chain (a service port's own chain); no rule is written to it anywhere else in the table.
    /// </summary>
    public void OwnChain(string name)
    {
        Chain(name);
        _chainStart = _rules.Length;
    }

    /// <summary>
    /// Ends the chain <see cref="OwnChain"/> declared; with <see cref="LeaveOutUnchanged"/>, drops it when the kernel
    /// holds exactly its rules (the digests <see cref="RestoreDiff"/> compares). Returns whether it was left out.
    /// </summary>
    public bool EndOwnChain(string name)
    {
        var start = _chainStart;
        _chainStart = -1;
        if (_kernel is not { } kernel || start < 0 || _chains.Count == 0 || !string.Equals(_chains[^1], name, StringComparison.Ordinal)) return false;
        var index = kernel.IndexOf(name);
        if (index < 0) return false;
        var bytes = _rules.CopyFrom(start, ref _bytes);
        var chars = Encoding.UTF8.GetCharCount(_bytes.AsSpan(0, bytes));
        if (_chars.Length < chars) _chars = new char[Math.Max(chars, 2 * _chars.Length)];
        var text = _chars.AsSpan(0, Encoding.UTF8.GetChars(_bytes.AsSpan(0, bytes), _chars));
        var digest = default(ChainDigests.Digest);
        while (!text.IsEmpty)
        {
            var end = text.IndexOf('\n');
            var line = end < 0 ? text : text[..end];
            text = end < 0 ? [] : text[(end + 1)..];
            if (!ChainDigests.RuleOf(line, out var chain, out var rule) || !chain.SequenceEqual(name)) return false;
            digest = digest.With(_canonical!.Read(rule));
        }
        if (digest != kernel[index]) return false;
        _rules.Truncate(start);
        _chains.RemoveAt(_chains.Count - 1);
        ChainsUnchanged++;
        return true;
    }

    /// <summary>Declares (and with --noflush, flushes) a chain.</summary>
    public void Chain(string name) => _chains.Add(name);

    /// <summary>Deletes a chain; emitted after every rule, when nothing refers to it any more.</summary>
    public void DeleteChain(string name) => _deletes.Append("-X ").Append(name).Append('\n');

    /// <summary>Nothing written: the table can be left out of the script.</summary>
    public bool IsEmpty => _chains.Count == 0 && _ruleDeletes.IsEmpty && _jumps.IsEmpty && _rules.IsEmpty && _deletes.IsEmpty;

    /// <summary>Appends a rule already rendered (the text iptables-save prints after "-A chain "); counted.</summary>
    public void AppendRule(string chain, string rule)
    {
        _rules.Append("-A ").Append(chain).Append(' ').Append(rule).Append('\n');
        RuleCount++;
    }

    /// <summary>Inserts a rendered rule at 1-based <paramref name="position"/> ("-I chain N rule"); counted.</summary>
    public void InsertRule(string chain, int position, string rule)
    {
        _rules.Append("-I ").Append(chain).Append(' ').Append(position).Append(' ').Append(rule).Append('\n');
        RuleCount++;
    }

    /// <summary>
    /// Deletes a rule by its exact text ("-D chain rule"). Emitted after the chain declarations and
    /// before every rule written, so insert positions count the chain without the deleted rules.
    /// </summary>
    public void DeleteRule(string chain, string rule) =>
        _ruleDeletes.Append("-D ").Append(chain).Append(' ').Append(rule).Append('\n');

    /// <summary>Starts a rule: "-A chain". Finish with <see cref="End"/>.</summary>
    public RuleWriter Append(string chain) => Raw("-A ").Raw(chain);

    /// <summary>
    /// Inserts a jump at the top of a built-in chain ("-I chain 1 rule"; not counted) into our chain
    /// <paramref name="target"/>. These come before every other rule (after the deletions), and
    /// before the <c>-S</c> of <see cref="ListTableFirst"/>.
    /// </summary>
    public void JumpFromBuiltIn(string chain, string rule, string target)
    {
        _jumps.Append("-I ").Append(chain).Append(" 1 ").Append(rule).Append('\n');
        _jumpTargets.Add(target);
    }

    public RuleWriter Comment(string text)
    {
        _rules.Append(CommentPrefix);
        if (NeedsQuotes(text)) _rules.Append('"').Append(text).Append('"');
        else _rules.Append(text);
        return this;
    }

    private const string CommentPrefix = " -m comment --comment ";

    private static bool NeedsQuotes(string comment) => comment.Contains(' ');

    /// <summary>" -m comment --comment TEXT", quoted when it has spaces, as iptables-save prints it.</summary>
    public static void AppendComment(StringBuilder text, string comment)
    {
        text.Append(CommentPrefix);
        if (NeedsQuotes(comment)) text.Append('"').Append(comment).Append('"');
        else text.Append(comment);
    }

    public RuleWriter Arg(string text)
    {
        _rules.Append(' ').Append(text);
        return this;
    }

    public RuleWriter Arg(int value)
    {
        _rules.Append(' ').Append(value);
        return this;
    }

    public RuleWriter Jump(string target) => Raw(" -j ").Raw(target);

    public void End()
    {
        _rules.Append('\n');
        RuleCount++;
    }

    /// <summary>
    /// Writes the table: chain declarations, rule deletions, jumps from built-in chains, rules, chain
    /// deletions. With <see cref="ListTableFirst"/>, the chains the jumps lead to are declared and the
    /// jumps written first, then <c>-S</c>, then the rest: iptables-nft creates a built-in chain the
    /// table lacks (a fresh node's nat) when a command needs it, but a listing puts a stand-in for it
    /// in its cache, and a jump inserted after the listing then fails (ENOENT); a listing after the
    /// 30,000 declarations costs more than it saves (measured). The chain declarations come in
    /// descending ordinal order (they may come in any order: all precede the rules that use them):
    /// iptables-nft (1.8.7+) keeps its chain cache sorted by name and inserts each new chain after a
    /// walk from the smallest name, so declaring 30,000 chains in hash order is quadratic (a cold
    /// sync at 10,000 services spent most of its 33 s there); in descending order each new chain goes
    /// in at the head of the list. After a listing that list is not kept, and the kernel creates the
    /// chains in the order they are declared, which every later read of the table pays for:
    /// iptables-nft-save 1.8.9 (and <c>-S</c>) sorts the chains it fetches by name at a cost quadratic
    /// when they come in name order, ascending or descending (40,000 chains: 10–15 s of CPU, against 0.25 s
    /// in hash order; at 300,000 it ran past its 2-minute timeout), so a table that lists first declares
    /// them in <see cref="ScrambledOrder"/>. The rules are moved into <paramref name="script"/>, not copied: the
    /// writer keeps its chains and counts but no rule text (write a table once, then <see cref="Reset"/>).
    /// </summary>
    public void WriteTable(RestoreScript script, string table)
    {
        script.Append('*').Append(table).Append('\n');
        _chains.Sort(ListTableFirst ? ScrambledOrder : (a, b) => string.CompareOrdinal(b, a));
        if (ListTableFirst)
        {
            var first = _chains.Where(_jumpTargets.Contains).Distinct().ToList();
            foreach (var chain in first) Declare(script, chain);
            script.MoveFrom(_ruleDeletes).MoveFrom(_jumps).Append("-S\n");
            foreach (var chain in _chains)
                if (!first.Contains(chain)) Declare(script, chain);
        }
        else
        {
            foreach (var chain in _chains) Declare(script, chain);
            script.MoveFrom(_ruleDeletes).MoveFrom(_jumps);
        }
        script.MoveFrom(_rules).MoveFrom(_deletes);
        script.Append("COMMIT\n");
    }

    /// <summary>
    /// Chain names compared from their last character back: a deterministic order unrelated to name order,
    /// since our names end in hash characters (<c>KUBE-SEP-</c> + base32 of a SHA-256).
    /// </summary>
    public static int ScrambledOrder(string a, string b)
    {
        for (int i = a.Length - 1, j = b.Length - 1; i >= 0 && j >= 0; i--, j--)
            if (a[i] != b[j]) return a[i].CompareTo(b[j]);
        return a.Length.CompareTo(b.Length);
    }

    private static void Declare(RestoreScript script, string chain) => script.Append(':').Append(chain).Append(" - [0:0]\n");

    private RuleWriter Raw(string text)
    {
        _rules.Append(text);
        return this;
    }
}
