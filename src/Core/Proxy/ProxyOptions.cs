using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>The validated settings of the shared control loop (flags and config file land here).</summary>
public sealed record ProxyOptions
{
    /// <summary>This node's name (--hostname-override, else the machine's host name).</summary>
    public required string HostName { get; init; }

    public EquatableArray<IpPrefix> ClusterCidrs { get; init; } = EquatableArray<IpPrefix>.Empty;

    /// <summary>--detect-local-mode; ClusterCidr by default (None when no --cluster-cidr is given).</summary>
    public LocalDetectMode DetectLocalMode { get; init; } = LocalDetectMode.ClusterCidr;

    /// <summary>--pod-interface-name-prefix (InterfaceNamePrefix mode) or --pod-bridge-interface (BridgeInterface mode).</summary>
    public string? PodInterface { get; init; }
    public bool MasqueradeAll { get; init; }

    /// <summary>--nodeport-addresses: CIDRs selecting the node addresses that accept node ports (none: all), or the node's primary IPs.</summary>
    public NodePortAddressSetting NodePortAddresses { get; init; } = NodePortAddressSetting.All;

    public SyncRunnerOptions Sync { get; init; } = new();
}
