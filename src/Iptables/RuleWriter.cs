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
    private readonly RestoreScript _rules = new();
    private readonly RestoreScript _deletes = new();

    private bool _counted;

    /// <summary>Rules appended to our own chains: what the rule-count metrics report (jumps inserted into built-in chains are not counted, as in kube-proxy).</summary>
    public int RuleCount { get; private set; }

    public void Reset()
    {
        _chains.Clear();
        _ruleDeletes.Clear();
        _rules.Clear();
        _deletes.Clear();
        RuleCount = 0;
    }

    /// <summary>Declares (and with --noflush, flushes) a chain.</summary>
    public void Chain(string name) => _chains.Add(name);

    /// <summary>Deletes a chain; emitted after every rule, when nothing refers to it any more.</summary>
    public void DeleteChain(string name) => _deletes.Append("-X ").Append(name).Append('\n');

    /// <summary>Nothing written: the table can be left out of the script.</summary>
    public bool IsEmpty => _chains.Count == 0 && _ruleDeletes.IsEmpty && _rules.IsEmpty && _deletes.IsEmpty;

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
    public RuleWriter Append(string chain)
    {
        _counted = true;
        return Raw("-A ").Raw(chain);
    }

    /// <summary>Starts "-I chain 1": inserts a jump at the top of a built-in chain.</summary>
    public RuleWriter Insert(string chain)
    {
        _counted = false;
        return Raw("-I ").Raw(chain).Raw(" 1");
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
        if (_counted) RuleCount++;
    }

    /// <summary>
    /// Writes the table. The chain declarations come in descending ordinal order (they may come in
    /// any order: all precede the rules):
    /// iptables-nft (1.8.7+) keeps its chain cache sorted by name and inserts each new chain after a
    /// walk from the smallest name, so declaring 30,000 chains in hash order is quadratic (a cold
    /// sync at 10,000 services spent most of its 33 s there); in descending order each new chain goes
    /// in at the head of the list. The rules are moved into <paramref name="script"/>, not copied: the
    /// writer keeps its chains and counts but no rule text (write a table once, then <see cref="Reset"/>).
    /// </summary>
    public void WriteTable(RestoreScript script, string table)
    {
        script.Append('*').Append(table).Append('\n');
        _chains.Sort((a, b) => string.CompareOrdinal(b, a));
        foreach (var chain in _chains) script.Append(':').Append(chain).Append(" - [0:0]\n");
        script.MoveFrom(_ruleDeletes).MoveFrom(_rules).MoveFrom(_deletes);
        script.Append("COMMIT\n");
    }

    private RuleWriter Raw(string text)
    {
        _rules.Append(text);
        return this;
    }
}
