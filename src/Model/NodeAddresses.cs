using System.Net;
using System.Net.NetworkInformation;

namespace ProxyPlanes.Model;

/// <summary>Reads the addresses of this network namespace's interfaces.</summary>
public static class NodeAddresses
{
    /// <summary>
    /// The local addresses inside <paramref name="prefixes"/>; null (meaning "every local address")
    /// when no prefix is given or one of them is the whole address space.
    /// </summary>
    public static EquatableArray<IPAddress>? Select(EquatableArray<IpPrefix> prefixes, Func<IEnumerable<IPAddress>>? localAddresses = null)
    {
        if (prefixes.IsEmpty || prefixes.Any(p => p.Length == 0)) return null;
        var addresses = (localAddresses ?? ReadLocalAddresses)()
            .Where(a => prefixes.Any(p => p.Family == FamilyOf(a) && p.Contains(a)))
            .Distinct()
            .OrderBy(a => a, Comparer<IPAddress>.Create(EndpointInfo.CompareAddresses));
        return new EquatableArray<IPAddress>(addresses);
    }

    /// <summary>
    /// The node's primary IP of each family, as kube-proxy detects its node IPs from the Node object:
    /// per family the first InternalIP, else the first ExternalIP. Loopback addresses are never primary
    /// (kube-proxy's stand-in when it knows no node IP). IPv4 first.
    /// </summary>
    public static EquatableArray<IPAddress> PrimaryIPs(IEnumerable<NodeAddress>? addresses)
    {
        var parsed = (addresses ?? [])
            .Select(a => (a.Type, IP: IpPrefix.TryParseAddress(a.Address ?? "", out var ip) ? ip : null))
            .Where(a => a.IP is not null && !IPAddress.IsLoopback(a.IP) && a.Type is "InternalIP" or "ExternalIP")
            .OrderBy(a => a.Type == "InternalIP" ? 0 : 1) // stable: keeps the Node's order within a type
            .Select(a => a.IP!)
            .ToList();
        return new EquatableArray<IPAddress>(
            new[] { IpFamily.IPv4, IpFamily.IPv6 }.Select(f => parsed.FirstOrDefault(ip => FamilyOf(ip) == f)).OfType<IPAddress>());
    }

    /// <summary>
    /// Node port addresses for <c>--nodeport-addresses=primary</c>: the local addresses that are a primary
    /// IP (a primary IP no interface holds accepts nothing, as kube-proxy's /32 CIDR would match nothing).
    /// A family without a known primary IP accepts node ports on all its addresses but loopback and
    /// link-local, and with none known at all the result is null (every local address): kube-proxy then
    /// has no CIDR for the family, which it reads as "all" — node ports stay reachable rather than vanish
    /// because a Node lists no address of that family.
    /// </summary>
    public static EquatableArray<IPAddress>? SelectPrimary(EquatableArray<IPAddress> primaryIPs, Func<IEnumerable<IPAddress>>? localAddresses = null)
    {
        if (primaryIPs.IsEmpty) return null;
        var knownFamilies = primaryIPs.Select(FamilyOf).ToHashSet();
        var addresses = (localAddresses ?? ReadLocalAddresses)()
            .Where(a => knownFamilies.Contains(FamilyOf(a))
                ? primaryIPs.Contains(a)
                : !IPAddress.IsLoopback(a) && !a.IsIPv6LinkLocal)
            .Distinct()
            .OrderBy(a => a, Comparer<IPAddress>.Create(EndpointInfo.CompareAddresses));
        return new EquatableArray<IPAddress>(addresses);
    }

    public static IEnumerable<IPAddress> ReadLocalAddresses() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address)
            .Where(a => !a.IsIPv6LinkLocal);

    public static IpFamily FamilyOf(IPAddress address) =>
        address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IpFamily.IPv6 : IpFamily.IPv4;
}
