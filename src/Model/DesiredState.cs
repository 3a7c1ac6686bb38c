using System.Collections.Immutable;
using System.Net;

namespace ProxyPlanes.Model;

/// <summary>
/// One service port with the endpoints policy lets each kind of traffic use, per IP family
/// (as kube-proxy runs one proxier per family, each family is categorized on its own), and the
/// verdicts decided from them: what a data plane renders (<see cref="VerdictFor"/>).
/// </summary>
public sealed record ServicePortState
{
    /// <summary>
    /// A state with its verdicts, as Core's policy decided them (<c>EndpointCategorizer.Decided</c>
    /// builds one from the endpoints and the node network): the model carries decisions, it makes none.
    /// </summary>
    public ServicePortState(ServicePortInfo info, EndpointSet ipv4Endpoints, EndpointSet ipv6Endpoints, ServicePortVerdict ipv4Verdict, ServicePortVerdict ipv6Verdict)
    {
        Info = info;
        IPv4Endpoints = ipv4Endpoints;
        IPv6Endpoints = ipv6Endpoints;
        IPv4Verdict = ipv4Verdict;
        IPv6Verdict = ipv6Verdict;
    }

    public ServicePortInfo Info { get; }
    public EndpointSet IPv4Endpoints { get; }
    public EndpointSet IPv6Endpoints { get; }

    /// <summary>What a data plane does with this port's IPv4 traffic.</summary>
    public ServicePortVerdict IPv4Verdict { get; }

    /// <summary>What a data plane does with this port's IPv6 traffic.</summary>
    public ServicePortVerdict IPv6Verdict { get; }

    public ServicePortName Name => Info.Name;

    /// <summary>The family of the service's first cluster IP.</summary>
    public IpFamily PrimaryFamily => PrimaryFamilyOf(Info);

    /// <summary>The endpoints of the primary family.</summary>
    public EndpointSet Endpoints => EndpointsFor(PrimaryFamily);

    public EndpointSet EndpointsFor(IpFamily family) => family == IpFamily.IPv4 ? IPv4Endpoints : IPv6Endpoints;

    /// <summary>The verdicts of one family: everything a data plane renders for this port in that family.</summary>
    public ServicePortVerdict VerdictFor(IpFamily family) => family == IpFamily.IPv4 ? IPv4Verdict : IPv6Verdict;

    /// <summary>The family of a service's first cluster IP (IPv4 when it has none).</summary>
    public static IpFamily PrimaryFamilyOf(ServicePortInfo info) =>
        info.ClusterIPs.IsEmpty ? IpFamily.IPv4 : NodeAddresses.FamilyOf(info.ClusterIPs[0]);
}

/// <summary>How to tell traffic from this cluster's pods (kube-proxy's --detect-local-mode).</summary>
public enum LocalDetectMode { None, ClusterCidr, NodeCidr, InterfaceNamePrefix, BridgeInterface }

/// <summary>
/// The rule that tells pod traffic from other traffic: by source prefix (the cluster's or this
/// node's pod CIDRs, one per family) or by the interface it arrived on.
/// </summary>
public sealed record LocalTrafficDetector(LocalDetectMode Mode, EquatableArray<IpPrefix> Cidrs, string? Interface = null)
{
    public static LocalTrafficDetector None { get; } = new(LocalDetectMode.None, EquatableArray<IpPrefix>.Empty);

    /// <summary>False when nothing can tell pod traffic apart for this family.</summary>
    public bool IsImplemented(IpFamily family) => Mode switch
    {
        LocalDetectMode.None => false,
        LocalDetectMode.ClusterCidr or LocalDetectMode.NodeCidr => Cidrs.Any(c => c.Family == family),
        _ => !string.IsNullOrEmpty(Interface),
    };
}

/// <summary>
/// What this node's network must look like, independent of how the traffic is steered:
/// how to tell pod traffic from other traffic, and where node ports are open.
/// </summary>
public sealed record NodeNetwork
{
    public string NodeName { get; init; } = "";
    public string? Zone { get; init; }

    /// <summary>How pod traffic is told apart: off-cluster sources reaching a cluster IP are masqueraded.</summary>
    public LocalTrafficDetector LocalDetector { get; init; } = LocalTrafficDetector.None;

    /// <summary>This node's own addresses (the Node's InternalIPs), for load-balancer source ranges.</summary>
    public EquatableArray<IPAddress> NodeIPs { get; init; } = EquatableArray<IPAddress>.Empty;

    public bool MasqueradeAll { get; init; }

    /// <summary>Node addresses that accept node ports; null means every local address.</summary>
    public EquatableArray<IPAddress>? NodePortAddresses { get; init; }
}

/// <summary>
/// The immutable, backend-neutral state every data plane realises. Built incrementally by the
/// controller: a sync replaces only the changed service ports, and a change of <see cref="Network"/>
/// rebuilds them all (their verdicts are decided against it). Data planes render each port's
/// <see cref="ServicePortState.VerdictFor"/> and the node-level settings of <see cref="Network"/>;
/// they never read traffic policies.
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
