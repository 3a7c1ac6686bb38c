using System.Net;
using System.Security.Cryptography;
using System.Text;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Iptables;

/// <summary>
/// kube-proxy's chain names, so `iptables-save` reads the same under either proxy and an
/// operator's runbooks carry over. Per-service names hash the service port (and endpoint).
/// </summary>
public static class ChainNames
{
    // Fixed chains.
    public const string Services = "KUBE-SERVICES";
    public const string ExternalServices = "KUBE-EXTERNAL-SERVICES";
    public const string NodePorts = "KUBE-NODEPORTS";
    public const string PostRouting = "KUBE-POSTROUTING";
    public const string MarkMasq = "KUBE-MARK-MASQ";
    public const string Forward = "KUBE-FORWARD";
    public const string ProxyFirewall = "KUBE-PROXY-FIREWALL";

    /// <summary>
    /// Written (with one rule) in each table only by a full sync and never jumped to: when it or
    /// its rule is gone, the tables were flushed behind our back and the next periodic check asks
    /// for a full sync. kube-proxy's canary has the same name, but is empty, so a flush of the
    /// rules alone (iptables -F) goes unnoticed by it.
    /// </summary>
    public const string Canary = "KUBE-PROXY-CANARY";

    /// <summary>
    /// nat <c>KUBE-SERVICES</c> does not hold the service rules itself: it dispatches on the low 6 bits
    /// of the destination address (<c>-d 0.0.0.5/0.0.0.63</c>) into this many chains
    /// <c>KUBE-SERVICES-00</c>…<c>KUBE-SERVICES-3F</c>, which hold each frontend rule (cluster, external,
    /// load-balancer IP) of their addresses, in the order one chain would. Adding or removing a service
    /// then inserts into and deletes from a chain of ~1/64 of the rules: iptables-nft reads back the
    /// whole chain it edits (see docs/bench/2026-12-07-iptables-shards). The node-ports jump stays last
    /// in <c>KUBE-SERVICES</c>, after the dispatch rules.
    /// </summary>
    public const int ServiceShards = 64;

    /// <summary>The nat chain holding the frontend rules of the addresses whose low bits are <paramref name="shard"/>.</summary>
    public static string ServicesShard(int shard) => Services + "-" + shard.ToString("X2", System.Globalization.CultureInfo.InvariantCulture);

    public static bool IsServicesShard(string chain) =>
        chain.Length == Services.Length + 3 && chain.StartsWith(Services + "-", StringComparison.Ordinal);

    /// <summary><c>KUBE-SERVICES</c> or one of its shards.</summary>
    public static bool IsServices(string chain) => chain == Services || IsServicesShard(chain);

    /// <summary>The shard of a frontend address: its last byte's low 6 bits.</summary>
    public static int ShardOf(IPAddress address)
    {
        Span<byte> bytes = stackalloc byte[16];
        address.TryWriteBytes(bytes, out var length);
        return bytes[length - 1] & (ServiceShards - 1);
    }

    /// <summary>Prefixes of the chains made per service port or endpoint.</summary>
    public static readonly string[] PerServicePrefixes = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"];

    public static string ClusterPolicy(ServicePortName port) => "KUBE-SVC-" + Hash(port, null);
    public static string LocalPolicy(ServicePortName port) => "KUBE-SVL-" + Hash(port, null);
    public static string External(ServicePortName port) => "KUBE-EXT-" + Hash(port, null);
    public static string Firewall(ServicePortName port) => "KUBE-FW-" + Hash(port, null);
    public static string Endpoint(ServicePortName port, EndpointInfo endpoint) => "KUBE-SEP-" + Hash(port, endpoint.Endpoint);

    public static bool IsPerService(string chain) => PerServicePrefixes.Any(p => chain.StartsWith(p, StringComparison.Ordinal));

    public static string ProtocolName(Protocol protocol) => protocol switch
    {
        Protocol.TCP => "tcp",
        Protocol.UDP => "udp",
        _ => "sctp",
    };

    // base32(sha256(servicePortName + protocol [+ endpoint]))[:16], as kube-proxy names them.
    private static string Hash(ServicePortName port, string? endpoint)
    {
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(port + ProtocolName(port.Protocol) + endpoint), digest);
        return Base32Prefix(digest, 16);
    }

    private static string Base32Prefix(ReadOnlySpan<byte> data, int length)
    {
        const string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        var chars = new char[length];
        int bitBuffer = 0, bits = 0, index = 0, written = 0;
        while (written < length)
        {
            if (bits < 5)
            {
                bitBuffer = (bitBuffer << 8) | data[index++];
                bits += 8;
            }
            chars[written++] = alphabet[(bitBuffer >> (bits - 5)) & 31];
            bits -= 5;
        }
        return new string(chars);
    }
}
