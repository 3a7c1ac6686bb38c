using System.Text;

namespace ProxyPlanes.Iptables;

/// <summary>
/// A reusable line buffer for one table of an iptables-restore script: chain declarations and
/// rules are written in order and counted, without building a string per argument.
/// </summary>
public sealed class RuleWriter
{
    private readonly StringBuilder _chains = new();
    private readonly StringBuilder _rules = new();
    private readonly StringBuilder _deletes = new();

    private bool _counted;

    /// <summary>Rules appended to our own chains: what the rule-count metrics report (jumps inserted into built-in chains are not counted, as in kube-proxy).</summary>
    public int RuleCount { get; private set; }

    public void Reset()
    {
        _chains.Clear();
        _rules.Clear();
        _deletes.Clear();
        RuleCount = 0;
    }

    /// <summary>Declares (and with --noflush, flushes) a chain.</summary>
    public void Chain(string name) => _chains.Append(':').Append(name).Append(" - [0:0]\n");

    /// <summary>Deletes a chain; emitted after every rule, when nothing refers to it any more.</summary>
    public void DeleteChain(string name) => _deletes.Append("-X ").Append(name).Append('\n');

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
        _rules.Append(" -m comment --comment ");
        // Quote comments with spaces, as iptables-save prints them.
        if (text.Contains(' ')) _rules.Append('"').Append(text).Append('"');
        else _rules.Append(text);
        return this;
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

    public void WriteTable(StringBuilder script, string table)
    {
        script.Append('*').Append(table).Append('\n');
        script.Append(_chains).Append(_rules).Append(_deletes);
        script.Append("COMMIT\n");
    }

    private RuleWriter Raw(string text)
    {
        _rules.Append(text);
        return this;
    }
}
