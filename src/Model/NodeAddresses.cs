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

    public static IEnumerable<IPAddress> ReadLocalAddresses() =>
        NetworkInterface.GetAllNetworkInterfaces()
            .SelectMany(i => i.GetIPProperties().UnicastAddresses)
            .Select(u => u.Address)
            .Where(a => !a.IsIPv6LinkLocal);

    public static IpFamily FamilyOf(IPAddress address) =>
        address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IpFamily.IPv6 : IpFamily.IPv4;
}
