using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The tc programs' connection entries (<c>pp_ct4_v1</c>, <c>pp_ct6_v1</c>) a sync left stale, by the same verdict the other
/// modes hand to <c>conntrack -D</c> (<see cref="StaleConntrackPlanner"/>: UDP and SCTP only; an endpoint gone, a frontend
/// gone, a service port that got its first endpoints). tc ingress keeps every later packet of a flow on the backend
/// its FORWARD entry names, whatever the service maps say, so a client reusing its source port would talk to a gone
/// backend (or stay refused) until the LRU evicts the entry; deleting the entry makes its next packet a new
/// connection. Both directions of a connection match: FORWARD by its destination (the frontend) and value (the
/// backend), REPLY by its value (the frontend) and source (the backend). One matcher serves both families: an IPv4
/// entry is compared as its mapped 16-byte address (::ffff:a.b.c.d), as the service maps hold it.
/// </summary>
public static class StaleConnections
{
    /// <summary>Whether the IPv4 connection entry <paramref name="key"/> → <paramref name="value"/> is one <paramref name="deletion"/> deletes.</summary>
    public static bool Matches(in Ct4Key key, in Ct4Value value, ConntrackDeletion deletion) =>
        Matches(IpFamily.IPv4, key.Proto, key.Direction, MapAddress.Mapped(key.Saddr), key.Sport, MapAddress.Mapped(key.Daddr), key.Dport,
            MapAddress.Mapped(value.Address), value.Port, value.Flags, deletion);

    /// <summary>Whether the IPv6 connection entry <paramref name="key"/> → <paramref name="value"/> is one <paramref name="deletion"/> deletes.</summary>
    public static bool Matches(in Ct6Key key, in Ct6Value value, ConntrackDeletion deletion) =>
        Matches(IpFamily.IPv6, key.Proto, key.Direction, key.Saddr, key.Sport, key.Daddr, key.Dport, value.Address, value.Port, value.Flags, deletion);

    private static bool Matches(IpFamily family, byte proto, byte direction, MapAddress saddr, ushort sport, MapAddress daddr, ushort dport,
        MapAddress address, ushort port, ushort flags, ConntrackDeletion deletion)
    {
        ArgumentNullException.ThrowIfNull(deletion);
        if (deletion.Family != family || proto != (byte)EbpfPlanner.ProtocolNumber(deletion.Protocol)) return false;
        var forward = direction == MapLayout.ConnectionForward;
        var (frontendAddress, frontendPort) = forward ? (daddr, dport) : (address, port);
        var (backendAddress, backendPort) = forward ? (address, port) : (saddr, sport);

        if (frontendPort != MapLayout.NetworkPort(deletion.OriginalDestinationPort)) return false;
        // A node port (no address): any node address, as conntrack -D --dport; the entry says it came through a node port.
        if (deletion.OriginalDestination is { } destination
                ? frontendAddress != MapAddress.For(destination)
                : (flags & MapLayout.ServiceFlagNodePort) == 0)
            return false;
        return deletion.ReplySource is not { } endpoint ||
            (backendAddress == MapAddress.For(endpoint) && backendPort == MapLayout.NetworkPort(deletion.ReplySourcePort));
    }

    /// <summary>
    /// Deletes from <paramref name="connections"/> (a <c>pp_ct4_v1</c>) every entry one of the IPv4 <paramref name="deletions"/>
    /// matches, and returns how many it deleted.
    /// </summary>
    public static int Delete(BpfMap connections, IReadOnlyList<ConntrackDeletion> deletions) =>
        Delete<Ct4Key, Ct4Value>(connections, deletions, IpFamily.IPv4, static (in Ct4Key k, in Ct4Value v, ConntrackDeletion d) => Matches(k, v, d));

    /// <summary>As <see cref="Delete"/>, from <paramref name="connections6"/> (a <c>pp_ct6_v1</c>) for the IPv6 <paramref name="deletions"/>.</summary>
    public static int Delete6(BpfMap connections6, IReadOnlyList<ConntrackDeletion> deletions) =>
        Delete<Ct6Key, Ct6Value>(connections6, deletions, IpFamily.IPv6, static (in Ct6Key k, in Ct6Value v, ConntrackDeletion d) => Matches(k, v, d));

    private delegate bool Matcher<TKey, TValue>(in TKey key, in TValue value, ConntrackDeletion deletion);

    /// <summary>
    /// The keys are read first and deleted after, as deleting the key a GET_NEXT_KEY walk stands on restarts the walk.
    /// An entry the LRU evicted meanwhile is not counted. No deletion of the family: the map is not walked.
    /// </summary>
    private static int Delete<TKey, TValue>(BpfMap connections, IReadOnlyList<ConntrackDeletion> deletions, IpFamily family, Matcher<TKey, TValue> matches)
        where TKey : unmanaged
        where TValue : unmanaged
    {
        ArgumentNullException.ThrowIfNull(connections);
        ArgumentNullException.ThrowIfNull(deletions);
        var ours = deletions.Where(d => d.Family == family).ToList();
        if (ours.Count == 0) return 0;
        var stale = new List<TKey>();
        foreach (var key in connections.Keys<TKey>())
        {
            if (!connections.TryLookup(key, out TValue value)) continue;
            foreach (var deletion in ours)
            {
                if (!matches(key, value, deletion)) continue;
                stale.Add(key);
                break;
            }
        }
        var deleted = 0;
        foreach (var key in stale)
            if (connections.Delete(key)) deleted++;
        return deleted;
    }
}
