using System.Net;

namespace ProxyPlanes.Model;

/// <summary>
/// The validated, backend-neutral view of one service port: everything a data plane needs
/// to build frontends. Compared by value, so an update that changes nothing is dropped.
/// </summary>
public sealed record ServicePortInfo
{
    public required ServicePortName Name { get; init; }
    public Protocol Protocol => Name.Protocol;
    public required int Port { get; init; }

    /// <summary>Cluster IPs of every family the service has (one per family).</summary>
    public required EquatableArray<IPAddress> ClusterIPs { get; init; }

    /// <summary>0 when the service has no node port.</summary>
    public int NodePort { get; init; }

    public EquatableArray<IPAddress> ExternalIPs { get; init; } = EquatableArray<IPAddress>.Empty;
    public EquatableArray<IPAddress> LoadBalancerIPs { get; init; } = EquatableArray<IPAddress>.Empty;
    public EquatableArray<IpPrefix> LoadBalancerSourceRanges { get; init; } = EquatableArray<IpPrefix>.Empty;

    /// <summary>ClientIP affinity timeout; null when the service has no affinity.</summary>
    public int? StickyTimeoutSeconds { get; init; }

    public bool ExternalPolicyLocal { get; init; }
    public bool InternalPolicyLocal { get; init; }
    public int HealthCheckNodePort { get; init; }

    /// <summary>
    /// The service's <c>trafficDistribution</c>, for the record: as in kube-proxy, it does not steer
    /// traffic here. The EndpointSlice controller turns it into endpoint hints, and the hints alone
    /// decide (<see cref="TrafficDistribution"/>), so hints written by hand work the same way.
    /// </summary>
    public TrafficDistribution TrafficDistribution { get; init; }

    /// <summary>
    /// Whether external traffic (node ports, external and load-balancer IPs) reaches this port.
    /// </summary>
    public bool HasExternalFrontends => NodePort != 0 || !ExternalIPs.IsEmpty || !LoadBalancerIPs.IsEmpty;

    public override string ToString() => Name.ToString();
}

/// <summary>
/// Where a service prefers its traffic to go (the API's <c>trafficDistribution</c>), and the topology
/// mode a service port's endpoint hints select on this node (kube-proxy's <c>topologyModeFromHints</c>).
/// </summary>
public enum TrafficDistribution
{
    /// <summary>No preference (or a value this proxy does not know): every ready endpoint in the cluster.</summary>
    Default,

    /// <summary>Endpoints hinted for this node's zone (<c>hints.forZones</c>); <c>PreferClose</c> is its older name.</summary>
    PreferSameZone,

    /// <summary>Endpoints hinted for this node (<c>hints.forNodes</c>), with the zone as the fallback.</summary>
    PreferSameNode,
}

/// <summary>An address prefix such as 10.244.0.0/16, parsed once and compared by value.</summary>
public readonly record struct IpPrefix(IPAddress Address, int Length)
{
    public IpFamily Family => Address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IpFamily.IPv6 : IpFamily.IPv4;

    public static bool TryParse(string text, out IpPrefix prefix)
    {
        prefix = default;
        text = text.Trim();
        var slash = text.IndexOf('/');
        if (!TryParseAddress(slash < 0 ? text : text[..slash], out var address)) return false;
        if (slash < 0)
        {
            // Accept a bare address as a host prefix, as kube-proxy does for source ranges.
            prefix = new IpPrefix(address, address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork ? 32 : 128);
            return true;
        }
        if (!IPNetwork.TryParse($"{address}/{text[(slash + 1)..]}", out var network)) return false;
        prefix = new IpPrefix(network.BaseAddress, network.PrefixLength);
        return true;
    }

    /// <summary>
    /// An IP address as Kubernetes writes one: IPv4 only as four decimal parts, IPv6 without zone
    /// or brackets. <see cref="IPAddress.TryParse(string?, out IPAddress?)"/> alone also takes
    /// "10.96.0" (10.96.0.0), "10" (0.0.0.10), hex parts and reads "010" as octal.
    /// </summary>
    public static bool TryParseAddress(string text, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out IPAddress? address)
    {
        address = null;
        if (text.Contains(':'))
            return text.IndexOfAny(['%', '[', ']']) < 0 && IPAddress.TryParse(text, out address);
        // Parsed in place (no Split): the intake reads one address per endpoint, 500,000 at a cold start.
        Span<byte> bytes = stackalloc byte[4];
        var rest = text.AsSpan();
        for (var i = 0; i < 4; i++)
        {
            var dot = rest.IndexOf('.');
            if ((dot < 0) != (i == 3)) return false; // exactly four parts
            var part = dot < 0 ? rest : rest[..dot];
            // Leading zeros are decimal, as Kubernetes' ParseIPSloppy reads them.
            if (part.Length is 0 or > 3 || !byte.TryParse(part, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out bytes[i]))
                return false;
            if (dot >= 0) rest = rest[(dot + 1)..];
        }
        address = new IPAddress(bytes);
        return true;
    }

    public static IpPrefix Parse(string text) =>
        TryParse(text, out var prefix) ? prefix : throw new FormatException($"'{text}' is not an IP prefix (CIDR)");

    public bool Contains(IPAddress address) => new IPNetwork(Address, Length).Contains(address);

    public override string ToString() => $"{Address}/{Length}";
}
