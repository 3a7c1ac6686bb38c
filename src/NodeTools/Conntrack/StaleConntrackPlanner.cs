using System.Collections.Immutable;
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

    /// <summary>
    /// The deletions over every service port of both states. A port whose state is the same object in both (what the
    /// controller's partial rebuild leaves of every unchanged port) plans nothing and is skipped without a look.
    /// </summary>
    public static IReadOnlyList<ConntrackDeletion> Plan(DesiredState previous, DesiredState current)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(current);

        var planned = new List<ConntrackDeletion>();
        foreach (var (name, before, after) in Pairs(previous.ServicePorts, current.ServicePorts))
            PlanPort(name, before, after, planned);
        return Normalize(planned);
    }

    /// <summary>
    /// The same deletions as <see cref="Plan(DesiredState, DesiredState)"/>, looking only at <paramref name="changed"/>:
    /// for a partial sync, whose unchanged ports are the same in both states (at 10,000 service ports, walking them all
    /// cost ~20 ms per sync; this costs what the changed ports cost). The caller guarantees that every port outside
    /// <paramref name="changed"/> is equal in both states.
    /// </summary>
    public static IReadOnlyList<ConntrackDeletion> Plan(DesiredState previous, DesiredState current, IEnumerable<ServicePortName> changed)
    {
        ArgumentNullException.ThrowIfNull(previous);
        ArgumentNullException.ThrowIfNull(current);
        ArgumentNullException.ThrowIfNull(changed);

        var planned = new List<ConntrackDeletion>();
        foreach (var name in new SortedSet<ServicePortName>(changed))
            PlanPort(name, previous.ServicePorts.GetValueOrDefault(name), current.ServicePorts.GetValueOrDefault(name), planned);
        return Normalize(planned);
    }

    /// <summary>
    /// Every name in either map, in name order, with its state on each side; pairs whose states are the same object are
    /// left out. Both maps are sorted, so one merge walk does it (a sorted union of 10,000 names per sync did not).
    /// </summary>
    private static IEnumerable<(ServicePortName Name, ServicePortState? Before, ServicePortState? After)> Pairs(
        ImmutableSortedDictionary<ServicePortName, ServicePortState> previous, ImmutableSortedDictionary<ServicePortName, ServicePortState> current)
    {
        var comparer = Comparer<ServicePortName>.Default;
        if (!ReferenceEquals(previous.KeyComparer, comparer) || !ReferenceEquals(current.KeyComparer, comparer))
        {
            // Maps sorted some other way: a sorted union of the names, in the default order.
            foreach (var name in new SortedSet<ServicePortName>(previous.Keys.Concat(current.Keys)))
            {
                var (before, after) = (previous.GetValueOrDefault(name), current.GetValueOrDefault(name));
                if (!ReferenceEquals(before, after)) yield return (name, before, after);
            }
            yield break;
        }
        using var left = previous.GetEnumerator();
        using var right = current.GetEnumerator();
        var hasLeft = left.MoveNext();
        var hasRight = right.MoveNext();
        while (hasLeft || hasRight)
        {
            var order = !hasLeft ? 1 : !hasRight ? -1 : comparer.Compare(left.Current.Key, right.Current.Key);
            if (order < 0)
            {
                yield return (left.Current.Key, left.Current.Value, null);
                hasLeft = left.MoveNext();
            }
            else if (order > 0)
            {
                yield return (right.Current.Key, null, right.Current.Value);
                hasRight = right.MoveNext();
            }
            else
            {
                if (!ReferenceEquals(left.Current.Value, right.Current.Value)) yield return (left.Current.Key, left.Current.Value, right.Current.Value);
                hasLeft = left.MoveNext();
                hasRight = right.MoveNext();
            }
        }
    }

    /// <summary>One service port in both families (UDP and SCTP only).</summary>
    private static void PlanPort(ServicePortName name, ServicePortState? before, ServicePortState? after, List<ConntrackDeletion> planned)
    {
        if (name.Protocol is not (Protocol.UDP or Protocol.SCTP)) return;
        foreach (var family in Families)
            PlanPort(name, family, before, after, planned);
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
