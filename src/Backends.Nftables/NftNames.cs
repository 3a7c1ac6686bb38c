using System.Security.Cryptography;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables;

/// <summary>
/// Names of everything in the table. The layout and names are kube-proxy's nftables mode, so
/// `nft list table ip proxyplanes` reads like `nft list table ip kube-proxy`: per-service objects
/// are <c>PREFIX-HASH-namespace/name/protocol/port</c> (and <c>…__ip/port</c> per endpoint), where
/// HASH is the first 8 characters of base32(sha256(the rest)).
/// </summary>
public static class NftNames
{
    public const string Table = "proxyplanes";

    // Base chains: TYPE-HOOK.
    public const string FilterPrerouting = "filter-prerouting";
    public const string FilterInput = "filter-input";
    public const string FilterForward = "filter-forward";
    public const string FilterOutput = "filter-output";
    public const string FilterOutputPostDnat = "filter-output-post-dnat";
    public const string NatPrerouting = "nat-prerouting";
    public const string NatOutput = "nat-output";
    public const string NatPostrouting = "nat-postrouting";

    // Fixed regular chains.
    public const string Services = "services";
    public const string EndpointsCheck = "endpoints-check";
    public const string FirewallCheck = "firewall-check";
    public const string RejectChain = "reject-chain";
    public const string MarkForMasquerade = "mark-for-masquerade";
    public const string Masquerading = "masquerading";

    /// <summary>
    /// Written with one rule only by a full sync and never jumped to: when it or its rule is gone,
    /// the table was flushed or deleted behind our back, and the next periodic check asks for a full sync.
    /// </summary>
    public const string Canary = "canary";

    // Fixed maps and sets.
    public const string ServiceIPs = "service-ips";
    public const string ServiceNodePorts = "service-nodeports";
    public const string NoEndpointServices = "no-endpoint-services";
    public const string NoEndpointNodePorts = "no-endpoint-nodeports";
    public const string FirewallIPs = "firewall-ips";
    public const string NodePortIPs = "nodeport-ips";
    public const string HealthCheckNodePorts = "health-check-nodeports";

    /// <summary>
    /// (pool id . slot) → endpoint address . port: the endpoints of every pool, as data, in
    /// <see cref="EndpointSlotMaps"/> maps <c>endpoint-slots-00</c> … <c>-ff</c> by pool id (a map
    /// exists while a pool uses it). Sharded because the kernel checks every element a rule's map
    /// lookup binds, and every binding an element added meets: one map for 10,000 pools took 21 s to load.
    /// </summary>
    public const string EndpointSlots = "endpoint-slots";

    public const int EndpointSlotMaps = 256;

    /// <summary><c>endpoint-slots-tcp-9a</c>: one set of maps per protocol, as nft 1.0.6 takes a map's typeof only with a pool's own protocol (<c>th dport</c> breaks its next read of the map).</summary>
    public static string EndpointSlotsMap(string protocol, uint poolId) => $"{EndpointSlots}-{protocol}-{poolId % EndpointSlotMaps:x2}";

    public static bool IsEndpointSlotsMap(string name) => name.StartsWith(EndpointSlots + "-", StringComparison.Ordinal);

    /// <summary>endpoint . endpoint: a DNATed packet from an endpoint to itself is masqueraded (hairpin).</summary>
    public const string HairpinEndpoints = "hairpin-endpoints";

    // Per service port (and endpoint) prefixes; each at most 16 characters with the hyphen.
    public const string ClusterPolicyPrefix = "service-";
    public const string LocalPolicyPrefix = "local-";
    public const string ExternalPrefix = "external-";
    public const string FirewallPrefix = "firewall-";
    public const string SourceRangesPrefix = "source-ranges-";
    public const string EndpointPrefix = "endpoint-";
    public const string AffinityPrefix = "affinity-";

    private const int BaseLengthMax = 256 - 16;

    public static string ClusterPolicy(ServicePortName port) => ClusterPolicyPrefix + PortBase(port);
    public static string LocalPolicy(ServicePortName port) => LocalPolicyPrefix + PortBase(port);
    public static string External(ServicePortName port) => ExternalPrefix + PortBase(port);
    public static string Firewall(ServicePortName port) => FirewallPrefix + PortBase(port);
    public static string SourceRanges(ServicePortName port) => SourceRangesPrefix + PortBase(port);
    public static string Endpoint(ServicePortName port, EndpointInfo endpoint) => EndpointPrefix + EndpointBase(port, endpoint);
    public static string Affinity(ServicePortName port, EndpointInfo endpoint) => AffinityPrefix + EndpointBase(port, endpoint);

    /// <summary>The names of one service port's objects, each hash computed once.</summary>
    public static PortNames ForPort(ServicePortName port) => new(port);

    public static string Protocol(Protocol protocol) => protocol switch
    {
        Model.Protocol.TCP => "tcp",
        Model.Protocol.UDP => "udp",
        _ => "sctp",
    };

    /// <summary>"HASH-namespace/name/protocol/port", e.g. "ULMVA6XW-ns1/svc1/tcp/p80".</summary>
    public static string PortBase(ServicePortName port) =>
        HashAndTruncate($"{port.Service.Namespace}/{port.Service.Name}/{Protocol(port.Protocol)}/{port.Port}");

    /// <summary>"HASH-namespace/name/protocol/port__ip/port"; an IPv6 address's colons become dots.</summary>
    public static string EndpointBase(ServicePortName port, EndpointInfo endpoint) =>
        HashAndTruncate($"{port.Service.Namespace}/{port.Service.Name}/{Protocol(port.Protocol)}/{port.Port}__{endpoint.Address.ToString().Replace(':', '.')}/{endpoint.Port}");

    private static string HashAndTruncate(string name)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(name), digest);
        var result = Base32Prefix(digest, 8) + "-" + name;
        return result.Length > BaseLengthMax ? result[..(BaseLengthMax - 3)] + "..." : result;
    }

    private static string Base32Prefix(ReadOnlySpan<byte> data, int length)
    {
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        var chars = new char[length];
        int buffer = 0, bits = 0, index = 0, written = 0;
        while (written < length)
        {
            if (bits < 5)
            {
                buffer = (buffer << 8) | data[index++];
                bits += 8;
            }
            chars[written++] = alphabet[(buffer >> (bits - 5)) & 31];
            bits -= 5;
        }
        return new string(chars);
    }
}

/// <summary>The names of one service port's chains and sets (see <see cref="NftNames"/>), hashing each base once.</summary>
public sealed class PortNames(ServicePortName port)
{
    private readonly string _base = NftNames.PortBase(port);
    private Dictionary<EndpointInfo, string>? _endpoints;
    private string? _clusterPolicy, _localPolicy, _external;

    // Each asked for several times per port and sync (rules, elements, pool ids): built once.
    public string ClusterPolicy => _clusterPolicy ??= NftNames.ClusterPolicyPrefix + _base;
    public string LocalPolicy => _localPolicy ??= NftNames.LocalPolicyPrefix + _base;
    public string External => _external ??= NftNames.ExternalPrefix + _base;
    public string Firewall => NftNames.FirewallPrefix + _base;
    public string SourceRanges => NftNames.SourceRangesPrefix + _base;
    public string Endpoint(EndpointInfo endpoint) => NftNames.EndpointPrefix + EndpointBase(endpoint);
    public string Affinity(EndpointInfo endpoint) => NftNames.AffinityPrefix + EndpointBase(endpoint);

    private string EndpointBase(EndpointInfo endpoint)
    {
        _endpoints ??= [];
        if (!_endpoints.TryGetValue(endpoint, out var name)) _endpoints[endpoint] = name = NftNames.EndpointBase(port, endpoint);
        return name;
    }
}
