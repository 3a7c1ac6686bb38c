using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The tc programs' connection entries (<c>pp_ct4_v1</c>) a sync left stale, by the same verdict the other modes
/// hand to <c>conntrack -D</c> (<see cref="StaleConntrackPlanner"/>: UDP and SCTP only; an endpoint gone, a frontend
/// gone, a service port that got its first endpoints). tc ingress keeps every later packet of a flow on the backend
/// its FORWARD entry names, whatever the service maps say, so a client reusing its source port would talk to a gone
/// backend (or stay refused) until the LRU evicts the entry; deleting the entry makes its next packet a new
/// connection. Both directions of a connection match: FORWARD by its destination (the frontend) and value (the
/// backend), REPLY by its value (the frontend) and source (the backend).
/// </summary>
public static class StaleConnections
{
    /// <summary>The deletions that concern the IPv4 connection map (the only family layout 1 holds).</summary>
    public static IReadOnlyList<ConntrackDeletion> ForIPv4(IReadOnlyList<ConntrackDeletion> deletions) =>
        [.. deletions.Where(d => d.Family == IpFamily.IPv4)];

    /// <summary>Whether the connection entry <paramref name="key"/> → <paramref name="value"/> is one <paramref name="deletion"/> deletes.</summary>
    public static bool Matches(in Ct4Key key, in Ct4Value value, ConntrackDeletion deletion)
    {
        ArgumentNullException.ThrowIfNull(deletion);
        if (deletion.Family != IpFamily.IPv4 || key.Proto != (byte)EbpfPlanner.ProtocolNumber(deletion.Protocol)) return false;
        var forward = key.Direction == MapLayout.ConnectionForward;
        var (frontendAddress, frontendPort) = forward ? (key.Daddr, key.Dport) : (value.Address, value.Port);
        var (backendAddress, backendPort) = forward ? (value.Address, value.Port) : (key.Saddr, key.Sport);

        if (frontendPort != MapLayout.NetworkPort(deletion.OriginalDestinationPort)) return false;
        // A node port (no address): any node address, as conntrack -D --dport; the entry says it came through a node port.
        if (deletion.OriginalDestination is { } address
                ? frontendAddress != MapLayout.NetworkAddress(address)
                : (value.Flags & MapLayout.ServiceFlagNodePort) == 0)
            return false;
        return deletion.ReplySource is not { } endpoint ||
            (backendAddress == MapLayout.NetworkAddress(endpoint) && backendPort == MapLayout.NetworkPort(deletion.ReplySourcePort));
    }

    /// <summary>
    /// Deletes from <paramref name="connections"/> (a <c>pp_ct4_v1</c>) every entry one of <paramref name="deletions"/>
    /// matches, and returns how many it deleted. The keys are read first and deleted after, as deleting the key a
    /// GET_NEXT_KEY walk stands on restarts the walk. An entry the LRU evicted meanwhile is not counted.
    /// </summary>
    public static int Delete(BpfMap connections, IReadOnlyList<ConntrackDeletion> deletions)
    {
        ArgumentNullException.ThrowIfNull(connections);
        var ours = ForIPv4(deletions);
        if (ours.Count == 0) return 0;
        var stale = new List<Ct4Key>();
        foreach (var key in connections.Keys<Ct4Key>())
        {
            if (!connections.TryLookup(key, out Ct4Value value)) continue;
            foreach (var deletion in ours)
            {
                if (!Matches(key, value, deletion)) continue;
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
