using System.Collections.Immutable;
using System.Net;

namespace ProxyPlanes.Core.Proxy;

/// <summary>One service port with the endpoints policy lets each kind of traffic use.</summary>
public sealed record ServicePortState(ServicePortInfo Info, EndpointSet Endpoints)
{
    public ServicePortName Name => Info.Name;
}

/// <summary>
/// What this node's network must look like, independent of how the traffic is steered:
/// how to tell cluster traffic from off-cluster traffic, and where node ports are open.
/// </summary>
public sealed record NodeNetwork
{
    public string NodeName { get; init; } = "";
    public string? Zone { get; init; }

    /// <summary>Pod CIDRs of the cluster: sources outside them are masqueraded (detect-local ClusterCIDR).</summary>
    public EquatableArray<IpPrefix> ClusterCidrs { get; init; } = EquatableArray<IpPrefix>.Empty;

    public bool MasqueradeAll { get; init; }

    /// <summary>Node addresses that accept node ports; null means every local address.</summary>
    public EquatableArray<IPAddress>? NodePortAddresses { get; init; }
}

/// <summary>
/// The immutable, backend-neutral state every data plane realises. Built incrementally by the
/// controller: a sync replaces only the changed service ports.
/// </summary>
public sealed record DesiredState(ImmutableSortedDictionary<ServicePortName, ServicePortState> ServicePorts, NodeNetwork Network)
{
    public static DesiredState Empty { get; } = new(ImmutableSortedDictionary<ServicePortName, ServicePortState>.Empty, new NodeNetwork());
}

/// <summary>
/// One sync handed to a backend. A full sync rewrites everything the backend owns; a partial
/// sync may touch only what belongs to <see cref="ChangedPorts"/> (ports added, changed or
/// removed since the previous sync).
/// </summary>
public sealed record SyncRequest(DesiredState State, bool Full, IReadOnlySet<ServicePortName> ChangedPorts);

/// <summary>How long each phase of a backend's sync took.</summary>
public readonly record struct SyncTimings(TimeSpan Plan, TimeSpan Render, TimeSpan Apply);
