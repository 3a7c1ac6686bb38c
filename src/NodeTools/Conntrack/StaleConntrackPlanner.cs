using System.Net;
using ProxyPlanes.Model;

namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>
/// Decides which conntrack entries a sync left stale (kube-proxy's pkg/proxy/conntrack/cleanup.go), for UDP and
/// SCTP service ports only: TCP flows to a gone endpoint are reset by the endpoint or time out, and new TCP
/// connections are never steered by old entries. Pure: no I/O, same input, same list.
/// </summary>
/// <remarks>
/// Rules, per service port (in <see cref="ServicePortName"/> order) and per family (IPv4 first; each family on its own,
/// with <see cref="ServicePortState.EndpointsFor"/> of that family, as kube-proxy runs one proxier per family):
/// <list type="bullet">
/// <item>A frontend it had in <c>previous</c> and not in <c>current</c> (the whole port removed, or an IP or port
/// taken off it): delete every flow to that frontend.</item>
/// <item>Reachable endpoints went from none (or the port did not exist) to some: delete every flow to each of its
/// frontends; until now they were rejected or blackholed, and conntrack would keep them so.</item>
/// <item>An endpoint (address and port) reachable in <c>previous</c> but not in <c>current</c>: delete the flows to
/// each frontend (of the endpoint's family) it still has whose reply comes from that endpoint.</item>
/// </list>
/// A frontend is a cluster, external or load-balancer IP with the service port, or the node port matched by
/// destination port alone (on any local address); a service has frontends only in the families of its cluster IPs, and
/// a family's frontends are the addresses of that family. Duplicates are dropped, and so are endpoint deletions covered
/// by a whole-frontend deletion.
/// </remarks>
public static class StaleConntrackPlanner
{
    private static readonly IpFamily[] Families = [IpFamily.IPv4, IpFamily.IPv6];

    public static IReadOnlyList<ConntrackDeletion> Plan(DesiredState previous, DesiredState current)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(current);

        var names = new SortedSet<ServicePortName>(previous.ServicePorts.Keys);
        names.UnionWith(current.ServicePorts.Keys);

        var planned = new List<ConntrackDeletion>();
        foreach (var name in names)
        {
            if (name.Protocol is not (Protocol.UDP or Protocol.SCTP)) continue;
            previous.ServicePorts.TryGetValue(name, out var before);
            current.ServicePorts.TryGetValue(name, out var after);
            foreach (var family in Families)
                PlanPort(name, family, before, after, planned);
        }
        return Normalize(planned);
    }

    /// <summary>One service port in one family, as kube-proxy runs one proxier per family.</summary>
    private static void PlanPort(ServicePortName name, IpFamily family, ServicePortState? before, ServicePortState? after, List<ConntrackDeletion> planned)
    {
        var oldFrontends = before is null ? [] : Frontends(before.Info, family);
        var newFrontends = after is null ? [] : Frontends(after.Info, family);

        foreach (var frontend in oldFrontends.Where(f => !newFrontends.Contains(f)))
            planned.Add(frontend.Delete(name, ConntrackDeletionReason.FrontendRemoved));

        if (after is null) return;

        var oldReachable = before is null ? [] : Reachable(before, family);
        var newReachable = Reachable(after, family);
        if (oldReachable.Count == 0 && newReachable.Count > 0)
        {
            foreach (var frontend in newFrontends)
                planned.Add(frontend.Delete(name, ConntrackDeletionReason.ServiceNewlyActive));
        }

        var kept = newReachable.Select(ep => (ep.Address, ep.Port)).ToHashSet();
        var removed = oldReachable
            .Where(ep => !kept.Contains((ep.Address, ep.Port)))
            .DistinctBy(ep => (ep.Address, ep.Port))
            .Order();
        foreach (var endpoint in removed)
        {
            // Frontends that are gone were deleted whole above.
            foreach (var frontend in oldFrontends.Where(newFrontends.Contains))
                planned.Add(frontend.Delete(name, ConntrackDeletionReason.EndpointRemoved, endpoint));
        }
    }

    /// <summary>The endpoints of <paramref name="family"/> any traffic of the port may reach.</summary>
    private static List<EndpointInfo> Reachable(ServicePortState state, IpFamily family) =>
        state.EndpointsFor(family).AllReachable.Where(ep => ep.Family == family).ToList();

    /// <summary>
    /// Every address:port (and node port) that steers traffic of this service port in <paramref name="family"/>,
    /// without duplicates. None when the service has no cluster IP of that family: data planes program it only in the
    /// families of its cluster IPs.
    /// </summary>
    internal static List<Frontend> Frontends(ServicePortInfo info, IpFamily family)
    {
        var frontends = new List<Frontend>();
        if (!info.ClusterIPs.Any(ip => FamilyOf(ip) == family)) return frontends;
        foreach (var address in info.ClusterIPs.Concat(info.ExternalIPs).Concat(info.LoadBalancerIPs).Where(ip => FamilyOf(ip) == family))
        {
            var frontend = new Frontend(family, address, info.Port);
            if (!frontends.Contains(frontend)) frontends.Add(frontend);
        }
        if (info.NodePort != 0) frontends.Add(new Frontend(family, null, info.NodePort));
        return frontends;
    }

    /// <summary>Drops repeated deletions and endpoint deletions whose frontend is deleted whole anyway; keeps the order.</summary>
    private static List<ConntrackDeletion> Normalize(List<ConntrackDeletion> planned)
    {
        var whole = planned.Where(d => d.IsWholeFrontend).Select(FrontendKey).ToHashSet();
        var seen = new HashSet<(Protocol, IpFamily, IPAddress?, int, IPAddress?, int)>();
        var result = new List<ConntrackDeletion>(planned.Count);
        foreach (var deletion in planned)
        {
            if (!deletion.IsWholeFrontend && whole.Contains(FrontendKey(deletion))) continue;
            if (seen.Add((deletion.Protocol, deletion.Family, deletion.OriginalDestination, deletion.OriginalDestinationPort, deletion.ReplySource, deletion.ReplySourcePort)))
                result.Add(deletion);
        }
        return result;
    }

    private static (Protocol, IpFamily, IPAddress?, int) FrontendKey(ConntrackDeletion d) =>
        (d.Protocol, d.Family, d.OriginalDestination, d.OriginalDestinationPort);

    private static IpFamily FamilyOf(IPAddress address) =>
        address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? IpFamily.IPv6 : IpFamily.IPv4;

    /// <summary>A destination (null address: node port, any local address) traffic of a service port is sent to.</summary>
    internal readonly record struct Frontend(IpFamily Family, IPAddress? Address, int Port)
    {
        public ConntrackDeletion Delete(ServicePortName name, ConntrackDeletionReason reason, EndpointInfo? endpoint = null) =>
            new(name, reason, name.Protocol, Family, Address, Port, endpoint?.Address, endpoint?.Port ?? 0);
    }
}
