using Microsoft.Extensions.Logging;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.Netlink;

namespace ProxyPlanes.Backends.Ipvs;

/// <summary>
/// The only part of the IPVS data plane that touches the kernel: the IPVS table and kube-ipvs0
/// over netlink, the helper ipsets and rules with ipset and iptables-restore
/// (<see cref="IpvsKernel"/>), or an in-memory kernel (<see cref="FakeIpvsKernel"/>).
/// </summary>
public interface IIpvsKernel
{
    /// <summary>
    /// Once, before the first sync: checks that the kernel has IPVS and the scheduler, and sets the
    /// sysctls IPVS needs (net.ipv4.vs.conntrack=1 so masquerade rules see IPVS traffic, ...).
    /// </summary>
    Task PrepareAsync(IpvsPlannerOptions options, CancellationToken cancellationToken);

    /// <summary>IPVS's connection timeouts (IPVS_CMD_GET_CONFIG, what <c>ipvsadm -L --timeout</c> shows).</summary>
    Task<IpvsTimeouts> GetTimeoutsAsync(CancellationToken cancellationToken);

    /// <summary>kube-proxy's <c>ipvs.tcpTimeout</c>, <c>tcpFinTimeout</c>, <c>udpTimeout</c> (IPVS_CMD_SET_CONFIG); a 0 leaves that one alone.</summary>
    Task SetTimeoutsAsync(IpvsTimeouts timeouts, CancellationToken cancellationToken);

    /// <summary>
    /// kube-proxy's <c>ipvs.strictARP</c>: net.ipv4.conf.all.arp_ignore raised to 1 and arp_announce to 2,
    /// so the node answers ARP only for addresses of the link asked on, never for kube-ipvs0's. Returns the
    /// sysctls that could not be set (each logged once as a warning; the proxy runs on).
    /// </summary>
    IReadOnlyList<string> EnsureStrictArp(ILogger logger);

    /// <summary>What a full sync compares with: link, addresses, virtual servers with destinations, our ipsets, built-in chains.</summary>
    Task<IpvsKernelView> ReadAsync(IReadOnlyList<IpFamily> families, CancellationToken cancellationToken);

    /// <summary>The destinations (with connection counts) of some virtual servers (none for one that does not exist).</summary>
    Task<IReadOnlyDictionary<VirtualServerKey, IReadOnlyList<KernelDestination>>> ReadDestinationsAsync(IReadOnlyCollection<VirtualServerKey> servers, CancellationToken cancellationToken);

    /// <summary>Whether the dummy link kube-ipvs0 exists (the periodic canary check; one netlink request).</summary>
    Task<bool> LinkExistsAsync(CancellationToken cancellationToken);

    /// <summary>Whether the kernel has this virtual server (a dump of its destinations cannot tell a missing one from an empty one).</summary>
    Task<bool> ServiceExistsAsync(VirtualServerKey server, CancellationToken cancellationToken);

    /// <summary>Runs the operations in order; stops at the first the kernel refuses (throws, naming it).</summary>
    Task ApplyAsync(IReadOnlyList<IpvsOperation> operations, CancellationToken cancellationToken);

    /// <summary>iptables-save of one table of a family (cleanup reads it to find our jumps and chains).</summary>
    Task<string> SaveIptablesAsync(IpFamily family, string table, CancellationToken cancellationToken);
}

/// <summary>The kernel refused an operation; the message names it.</summary>
public sealed class IpvsKernelException(string message, Exception? inner = null) : Exception(message, inner);
