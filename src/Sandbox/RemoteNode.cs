namespace ProxyPlanes.Sandbox;

/// <summary>
/// Another node of a <see cref="ClusterSandbox"/> (<see cref="ClusterSandbox.AddRemoteNodeAsync"/>): its own
/// namespace, a point-to-point veth to the node and a pod CIDR the node routes through it. No proxy runs here; it only
/// routes for its pods, so for the proxy under test their endpoints are non-local.
/// </summary>
public sealed class RemoteNode
{
    private readonly ClusterSandbox _sandbox;
    private NetworkNamespace? _namespace;

    internal RemoteNode(ClusterSandbox sandbox, string name, string ip, string ipv6, string hostInterface, int podSubnetOctet)
    {
        _sandbox = sandbox;
        Name = name;
        IP = ip;
        IPv6 = ipv6;
        HostInterface = hostInterface;
        PodAddressPrefix = $"10.244.{podSubnetOctet}.";
        PodAddressPrefixV6 = $"fd00:10:244:{podSubnetOctet}::";
    }

    /// <summary>The node's Kubernetes name (use it as <c>nodeName</c> of its endpoints), e.g. <c>node-b</c>.</summary>
    public string Name { get; }

    /// <summary>Namespace <c>{Prefix}-{Name}</c>.</summary>
    public NetworkNamespace Namespace
    {
        get => _namespace ?? throw new InvalidOperationException($"Remote node {Name} was not created.");
        internal set => _namespace = value;
    }

    /// <summary>Address on the inter-node link, e.g. 192.0.2.2 (a /32 on its <c>eth0</c>).</summary>
    public string IP { get; }

    /// <summary>e.g. 2001:db8:1::2.</summary>
    public string IPv6 { get; }

    /// <summary>The node-side end of the inter-node veth (in the node namespace), e.g. <c>vnode0</c>.</summary>
    public string HostInterface { get; }

    /// <summary>e.g. 10.244.2.0/24; the node routes it via <see cref="IP"/>.</summary>
    public string PodCidr => PodAddressPrefix + "0/24";

    /// <summary>e.g. fd00:10:244:2::/64.</summary>
    public string PodCidrV6 => PodAddressPrefixV6 + "/64";

    /// <summary>This node's address as its pods see it (the gateway on every pod veth), e.g. 10.244.2.1.</summary>
    public string PodGatewayIp => PodAddressPrefix + "1";

    /// <summary>e.g. fd00:10:244:2::1.</summary>
    public string PodGatewayIpv6 => PodAddressPrefixV6 + "1";

    /// <summary>The pods on this node.</summary>
    public IReadOnlyList<SandboxPod> Pods => _sandbox.Pods.Values.Where(p => p.NodeName == Name).ToArray();

    /// <summary>e.g. <c>10.244.2.</c>; pod N gets this plus N+2.</summary>
    internal string PodAddressPrefix { get; }

    /// <summary>e.g. <c>fd00:10:244:2::</c>.</summary>
    internal string PodAddressPrefixV6 { get; }

    /// <summary>Guarded by the sandbox's mutation lock.</summary>
    internal int NextPodIndex { get; set; }

    /// <inheritdoc cref="ClusterSandbox.AddPodAsync(string, int[], RemoteNode, CancellationToken)"/>
    public Task<SandboxPod> AddPodAsync(string name, params int[] ports) => _sandbox.AddPodAsync(name, ports, this, CancellationToken.None);

    /// <inheritdoc cref="ClusterSandbox.AddPodAsync(string, int[], RemoteNode, CancellationToken)"/>
    public Task<SandboxPod> AddPodAsync(string name, int[] ports, CancellationToken cancellationToken) => _sandbox.AddPodAsync(name, ports, this, cancellationToken);

    public override string ToString() => $"{Name} ({IP}, {IPv6}; pods {PodCidr}, {PodCidrV6})";
}
