namespace ProxyPlanes.Model;

/// <summary>What a data plane does with a new connection of one kind of traffic.</summary>
public enum TrafficAction
{
    /// <summary>Spread it over <see cref="TrafficVerdict.Endpoints"/> (never empty).</summary>
    Forward,

    /// <summary>
    /// Drop it: endpoints exist, but a Local traffic policy keeps them away from this node's traffic
    /// (the client may retry through another node).
    /// </summary>
    Drop,

    /// <summary>Refuse it at once (ICMP port unreachable → connection refused): nothing can serve.</summary>
    Reject,
}

/// <summary>
/// The two endpoint lists a service port may spread over. A data plane builds one spread per pool
/// in use (iptables: <c>KUBE-SVC-*</c> and <c>KUBE-SVL-*</c>), and verdicts name the pool they use,
/// so traffic sent to the same pool shares it.
/// </summary>
public enum EndpointPool
{
    /// <summary>No pool: the verdict drops or rejects.</summary>
    None,

    /// <summary><see cref="ServicePortVerdict.ClusterEndpoints"/>: any node's endpoints.</summary>
    Cluster,

    /// <summary><see cref="ServicePortVerdict.LocalEndpoints"/>: this node's endpoints.</summary>
    Local,
}

/// <summary>What happens to one kind of traffic: forwarded to a pool of endpoints, dropped, or rejected.</summary>
public readonly record struct TrafficVerdict(TrafficAction Action, EndpointPool Pool, EquatableArray<EndpointInfo> Endpoints)
{
    public static TrafficVerdict Reject => new(TrafficAction.Reject, EndpointPool.None, EquatableArray<EndpointInfo>.Empty);
    public static TrafficVerdict Drop => new(TrafficAction.Drop, EndpointPool.None, EquatableArray<EndpointInfo>.Empty);

    public static TrafficVerdict Forward(EndpointPool pool, EquatableArray<EndpointInfo> endpoints) => new(TrafficAction.Forward, pool, endpoints);

    public bool IsForward => Action == TrafficAction.Forward;
}

/// <summary>Which sources reaching a cluster IP are masqueraded (so replies come back through this node).</summary>
public enum SourceMasquerade
{
    /// <summary>None: the traffic is not forwarded, or nothing tells pod traffic apart on this node.</summary>
    None,

    /// <summary>Sources that are not this cluster's pods (the node's local-traffic detector tells which are).</summary>
    OffClusterSources,

    /// <summary>Every source (<c>--masquerade-all</c>).</summary>
    AllSources,
}

/// <summary>
/// Which local sources reaching an external destination (node port, external or load-balancer IP)
/// of an <c>externalTrafficPolicy: Local</c> service are short-circuited to
/// <see cref="ServicePortVerdict.ClusterEndpoints"/>, as if they had gone out to the load balancer
/// and come back. The node's own traffic is masqueraded on the way (its source may be the VIP itself).
/// </summary>
public enum LocalShortCircuit
{
    /// <summary>No short-circuit: external policy Cluster, or nothing to short-circuit to.</summary>
    None,

    /// <summary>The node's own traffic only (no local-traffic detector for this family tells pods apart).</summary>
    Node,

    /// <summary>This cluster's pods (by the node's local-traffic detector) and the node's own traffic.</summary>
    PodsAndNode,
}

/// <summary>
/// Everything a data plane needs to render one service port in one IP family, decided once in Core
/// (<see cref="EndpointCategorizer.Decide"/>) from the traffic policies, the categorized endpoints
/// and the node network. A data plane translates these and never reads the traffic policies itself.
/// </summary>
public sealed record ServicePortVerdict
{
    public required IpFamily Family { get; init; }

    /// <summary>Traffic from pods and the node to the cluster IP (internalTrafficPolicy).</summary>
    public required TrafficVerdict InternalTraffic { get; init; }

    /// <summary>Which sources of forwarded cluster-IP traffic are masqueraded; <see cref="SourceMasquerade.None"/> unless forwarded.</summary>
    public SourceMasquerade InternalMasquerade { get; init; }

    /// <summary>Traffic to node ports, external IPs and load-balancer IPs (externalTrafficPolicy).</summary>
    public required TrafficVerdict ExternalTraffic { get; init; }

    /// <summary>
    /// External traffic is masqueraded (externalTrafficPolicy Cluster: the endpoint may be on another
    /// node, and its reply must come back here). False keeps the client's source address.
    /// </summary>
    public bool ExternalMasquerade { get; init; }

    /// <summary>externalTrafficPolicy Local: which local sources of external traffic go to <see cref="ClusterEndpoints"/> instead.</summary>
    public LocalShortCircuit LocalShortCircuit { get; init; }

    /// <summary>The <see cref="EndpointPool.Cluster"/> pool; empty when no traffic uses it.</summary>
    public EquatableArray<EndpointInfo> ClusterEndpoints { get; init; } = EquatableArray<EndpointInfo>.Empty;

    /// <summary>The <see cref="EndpointPool.Local"/> pool; empty when no traffic uses it.</summary>
    public EquatableArray<EndpointInfo> LocalEndpoints { get; init; } = EquatableArray<EndpointInfo>.Empty;

    /// <summary>
    /// Every endpoint any traffic may be sent to (the union of the pools): the endpoints a data plane
    /// must be able to DNAT to. Each masquerades traffic from its own address (hairpin: a pod reaching
    /// itself through the service), or its reply would skip the un-DNAT.
    /// </summary>
    public EquatableArray<EndpointInfo> Endpoints { get; init; } = EquatableArray<EndpointInfo>.Empty;

    /// <summary>ClientIP session affinity: how long a client stays on its endpoint; null without affinity.</summary>
    public int? AffinityTimeoutSeconds { get; init; }

    /// <summary>loadBalancerSourceRanges of this family: the only sources the load-balancer IPs accept (empty: any).</summary>
    public EquatableArray<IpPrefix> SourceRanges { get; init; } = EquatableArray<IpPrefix>.Empty;

    /// <summary>
    /// A source range holds one of this node's IPs: the node's own requests to its load-balancer IPs,
    /// which loop back with the load-balancer IP as their source, are accepted too (kube-proxy's allowance).
    /// </summary>
    public bool SourceRangesAllowNode { get; init; }

    /// <summary>The endpoints of a pool.</summary>
    public EquatableArray<EndpointInfo> EndpointsOf(EndpointPool pool) => pool switch
    {
        EndpointPool.Cluster => ClusterEndpoints,
        EndpointPool.Local => LocalEndpoints,
        _ => EquatableArray<EndpointInfo>.Empty,
    };
}
