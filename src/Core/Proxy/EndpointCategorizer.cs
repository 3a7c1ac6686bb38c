using System.Collections.Immutable;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// Decides, once for every data plane, which endpoints serve which traffic: the traffic
/// policies, the fallback to serving-but-terminating endpoints, and topology hints; and from
/// that, per IP family, the verdicts a data plane renders (<see cref="Decide"/>). The semantics
/// are kube-proxy's (pkg/proxy/topology.go and the proxiers), so behaviour carries over between proxies.
/// </summary>
public static class EndpointCategorizer
{
    /// <summary>Cluster traffic uses cluster-wide endpoints unless internal policy is Local,
    /// and external traffic always needs them (to short-circuit traffic from inside the cluster).</summary>
    public static bool UsesClusterEndpoints(ServicePortInfo service) => !service.InternalPolicyLocal || service.HasExternalFrontends;

    public static bool UsesLocalEndpoints(ServicePortInfo service) => service.InternalPolicyLocal || service.ExternalPolicyLocal;

    /// <summary>
    /// Categorizes each IP family's endpoints on its own, as a per-family proxier would, and decides
    /// each family's verdicts against <paramref name="network"/> (null: a node network with no
    /// local-traffic detector, no node IPs and no masquerade-all; see <see cref="Decided(ServicePortInfo, EndpointSet, EndpointSet, NodeNetwork?)"/>).
    /// Node hints are matched against the network's <see cref="NodeNetwork.NodeName"/> (none without a network).
    /// </summary>
    public static ServicePortState CategorizeByFamily(ServicePortInfo service, IReadOnlyList<EndpointInfo> endpoints, string? nodeZone, NodeNetwork? network = null) =>
        CategorizeByFamily(service, AsImmutableArray(endpoints), nodeZone, network);

    /// <inheritdoc cref="CategorizeByFamily(ServicePortInfo, IReadOnlyList{EndpointInfo}, string?, NodeNetwork?)"/>
    /// <remarks>
    /// The controller's path: a single-family list is not split, and a pool that keeps every endpoint of a
    /// sorted list is that list (the tracker's array), not a copy.
    /// </remarks>
    internal static ServicePortState CategorizeByFamily(ServicePortInfo service, ImmutableArray<EndpointInfo> endpoints, string? nodeZone, NodeNetwork? network = null)
    {
        var ipv4Count = 0;
        foreach (var endpoint in endpoints)
            if (endpoint.Family == IpFamily.IPv4) ipv4Count++;
        var ipv4 = ipv4Count == endpoints.Length ? endpoints : endpoints.Where(e => e.Family == IpFamily.IPv4).ToImmutableArray();
        var ipv6 = ipv4Count == 0 ? endpoints : ipv4Count == endpoints.Length ? [] : endpoints.Where(e => e.Family == IpFamily.IPv6).ToImmutableArray();
        var nodeName = network?.NodeName;
        return Decided(
            service,
            Categorize(service, ipv4, nodeZone, nodeName),
            ipv6.IsEmpty ? EndpointSet.Empty : Categorize(service, ipv6, nodeZone, nodeName),
            network);
    }

    private static ImmutableArray<EndpointInfo> AsImmutableArray(IReadOnlyList<EndpointInfo> endpoints) => endpoints switch
    {
        EquatableArray<EndpointInfo> array => array.AsImmutableArray(),
        ImmutableArray<EndpointInfo> array => array.IsDefault ? [] : array,
        _ => [.. endpoints],
    };

    private static readonly NodeNetwork NoNetwork = new();

    /// <summary>
    /// A state whose verdicts are decided here, once, against <paramref name="network"/> (masquerade-all,
    /// the local-traffic detector, the node's IPs). Null: a node network with none of them; a state that
    /// a data plane renders must be decided against the <see cref="DesiredState.Network"/> it goes with.
    /// </summary>
    public static ServicePortState Decided(ServicePortInfo service, EndpointSet ipv4Endpoints, EndpointSet ipv6Endpoints, NodeNetwork? network = null) =>
        new(service, ipv4Endpoints, ipv6Endpoints,
            DecideOrShare(service, ipv4Endpoints, IpFamily.IPv4, network ?? NoNetwork),
            DecideOrShare(service, ipv6Endpoints, IpFamily.IPv6, network ?? NoNetwork));

    /// <summary>
    /// <see cref="Decide"/>, except that a family without endpoints (<see cref="EndpointSet.Empty"/>, the other family
    /// of every single-stack port) of a port without affinity and source ranges gets one of four shared verdicts:
    /// the verdict then depends on the family and the external policy only, and 10,000s of ports need not each keep one.
    /// </summary>
    internal static ServicePortVerdict DecideOrShare(ServicePortInfo service, EndpointSet endpoints, IpFamily family, NodeNetwork network) =>
        ReferenceEquals(endpoints, EndpointSet.Empty) && service.StickyTimeoutSeconds is null && service.LoadBalancerSourceRanges.IsEmpty
            ? NoEndpointVerdicts[(family == IpFamily.IPv6 ? 2 : 0) + (service.ExternalPolicyLocal ? 1 : 0)]
            : Decide(service, endpoints, family, network);

    // Decided by Decide itself, so they cannot drift from it: IPv4 (Cluster, Local policy), then IPv6.
    private static readonly ServicePortVerdict[] NoEndpointVerdicts =
    [
        .. from family in new[] { IpFamily.IPv4, IpFamily.IPv6 }
           from externalLocal in new[] { false, true }
           select Decide(
               new ServicePortInfo { Name = default, Port = 1, ClusterIPs = EquatableArray<System.Net.IPAddress>.Empty, ExternalPolicyLocal = externalLocal },
               EndpointSet.Empty, family, NoNetwork),
    ];

    /// <summary>A single-family state: <paramref name="endpoints"/> belong to the service's primary family.</summary>
    public static ServicePortState Decided(ServicePortInfo service, EndpointSet endpoints) =>
        ServicePortState.PrimaryFamilyOf(service) == IpFamily.IPv4
            ? Decided(service, endpoints, EndpointSet.Empty)
            : Decided(service, EndpointSet.Empty, endpoints);

    /// <summary>
    /// The verdicts of one service port in one family, from its categorized endpoints of that family:
    /// <list type="bullet">
    /// <item>No endpoint anywhere can serve: both kinds of traffic are rejected.</item>
    /// <item>Otherwise each kind of traffic is forwarded to its policy's pool (Cluster: any node's
    /// endpoints; Local: this node's), or dropped when a Local policy finds none here.</item>
    /// <item>Forwarded cluster-IP traffic from off-cluster sources is masqueraded (every source
    /// with masquerade-all); so is external traffic under policy Cluster. Under policy Local the
    /// client's source is kept, and pods and the node are short-circuited to the Cluster pool.</item>
    /// </list>
    /// </summary>
    public static ServicePortVerdict Decide(ServicePortInfo service, EndpointSet endpoints, IpFamily family, NodeNetwork network)
    {
        var cluster = endpoints.Cluster;
        var local = endpoints.Local;
        // Some endpoint can serve this family's traffic; without one, traffic is refused.
        var hasEndpoints = endpoints.HasAnyEndpoints && !endpoints.AllReachable.IsEmpty;

        TrafficVerdict VerdictOf(bool policyLocal)
        {
            if (!hasEndpoints) return TrafficVerdict.Reject;
            var (pool, poolEndpoints) = policyLocal ? (EndpointPool.Local, local) : (EndpointPool.Cluster, cluster);
            return poolEndpoints.IsEmpty ? TrafficVerdict.Drop : TrafficVerdict.Forward(pool, poolEndpoints);
        }

        var internalTraffic = VerdictOf(service.InternalPolicyLocal);
        var podsDetected = network.LocalDetector.IsImplemented(family);
        var internalMasquerade = !internalTraffic.IsForward ? SourceMasquerade.None
            : network.MasqueradeAll ? SourceMasquerade.AllSources
            : podsDetected ? SourceMasquerade.OffClusterSources
            : SourceMasquerade.None;
        var shortCircuit = !service.ExternalPolicyLocal || !hasEndpoints || cluster.IsEmpty ? LocalShortCircuit.None
            : podsDetected ? LocalShortCircuit.PodsAndNode
            : LocalShortCircuit.Node;

        var sourceRanges = EquatableArray<IpPrefix>.Empty;
        var allowNode = false;
        if (!service.LoadBalancerSourceRanges.IsEmpty)
        {
            sourceRanges = new EquatableArray<IpPrefix>(service.LoadBalancerSourceRanges.Where(r => r.Family == family));
            // A load-balancer IP is often local to the node (VIP-like): the node's own request to it
            // loops back with that IP as its source, and must pass when the node itself is allowed.
            allowNode = sourceRanges.Any(r => network.NodeIPs.Any(r.Contains));
        }

        return new ServicePortVerdict
        {
            Family = family,
            InternalTraffic = internalTraffic,
            InternalMasquerade = internalMasquerade,
            ExternalTraffic = VerdictOf(service.ExternalPolicyLocal),
            ExternalMasquerade = !service.ExternalPolicyLocal,
            LocalShortCircuit = shortCircuit,
            ClusterEndpoints = cluster,
            LocalEndpoints = local,
            Endpoints = endpoints.AllReachable,
            AffinityTimeoutSeconds = service.StickyTimeoutSeconds,
            SourceRanges = sourceRanges,
            SourceRangesAllowNode = allowNode,
        };
    }

    /// <summary>
    /// The endpoints of one service port (of one family) that cluster traffic and node-local traffic
    /// may use on the node <paramref name="nodeName"/> in zone <paramref name="nodeZone"/>. Topology
    /// hints narrow only the cluster endpoints (<see cref="TopologyModeFromHints"/>); a Local policy
    /// already keeps traffic on this node, so its endpoints ignore hints, as in kube-proxy.
    /// </summary>
    public static EndpointSet Categorize(ServicePortInfo service, IReadOnlyList<EndpointInfo> endpoints, string? nodeZone, string? nodeName = null) =>
        Categorize(service, AsImmutableArray(endpoints), nodeZone, nodeName);

    private static EndpointSet Categorize(ServicePortInfo service, ImmutableArray<EndpointInfo> endpoints, string? nodeZone, string? nodeName)
    {
        var cluster = ImmutableArray<EndpointInfo>.Empty;
        var local = ImmutableArray<EndpointInfo>.Empty;
        var hasAny = false;
        var topology = TrafficDistribution.Default;

        if (UsesClusterEndpoints(service))
        {
            topology = TopologyModeFromHints(endpoints, nodeName, nodeZone);
            cluster = Filter(endpoints, Pick.ReadyForTopology, topology, nodeName, nodeZone);
            // With nothing ready anywhere, keep serving through endpoints that are terminating
            // but still serving, rather than dropping connections during a rollout. (Topology
            // already fell back to cluster-wide when no ready endpoint was hinted for here.)
            if (cluster.IsEmpty) cluster = Filter(endpoints, Pick.ServingTerminating);
            hasAny = !cluster.IsEmpty;
        }

        if (!UsesLocalEndpoints(service))
            return new EndpointSet(cluster, cluster, local) { HasAnyEndpoints = hasAny };

        var hasLocalReady = false;
        var hasLocalServingTerminating = false;
        foreach (var ep in endpoints)
        {
            if (ep.Ready) { hasAny = true; hasLocalReady |= ep.IsLocal; }
            else if (ep.Serving && ep.Terminating) { hasAny = true; hasLocalServingTerminating |= ep.IsLocal; }
        }
        var useServingTerminating = false;
        if (hasLocalReady) local = Filter(endpoints, Pick.LocalReady);
        else if (hasLocalServingTerminating)
        {
            useServingTerminating = true;
            local = Filter(endpoints, Pick.LocalServingTerminating);
        }

        if (!UsesClusterEndpoints(service))
            return new EndpointSet(local, cluster, local) { HasAnyEndpoints = hasAny };
        // Local endpoints are a subset of the cluster ones unless topology or the terminating
        // fallback narrowed one of the two sets differently.
        var all = topology == TrafficDistribution.Default && !useServingTerminating
            ? cluster
            : cluster.Concat(local).Distinct().Order().ToImmutableArray();
        return new EndpointSet(all, cluster, local) { HasAnyEndpoints = hasAny };
    }

    /// <summary>
    /// The topology mode the hints of a service port's ready endpoints select on this node: kube-proxy's
    /// <c>topologyModeFromHints</c>. Hints are used only when they are safe, that is when the slice
    /// controller hinted the whole service (every ready endpoint carries hints of that kind) and at least
    /// one endpoint is hinted for here, so a half-hinted service or one whose hints skip this node never
    /// loses endpoints:
    /// <list type="bullet">
    /// <item><see cref="TrafficDistribution.PreferSameNode"/>: every ready endpoint has node hints and one names <paramref name="nodeName"/>;</item>
    /// <item>otherwise <see cref="TrafficDistribution.PreferSameZone"/>: every ready endpoint has zone hints and one names <paramref name="nodeZone"/>
    /// (the controller also writes zone hints for PreferSameNode, so that is its fallback);</item>
    /// <item>otherwise <see cref="TrafficDistribution.Default"/>: every endpoint, cluster-wide.</item>
    /// </list>
    /// The service's own <c>trafficDistribution</c> is not consulted: the hints carry it.
    /// </summary>
    public static TrafficDistribution TopologyModeFromHints(IReadOnlyList<EndpointInfo> endpoints, string? nodeName, string? nodeZone) =>
        TopologyModeFromHints(AsImmutableArray(endpoints), nodeName, nodeZone);

    private static TrafficDistribution TopologyModeFromHints(ImmutableArray<EndpointInfo> endpoints, string? nodeName, string? nodeZone)
    {
        var hasReadyEndpoints = false;
        var allHaveNodeHints = true;
        var hasEndpointForNode = false;
        var allHaveZoneHints = true;
        var hasEndpointForZone = false;
        foreach (var ep in endpoints)
        {
            if (!ep.Ready) continue;
            hasReadyEndpoints = true;
            if (ep.NodeHints is not { Count: > 0 } nodeHints) allHaveNodeHints = false;
            else hasEndpointForNode |= HintsName(nodeHints, nodeName);
            if (ep.ZoneHints is not { Count: > 0 } zoneHints) allHaveZoneHints = false;
            else hasEndpointForZone |= HintsName(zoneHints, nodeZone);
        }
        if (!hasReadyEndpoints) return TrafficDistribution.Default;
        if (allHaveNodeHints && hasEndpointForNode) return TrafficDistribution.PreferSameNode;
        if (allHaveZoneHints && hasEndpointForZone) return TrafficDistribution.PreferSameZone;
        return TrafficDistribution.Default;
    }

    /// <summary>Whether an endpoint may serve this node under a topology mode. No fallback here: it was decided with the mode.</summary>
    private static bool IsAvailableForTopology(EndpointInfo endpoint, TrafficDistribution topology, string? nodeName, string? nodeZone) => topology switch
    {
        TrafficDistribution.PreferSameNode => endpoint.NodeHints is { } hints && HintsName(hints, nodeName),
        TrafficDistribution.PreferSameZone => endpoint.ZoneHints is { } hints && HintsName(hints, nodeZone),
        _ => true,
    };

    /// <summary>A node without a name or zone label matches no hint (the conversion drops empty hint names).</summary>
    private static bool HintsName(EquatableArray<string> hints, string? name) => !string.IsNullOrEmpty(name) && hints.Contains(name);

    /// <summary>Which endpoints a pool takes (an enum, not a lambda: no closure per port and pool).</summary>
    private enum Pick { ReadyForTopology, ServingTerminating, LocalReady, LocalServingTerminating }

    private static bool Picks(EndpointInfo ep, Pick pick, TrafficDistribution topology, string? nodeName, string? nodeZone) => pick switch
    {
        Pick.ReadyForTopology => ep.Ready && IsAvailableForTopology(ep, topology, nodeName, nodeZone),
        Pick.ServingTerminating => ep.Serving && ep.Terminating,
        Pick.LocalReady => ep.IsLocal && ep.Ready,
        _ => ep.IsLocal && ep.Serving && ep.Terminating,
    };

    /// <summary>
    /// The endpoints <paramref name="pick"/> selects, sorted. When it keeps them all and they are sorted
    /// already (the tracker's arrays are), the array itself: pools and verdicts share the tracker's arrays.
    /// </summary>
    private static ImmutableArray<EndpointInfo> Filter(
        ImmutableArray<EndpointInfo> endpoints, Pick pick, TrafficDistribution topology = TrafficDistribution.Default, string? nodeName = null, string? nodeZone = null)
    {
        var keepsAll = true;
        for (var i = 0; i < endpoints.Length && keepsAll; i++)
            keepsAll = Picks(endpoints[i], pick, topology, nodeName, nodeZone) && (i == 0 || endpoints[i - 1].CompareTo(endpoints[i]) <= 0);
        if (keepsAll) return endpoints;
        var builder = ImmutableArray.CreateBuilder<EndpointInfo>();
        foreach (var ep in endpoints) if (Picks(ep, pick, topology, nodeName, nodeZone)) builder.Add(ep);
        builder.Sort();
        return builder.ToImmutable();
    }
}
