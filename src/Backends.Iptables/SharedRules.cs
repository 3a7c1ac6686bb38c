using System.Collections.Immutable;
using System.Text;
using ProxyPlanes.Iptables;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// The chains every service port writes rules into (its frontends), as opposed to the chains a
/// port owns. A partial sync never flushes them: it deletes and inserts only the rules of the
/// ports that changed.
/// </summary>
public enum SharedChain
{
    NatServices,
    NatNodePorts,
    FilterServices,
    FilterExternalServices,
    FilterProxyFirewall,
    FilterNodePorts,
}

/// <summary>One rule a service port holds in a shared chain: the text iptables-save prints after "-A CHAIN ".</summary>
public readonly record struct SharedRule(SharedChain Chain, string Rule)
{
    public const int ChainCount = 6;

    public bool IsNat => Chain is SharedChain.NatServices or SharedChain.NatNodePorts;

    public static string Table(SharedChain chain) => chain is SharedChain.NatServices or SharedChain.NatNodePorts ? "nat" : "filter";

    public static string Name(SharedChain chain) => chain switch
    {
        SharedChain.NatServices or SharedChain.FilterServices => ChainNames.Services,
        SharedChain.NatNodePorts or SharedChain.FilterNodePorts => ChainNames.NodePorts,
        SharedChain.FilterExternalServices => ChainNames.ExternalServices,
        _ => ChainNames.ProxyFirewall,
    };
}

/// <summary>Renders shared-chain rules to text with the same words <see cref="RuleWriter"/> writes.</summary>
internal sealed class SharedRuleBuilder
{
    private readonly StringBuilder _text = new();
    private readonly ImmutableArray<SharedRule>.Builder _rules = ImmutableArray.CreateBuilder<SharedRule>();
    private SharedChain _chain;

    /// <summary>Starts collecting the rules of one service port (or the fixed tail).</summary>
    public void Clear() => _rules.Clear();

    public ImmutableArray<SharedRule> ToImmutable() => _rules.ToImmutable();

    public SharedRuleBuilder Start(SharedChain chain)
    {
        _chain = chain;
        _text.Clear();
        return this;
    }

    public SharedRuleBuilder Comment(string text)
    {
        RuleWriter.AppendComment(_text, text);
        return this;
    }

    public SharedRuleBuilder Arg(string text)
    {
        _text.Append(' ').Append(text);
        return this;
    }

    public SharedRuleBuilder Arg(int value)
    {
        _text.Append(' ').Append(value);
        return this;
    }

    public SharedRuleBuilder Jump(string target)
    {
        _text.Append(" -j ").Append(target);
        return this;
    }

    /// <summary>Ends the rule (the text without the leading space).</summary>
    public void End() => _rules.Add(new SharedRule(_chain, _text.ToString(1, _text.Length - 1)));
}
