namespace ProxyPlanes.Model;

/// <summary>The Kubernetes labels and annotations a service proxy reads (k8s.io/api well_known_labels.go, discovery).</summary>
public static class WellKnownLabels
{
    /// <summary>Set on a Service another proxy handles: kube-proxy (and we) leave it alone.</summary>
    public const string ServiceProxyName = "service.kubernetes.io/service-proxy-name";

    /// <summary>Set on the EndpointSlices of a headless Service.</summary>
    public const string Headless = "service.kubernetes.io/headless";

    /// <summary>An EndpointSlice's Service.</summary>
    public const string ServiceName = "kubernetes.io/service-name";

    public const string TopologyZone = "topology.kubernetes.io/zone";

    /// <summary>The cluster autoscaler's taint on a node it is about to delete.</summary>
    public const string ToBeDeletedByClusterAutoscaler = "ToBeDeletedByClusterAutoscaler";

    /// <summary>When the change an EndpointSlice carries was triggered (network programming latency starts there).</summary>
    public const string LastChangeTriggerTime = "endpoints.kubernetes.io/last-change-trigger-time";
}
