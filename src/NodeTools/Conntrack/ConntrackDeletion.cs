using System.Net;
using ProxyPlanes.Model;

namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>Why a conntrack deletion was planned.</summary>
public enum ConntrackDeletionReason
{
    /// <summary>An endpoint left the service port: flows DNATed to it talk to nothing.</summary>
    EndpointRemoved,

    /// <summary>The service port went from no endpoints to some: its flows were rejected or dropped until now.</summary>
    ServiceNewlyActive,

    /// <summary>The frontend is gone (service port removed, or the IP or port taken off it).</summary>
    FrontendRemoved,
}

/// <summary>
/// One <c>conntrack -D</c>: delete the flows of <see cref="Protocol"/> and <see cref="Family"/> whose original
/// destination is <see cref="OriginalDestination"/>:<see cref="OriginalDestinationPort"/> and, when
/// <see cref="ReplySource"/> is set, whose reply comes from <see cref="ReplySource"/>:<see cref="ReplySourcePort"/>
/// (the endpoint the flow was DNATed to).
/// </summary>
/// <param name="OriginalDestination">The frontend address; null for a node port, which matches on the port alone (any local address).</param>
/// <param name="ReplySourcePort">The endpoint port; 0 when <paramref name="ReplySource"/> is null.</param>
public sealed record ConntrackDeletion(
    ServicePortName ServicePort,
    ConntrackDeletionReason Reason,
    Protocol Protocol,
    IpFamily Family,
    IPAddress? OriginalDestination,
    int OriginalDestinationPort,
    IPAddress? ReplySource = null,
    int ReplySourcePort = 0)
{
    /// <summary>Deletes every flow to a frontend (the whole frontend, not one endpoint's flows).</summary>
    public bool IsWholeFrontend => ReplySource is null;

    public override string ToString()
    {
        var frontend = OriginalDestination is null
            ? $"node port {OriginalDestinationPort} ({Family})"
            : Format(OriginalDestination, OriginalDestinationPort);
        var reply = ReplySource is null ? "" : $" reply-src {Format(ReplySource, ReplySourcePort)}";
        return $"{Protocol.ToString().ToLowerInvariant()} {frontend}{reply} ({ServicePort}, {Reason})";
    }

    private static string Format(IPAddress address, int port) =>
        address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]:{port}" : $"{address}:{port}";
}
