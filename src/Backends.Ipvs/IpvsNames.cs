using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>One ipset of the helper rules, as kube-proxy's IPVS mode defines it.</summary>
public sealed record IpsetDefinition(string BaseName, string Type, string Comment, bool EntryComments = false)
{
    public bool IsBitmap => Type.StartsWith("bitmap:", StringComparison.Ordinal);

    /// <summary>
    /// The set's name in a family: kube-proxy's for IPv4; for IPv6 "KUBE-" becomes "KUBE-6-", cut
    /// to ipset's 31 characters (KUBE-6-LOAD-BALANCER-SOURCE-CID), so both families' sets coexist.
    /// </summary>
    public string Name(IpFamily family)
    {
        if (family == IpFamily.IPv4) return BaseName;
        var name = "KUBE-6-" + BaseName["KUBE-".Length..];
        return name.Length > 31 ? name[..31] : name;
    }

    /// <summary>The <c>ipset restore</c> line that creates it (idempotent with -exist).</summary>
    public string CreateLine(IpFamily family) => IsBitmap
        ? $"create {Name(family)} {Type} range 0-65535 -exist"
        : $"create {Name(family)} {Type} family {(family == IpFamily.IPv4 ? "inet" : "inet6")} hashsize 1024 maxelem 65536{(EntryComments ? " comment" : "")} -exist";

    /// <summary>An entry as <c>ipset save</c> prints it and <c>ipset restore</c> adds it: the key, then its comment, if any.</summary>
    public static string WithComment(string key, string comment) => $"{key} comment \"{comment}\"";

    /// <summary>The key of an entry (what <c>del</c> takes): the entry without its comment.</summary>
    public static string KeyOf(string entry)
    {
        var space = entry.IndexOf(' ');
        return space < 0 ? entry : entry[..space];
    }

    /// <summary>The comment of an entry, null when it has none.</summary>
    public static string? CommentOf(string entry)
    {
        const string marker = " comment \"";
        var start = entry.IndexOf(marker, StringComparison.Ordinal);
        return start < 0 ? null : entry[(start + marker.Length)..].TrimEnd('"');
    }
}

/// <summary>Names the IPVS mode shares with kube-proxy's: the dummy link, chains, ipsets, rule comments.</summary>
public static class IpvsNames
{
    /// <summary>The dummy link every service address is bound to.</summary>
    public const string Link = "kube-ipvs0";

    // nat
    public const string Services = "KUBE-SERVICES";
    public const string PostRouting = "KUBE-POSTROUTING";
    public const string NodePort = "KUBE-NODE-PORT";
    public const string LoadBalancer = "KUBE-LOAD-BALANCER";
    public const string MarkMasq = "KUBE-MARK-MASQ";

    // filter (KUBE-NODE-PORT exists in both tables)
    public const string Forward = "KUBE-FORWARD";
    public const string ProxyFirewall = "KUBE-PROXY-FIREWALL";
    public const string SourceRangesFirewall = "KUBE-SOURCE-RANGES-FIREWALL";
    public const string IpvsFilter = "KUBE-IPVS-FILTER";
    public const string IpvsOutFilter = "KUBE-IPVS-OUT-FILTER";

    public static readonly string[] NatChains = [Services, PostRouting, NodePort, LoadBalancer, MarkMasq];
    public static readonly string[] FilterChains = [Forward, NodePort, ProxyFirewall, SourceRangesFirewall, IpvsFilter, IpvsOutFilter];

    /// <summary>
    /// The iptables mode's per-service chains (kube-proxy's names). The cleanup removes them too: they
    /// jump to KUBE-MARK-MASQ, which could not be deleted while they are left from an iptables-mode run.
    /// </summary>
    private static readonly string[] IptablesModePerServicePrefixes = ["KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-"];

    /// <summary>The filter chains the cleanup removes (with the jumps into them).</summary>
    public static bool CleanedUpInFilter(string chain) => FilterChains.Contains(chain) || IsIptablesModePerService(chain);

    /// <summary>The nat chains the cleanup removes (with the jumps into them).</summary>
    public static bool CleanedUpInNat(string chain) => NatChains.Contains(chain) || IsIptablesModePerService(chain);

    /// <summary>The chains this mode itself programs (the cleanup also takes the iptables mode's per-service chains).</summary>
    public static bool Owns(string table, string chain) => (table == "nat" ? NatChains : table == "filter" ? FilterChains : []).Contains(chain);

    private static bool IsIptablesModePerService(string chain) => IptablesModePerServicePrefixes.Any(p => chain.StartsWith(p, StringComparison.Ordinal));

    public static readonly IpsetDefinition LoopBack = new("KUBE-LOOP-BACK", "hash:ip,port,ip", "Kubernetes endpoints dst ip:port, source ip for solving hairpin purpose");
    public static readonly IpsetDefinition ClusterIP = new("KUBE-CLUSTER-IP", "hash:ip,port", "Kubernetes service cluster ip + port for masquerade purpose");
    public static readonly IpsetDefinition ExternalIP = new("KUBE-EXTERNAL-IP", "hash:ip,port", "Kubernetes service external ip + port for masquerade and filter purpose");
    public static readonly IpsetDefinition ExternalIPLocal = new("KUBE-EXTERNAL-IP-LOCAL", "hash:ip,port", "Kubernetes service external ip + port with externalTrafficPolicy=local");
    public static readonly IpsetDefinition LoadBalancerSet = new("KUBE-LOAD-BALANCER", "hash:ip,port", "Kubernetes service lb portal");
    public static readonly IpsetDefinition LoadBalancerFW = new("KUBE-LOAD-BALANCER-FW", "hash:ip,port", "Kubernetes service load balancer ip + port for load balancer with sourceRange");
    public static readonly IpsetDefinition LoadBalancerLocal = new("KUBE-LOAD-BALANCER-LOCAL", "hash:ip,port", "Kubernetes service load balancer ip + port with externalTrafficPolicy=local");
    public static readonly IpsetDefinition LoadBalancerSourceIP = new("KUBE-LOAD-BALANCER-SOURCE-IP", "hash:ip,port,ip", "Kubernetes service load balancer ip + port + source IP for packet filter purpose");
    public static readonly IpsetDefinition LoadBalancerSourceCidr = new("KUBE-LOAD-BALANCER-SOURCE-CIDR", "hash:ip,port,net", "Kubernetes service load balancer ip + port + source cidr for packet filter purpose");
    public static readonly IpsetDefinition NodePortTcp = new("KUBE-NODE-PORT-TCP", "bitmap:port", "Kubernetes nodeport TCP port for masquerade purpose");
    public static readonly IpsetDefinition NodePortLocalTcp = new("KUBE-NODE-PORT-LOCAL-TCP", "bitmap:port", "Kubernetes nodeport TCP port with externalTrafficPolicy=local");
    public static readonly IpsetDefinition NodePortUdp = new("KUBE-NODE-PORT-UDP", "bitmap:port", "Kubernetes nodeport UDP port for masquerade purpose");
    public static readonly IpsetDefinition NodePortLocalUdp = new("KUBE-NODE-PORT-LOCAL-UDP", "bitmap:port", "Kubernetes nodeport UDP port with externalTrafficPolicy=local");
    public static readonly IpsetDefinition NodePortSctp = new("KUBE-NODE-PORT-SCTP-HASH", "hash:ip,port", "Kubernetes nodeport SCTP port for masquerade purpose with type 'hash ip:port'");
    public static readonly IpsetDefinition NodePortLocalSctp = new("KUBE-NODE-PORT-LOCAL-SCTP-HASH", "hash:ip,port", "Kubernetes nodeport SCTP port with externalTrafficPolicy=local with type 'hash ip:port'");
    public static readonly IpsetDefinition HealthCheckNodePort = new("KUBE-HEALTH-CHECK-NODE-PORT", "bitmap:port", "Kubernetes health check node port");
    public static readonly IpsetDefinition IpvsIPs = new("KUBE-IPVS-IPS", "hash:ip", "Addresses on the ipvs interface");

    /// <summary>
    /// Not in kube-proxy: the frontends (address, port) of <c>externalTrafficPolicy: Local</c> service
    /// ports that have endpoints but none on this node. Their virtual servers send pods and the
    /// node itself to every endpoint; other sources are dropped before IPVS sees them.
    /// </summary>
    public static readonly IpsetDefinition NoLocalEndpoints = new("KUBE-NO-LOCAL-ENDPOINTS", "hash:ip,port", "externalTrafficPolicy=Local service ip + port without local endpoints");

    /// <summary>
    /// Not in kube-proxy, and matched by no rule: every virtual server (address, protocol, port) with
    /// the service port it belongs to as the entry's comment (<c>ns/name:port</c>). IPVS keeps no name
    /// for a virtual server; this is where <c>proxyplanes explain</c> reads it from the kernel.
    /// </summary>
    public static readonly IpsetDefinition ServiceNames = new("KUBE-IPVS-NAMES", "hash:ip,port", "virtual server ip + port, commented with its service port (read by proxyplanes explain)", EntryComments: true);

    /// <summary>Every set, in creation order (kube-proxy's, then ours).</summary>
    public static readonly IpsetDefinition[] Sets =
    [
        LoopBack, ClusterIP, ExternalIP, ExternalIPLocal, LoadBalancerSet, LoadBalancerFW, LoadBalancerLocal,
        LoadBalancerSourceIP, LoadBalancerSourceCidr, NodePortTcp, NodePortLocalTcp, NodePortUdp, NodePortLocalUdp,
        NodePortSctp, NodePortLocalSctp, HealthCheckNodePort, IpvsIPs, NoLocalEndpoints, ServiceNames,
    ];

    /// <summary>Whether a set of this name (either family) belongs to this mode.</summary>
    public static bool IsOurSet(string name) => Sets.Any(s => s.Name(IpFamily.IPv4) == name || s.Name(IpFamily.IPv6) == name);

    /// <summary>The definition of one of this mode's sets by its name in either family; null for another set.</summary>
    public static IpsetDefinition? DefinitionOf(string name) => Sets.FirstOrDefault(s => s.Name(IpFamily.IPv4) == name || s.Name(IpFamily.IPv6) == name);
}
