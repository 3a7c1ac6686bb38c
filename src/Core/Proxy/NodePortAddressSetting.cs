using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// --nodeport-addresses (or the config file's <c>nodePortAddresses</c>), validated: either CIDRs
/// selecting the node addresses that accept node ports (none: every local address), or kube-proxy's
/// special value <c>primary</c>, the node's primary IP of each family. <c>primary</c> depends on the
/// watched Node, so it stays a setting here and Core resolves it into addresses on every sync
/// (<see cref="ProxyController"/>); data planes only ever see concrete addresses.
/// </summary>
public sealed record NodePortAddressSetting
{
    /// <summary>The value that selects the node's primary IPs (kube-proxy's <c>NodePortAddressesPrimary</c>).</summary>
    public const string PrimaryValue = "primary";

    private NodePortAddressSetting(EquatableArray<IpPrefix> cidrs, bool primary) => (Cidrs, Primary) = (cidrs, primary);

    /// <summary>Node ports on every local address (kube-proxy's default outside nftables mode).</summary>
    public static NodePortAddressSetting All { get; } = new(EquatableArray<IpPrefix>.Empty, false);

    /// <summary>Node ports only on the node's primary IP of each family.</summary>
    public static NodePortAddressSetting PrimaryIPs { get; } = new(EquatableArray<IpPrefix>.Empty, true);

    /// <summary>Node ports on the local addresses inside these prefixes (every address when empty).</summary>
    public static NodePortAddressSetting InCidrs(EquatableArray<IpPrefix> cidrs) => cidrs.IsEmpty ? All : new(cidrs, false);

    /// <summary>The prefixes; empty with <see cref="Primary"/>.</summary>
    public EquatableArray<IpPrefix> Cidrs { get; }

    /// <summary>True for <c>primary</c>: the node's primary IPs, known only from the Node object.</summary>
    public bool Primary { get; }

    /// <summary>
    /// Reads the values as given (comma-separated flag parts, or config list items). A bad value makes
    /// the exception <paramref name="invalid"/> builds from its index and a one-line problem, so the flag
    /// and the config file word their errors their own way (flag name; file, line and field).
    /// <c>primary</c> must stand alone, as kube-proxy demands: mixed with CIDRs it would have two meanings.
    /// </summary>
    public static NodePortAddressSetting Parse(IReadOnlyList<string> values, Func<int, string, Exception> invalid)
    {
        ArgumentNullException.ThrowIfNull(values);
        ArgumentNullException.ThrowIfNull(invalid);
        var prefixes = new List<IpPrefix>();
        for (var i = 0; i < values.Count; i++)
        {
            var value = values[i];
            if (value == PrimaryValue)
            {
                if (values.Count > 1)
                    throw invalid(i, $"'{PrimaryValue}' (the node's primary IPs) cannot be combined with other values; give either '{PrimaryValue}' alone or CIDRs");
                return PrimaryIPs;
            }
            if (!value.Contains('/') || !IpPrefix.TryParse(value, out var prefix))
                throw invalid(i, $"'{value}' is not a CIDR such as 10.244.0.0/16, nor '{PrimaryValue}'");
            prefixes.Add(prefix);
        }
        return InCidrs(new EquatableArray<IpPrefix>(prefixes));
    }

    /// <summary>As an operator would write it: <c>primary</c>, the CIDRs, or <c>all</c>.</summary>
    public override string ToString() => Primary ? PrimaryValue : Cidrs.IsEmpty ? "all" : string.Join(",", Cidrs);
}
