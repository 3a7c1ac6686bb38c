namespace ProxyPlanes.Sandbox;

/// <summary>
/// A pod of a <see cref="ClusterSandbox"/>: its own namespace, a point-to-point veth to its node (the node or a
/// <see cref="RemoteNode"/>) and HTTP/UDP servers.
/// </summary>
public sealed class SandboxPod
{
    internal SandboxPod(
        string name,
        string nodeName,
        NetworkNamespace ns,
        string ip,
        string ipv6,
        string hostInterface,
        IReadOnlyList<int> ports,
        IReadOnlyList<SandboxProcess> servers,
        string contentDirectory)
    {
        Name = name;
        NodeName = nodeName;
        Namespace = ns;
        IP = ip;
        IPv6 = ipv6;
        HostInterface = hostInterface;
        Ports = ports;
        Servers = servers;
        ContentDirectory = contentDirectory;
    }

    public string Name { get; }

    /// <summary>
    /// Kubernetes name of the pod's node, for the <c>nodeName</c> of its endpoints: <see cref="ClusterSandbox.NodeName"/>
    /// for pods on the node, <see cref="RemoteNode.Name"/> for pods on a remote node.
    /// </summary>
    public string NodeName { get; }

    public NetworkNamespace Namespace { get; }

    /// <summary>IPv4 address on the pod's eth0, e.g. 10.244.1.2, or 10.244.2.2 on the first remote node (a /32).</summary>
    public string IP { get; }

    /// <summary>IPv6 address on the pod's eth0, e.g. fd00:10:244:1::2 (a /128).</summary>
    public string IPv6 { get; }

    /// <summary>Node-side end of the pod's veth (in the namespace of the pod's node, which may be a remote node), e.g. <c>vpod0</c>.</summary>
    public string HostInterface { get; }

    /// <summary>Ports served over TCP (busybox httpd) and UDP (in-process responder).</summary>
    public IReadOnlyList<int> Ports { get; }

    /// <summary>The busybox httpd processes (one IPv4 and one IPv6 listener per port).</summary>
    public IReadOnlyList<SandboxProcess> Servers { get; }

    /// <summary>httpd document root (contains <c>cgi-bin/who</c>); deleted with the pod.</summary>
    public string ContentDirectory { get; }

    /// <summary>The body <c>GET /cgi-bin/who</c> returns to a client seen as <paramref name="source"/>.</summary>
    public string ExpectedWho(string source) => $"pod={Name} src={source}";

    public override string ToString() => $"{Name} ({IP}, {IPv6}) on {NodeName}";
}

/// <summary>An off-cluster client namespace linked point-to-point to the node on the external network.</summary>
public sealed class ExternalClient
{
    internal ExternalClient(string name, NetworkNamespace ns, string ip, string ipv6, string hostInterface)
    {
        Name = name;
        Namespace = ns;
        IP = ip;
        IPv6 = ipv6;
        HostInterface = hostInterface;
    }

    public string Name { get; }

    public NetworkNamespace Namespace { get; }

    /// <summary>e.g. 203.0.113.10 for the first client.</summary>
    public string IP { get; }

    /// <summary>e.g. 2001:db8::10 for the first client.</summary>
    public string IPv6 { get; }

    /// <summary>Node-side end of the client's veth, e.g. <c>vext0</c>.</summary>
    public string HostInterface { get; }

    public override string ToString() => $"{Name} ({IP}, {IPv6})";
}

/// <summary>Knobs for <see cref="ClusterSandbox.CreateAsync"/>.</summary>
public sealed record ClusterSandboxOptions
{
    /// <summary>Kubernetes name of the node the proxy runs on (<see cref="ClusterSandbox.NodeName"/>).</summary>
    public string NodeName { get; init; } = "node-a";

    /// <summary>busybox binary used for the pods' HTTP servers.</summary>
    public string BusyboxPath { get; init; } = "busybox";

    /// <summary>How long <see cref="ClusterSandbox.AddPodAsync(string, int[])"/> waits for each server to accept connections.</summary>
    public TimeSpan ServerReadyTimeout { get; init; } = TimeSpan.FromSeconds(3);

    /// <summary>Start an in-process UDP responder on every pod port.</summary>
    public bool UdpResponders { get; init; } = true;

    /// <summary>
    /// Tear the sandbox down (synchronously) on SIGINT, SIGTERM and process exit, in case the owner never gets to
    /// <see cref="ClusterSandbox.DisposeAsync"/>. The signal's default action still happens afterwards.
    /// </summary>
    public bool CleanupOnExitSignals { get; init; } = true;
}
