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

/// <summary>
/// One rule a service port holds in a shared chain: the text iptables-save prints after "-A CHAIN ".
/// <see cref="Shard"/>: for <see cref="SharedChain.NatServices"/>, the <c>KUBE-SERVICES-XX</c> chain of
/// the rule's destination (<see cref="ChainNames.ShardOf"/>).
/// </summary>
public readonly record struct SharedRule(SharedChain Chain, string Rule, int Shard = 0)
{
    public const int ChainCount = 6;

    /// <summary>Every chain a rule can be in: the shared chains, nat's service shards in place of nat KUBE-SERVICES.</summary>
    public const int SlotCount = ChainCount + ChainNames.ServiceShards;

    /// <summary>The chain this rule is in, as an index below <see cref="SlotCount"/>.</summary>
    public int Slot => Chain == SharedChain.NatServices ? ChainCount + Shard : (int)Chain;

    /// <summary>The name of the chain this rule is in.</summary>
    public string ChainName => Chain == SharedChain.NatServices ? ChainNames.ServicesShard(Shard) : Name(Chain);

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
    private int _shard;

    /// <summary>Starts collecting the rules of one service port (or the fixed tail).</summary>
    public void Clear() => _rules.Clear();

    public ImmutableArray<SharedRule> ToImmutable() => _rules.ToImmutable();

    public SharedRuleBuilder Start(SharedChain chain, int shard = 0)
    {
        _chain = chain;
        _shard = shard;
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
    public void End() => _rules.Add(new SharedRule(_chain, _text.ToString(1, _text.Length - 1), _shard));
}
