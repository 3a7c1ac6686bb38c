namespace ProxyPlanes.Sandbox;

/// <summary>Other nodes of the sandbox cluster: they only route for their own pods, no proxy runs there.</summary>
public sealed partial class ClusterSandbox
{
    /// <summary>Most remote nodes: 192.0.2.2 .. 192.0.2.254, pod CIDRs 10.244.2.0/24 .. 10.244.254.0/24.</summary>
    public const int MaxRemoteNodes = 253;

    /// <summary>Names that would collide with the sandbox's other namespaces (<c>{Prefix}-node</c>, <c>-client</c>, <c>-pod-*</c>, <c>-ext-*</c>).</summary>
    private static readonly string[] ReservedNodeNames = ["node", "client"];

    private static readonly string[] ReservedNodeNamePrefixes = ["pod-", "ext-"];

    /// <summary>Remote nodes in creation order.</summary>
    public IReadOnlyList<RemoteNode> RemoteNodes
    {
        get
        {
            lock (_gate)
            {
                return _remoteNodes.ToArray();
            }
        }
    }

    /// <summary>The node's address on every inter-node link (a /32, only used as a next hop there).</summary>
    public string InterNodeIp => "192.0.2.1";

    public string InterNodeIpv6 => "2001:db8:1::1";

    /// <summary>
    /// Adds another node, namespace <c>{Prefix}-{name}</c>, with no proxy: it routes for its own pods only. It is
    /// linked to the node by a point-to-point veth (<c>vnodeK</c> in the node, <c>eth0</c> in the remote node): node
    /// 192.0.2.1/32 ↔ remote node 192.0.2.(K+2)/32 (IPv6 2001:db8:1::1 ↔ 2001:db8:1::(K+2)). Its pod CIDR
    /// 10.244.(K+2).0/24 (fd00:10:244:(K+2)::/64) is routed by the node via the remote node, which forwards, has a
    /// default route back via the node and blackholes unassigned addresses of its pod CIDR. K counts remote nodes from
    /// 0, so the first one is 192.0.2.2 with pods in 10.244.2.0/24. If anything fails, what was created for this node
    /// is removed again and the exception propagates. <paramref name="name"/> is also the node's Kubernetes name
    /// (<see cref="SandboxPod.NodeName"/> of its pods).
    /// </summary>
    public async Task<RemoteNode> AddRemoteNodeAsync(string name, CancellationToken cancellationToken = default)
    {
        ValidateMemberName(name);
        if (ReservedNodeNames.Contains(name, StringComparer.Ordinal) ||
            ReservedNodeNamePrefixes.Any(p => name.StartsWith(p, StringComparison.Ordinal)) ||
            name == NodeName)
        {
            throw new ArgumentException(
                $"Invalid remote node name '{name}': it must differ from {NodeName}, 'node' and 'client' and not start with 'pod-' or 'ext-'.",
                nameof(name));
        }

        await _mutation.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ThrowIfTornDown();
            lock (_gate)
            {
                if (_remoteNodes.Any(n => n.Name == name))
                {
                    throw new ArgumentException($"Remote node '{name}' already exists.", nameof(name));
                }
            }

            if (_nextRemoteNodeIndex >= MaxRemoteNodes)
            {
                throw new InvalidOperationException($"No inter-node addresses left (at most {MaxRemoteNodes} remote nodes per sandbox).");
            }

            var index = _nextRemoteNodeIndex++;
            var owner = $"node/{name}";
            try
            {
                var node = await CreateRemoteNodeAsync(name, index, owner, cancellationToken).ConfigureAwait(false);
                lock (_gate)
                {
                    _remoteNodes.Add(node);
                }

                return node;
            }
            catch
            {
                // Deleting the node-side veth also removes the node's routes to the remote node and its pod CIDR.
                if (ReleaseOwner(owner, throwOnError: false))
                {
                    _nextRemoteNodeIndex = index;
                }

                throw;
            }
        }
        finally
        {
            _mutation.Release();
        }
    }

    private async Task<RemoteNode> CreateRemoteNodeAsync(string name, int index, string owner, CancellationToken cancellationToken)
    {
        var octet = index + 2;
        var node = new RemoteNode(
            this,
            name,
            ip: $"192.0.2.{octet}",
            ipv6: $"2001:db8:1::{octet}",
            hostInterface: $"vnode{index}",
            podSubnetOctet: octet);

        var ns = await CreateNamespaceAsync(name, owner, cancellationToken).ConfigureAwait(false);
        node.Namespace = ns;

        // A router like the node: it forwards between the link to the node and its pods.
        await ns.CheckedExecAsync(["sysctl", "-qw", .. RouterSysctls], timeout: null, cancellationToken).ConfigureAwait(false);
        await LinkToNodeAsync(Node, ns, owner, node.HostInterface, InterNodeIp, InterNodeIpv6, node.IP, node.IPv6, cancellationToken).ConfigureAwait(false);

        // Without the blackholes, a packet to an unassigned address of the pod CIDR would bounce between the two nodes
        // (each one's route points at the other) until its TTL runs out. The pods' /32 and /128 routes are more specific.
        await ns.IpBatchAsync(
            [
                $"route add blackhole {node.PodCidr}",
                $"route add blackhole {node.PodCidrV6}",
            ],
            cancellationToken).ConfigureAwait(false);
        await Node.IpBatchAsync(
            [
                $"route add {node.PodCidr} via {node.IP} dev {node.HostInterface}",
                $"route add {node.PodCidrV6} via {node.IPv6} dev {node.HostInterface}",
            ],
            cancellationToken).ConfigureAwait(false);
        return node;
    }
}
