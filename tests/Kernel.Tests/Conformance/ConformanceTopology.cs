using System.Text;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Kernel.Tests.Conformance;

/// <summary>
/// The one topology every scenario runs in: this node (node-a, where the proxy runs) with pods
/// local-0 and local-1; a second node, node-b, with pods remote-0 and remote-1; an allowed
/// external client (client, 203.0.113.10) and another one (client2, 203.0.113.11).
/// Pods answer TCP and UDP on 8080 and 8081 with "pod=NAME src=ADDRESS".
/// </summary>
public static class ConformanceTopology
{
    public const string NodeName = "node-a";
    public const string RemoteNodeName = "node-b";
    public const string NodeIp = "203.0.113.1";
    public const string ClientIp = "203.0.113.10";
    public const string Client2Ip = "203.0.113.11";
    public const string LocalPodGateway = "10.244.1.1";
    public const string InterNodeAddress = "192.0.2.1";

    public static readonly IReadOnlyDictionary<string, (string IPv4, string IPv6, string Node)> Pods = new Dictionary<string, (string, string, string)>
    {
        ["local-0"] = ("10.244.1.2", "fd00:10:244:1::2", NodeName),
        ["local-1"] = ("10.244.1.3", "fd00:10:244:1::3", NodeName),
        ["remote-0"] = ("10.244.2.2", "fd00:10:244:2::2", RemoteNodeName),
        ["remote-1"] = ("10.244.2.3", "fd00:10:244:2::3", RemoteNodeName),
    };

    public static readonly string[] AllPods = ["local-0", "local-1", "remote-0", "remote-1"];
    public static readonly string[] LocalPods = ["local-0", "local-1"];
    public static readonly string[] RemotePods = ["remote-0", "remote-1"];

    public static async Task<ClusterSandbox> BuildAsync()
    {
        var sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { NodeName = NodeName });
        try
        {
            foreach (var pod in LocalPods) await sandbox.AddPodAsync(pod, [8080, 8081], CancellationToken.None);
            var nodeB = await sandbox.AddRemoteNodeAsync(RemoteNodeName);
            foreach (var pod in RemotePods) await sandbox.AddPodAsync(pod, [8080, 8081], nodeB);
            await sandbox.AddExternalClientAsync("client2");
            foreach (var (name, (ipv4, ipv6, _)) in Pods)
                if (sandbox.Pods[name].IP != ipv4 || sandbox.Pods[name].IPv6 != ipv6)
                    throw new InvalidOperationException($"pod {name} got {sandbox.Pods[name].IP}, the scenarios expect {ipv4}");
            if (sandbox.ExternalClients[1].IP != Client2Ip) throw new InvalidOperationException($"client2 got {sandbox.ExternalClients[1].IP}");
            return sandbox;
        }
        catch
        {
            await sandbox.DisposeAsync();
            throw;
        }
    }

    public static NetworkNamespace Resolve(ClusterSandbox sandbox, string from) => from switch
    {
        "client" => sandbox.Client,
        "client2" => sandbox.ExternalClients[1].Namespace,
        "node" => sandbox.Node,
        _ => sandbox.Pods[from].Namespace,
    };

    // Manifest builders: the scenarios read like the cluster they describe.

    public static string Service(string name, string clusterIP, int port = 80, int targetPort = 8080, string protocol = "TCP", string type = "ClusterIP",
        int nodePort = 0, string? spec = null, string? status = null, string? clusterIPv6 = null, string? labels = null)
    {
        var yaml = new StringBuilder();
        yaml.Append($"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: conformance\n");
        if (labels is not null) yaml.Append($"  labels: {{ {labels} }}\n");
        yaml.Append($"spec:\n  type: {type}\n  clusterIP: {clusterIP}\n");
        if (clusterIPv6 is not null) yaml.Append($"  clusterIPs: [\"{clusterIP}\", \"{clusterIPv6}\"]\n  ipFamilies: [IPv4, IPv6]\n");
        if (spec is not null) yaml.Append(string.Concat(spec.Split('\n').Select(l => $"  {l.Trim()}\n")));
        yaml.Append($"  ports:\n    - name: p\n      protocol: {protocol}\n      port: {port}\n      targetPort: {targetPort}\n");
        if (nodePort != 0) yaml.Append($"      nodePort: {nodePort}\n");
        if (status is not null) yaml.Append($"status:\n  {status}\n");
        return yaml.Append("---\n").ToString();
    }

    /// <summary>One endpoint: <paramref name="Hint"/> is its <c>hints.forZones</c> zone, <paramref name="NodeHint"/> its <c>hints.forNodes</c> node.</summary>
    public sealed record Ep(string Pod, bool Ready = true, bool Serving = true, bool Terminating = false, string? Zone = null, string? Hint = null, string? NodeHint = null);

    public static string Slice(string service, params Ep[] endpoints) => Slice(service, 8080, "TCP", "IPv4", endpoints);

    public static string Slice(string service, int port, string protocol, string family, params Ep[] endpoints)
    {
        var yaml = new StringBuilder();
        yaml.Append($"apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {service}-{family.ToLowerInvariant()}\n  namespace: conformance\n");
        yaml.Append($"  labels: {{ kubernetes.io/service-name: {service} }}\naddressType: {family}\n");
        yaml.Append($"ports: [ {{ name: p, protocol: {protocol}, port: {port} }} ]\nendpoints:\n");
        foreach (var ep in endpoints)
        {
            var (ipv4, ipv6, node) = Pods[ep.Pod];
            yaml.Append($"  - addresses: [\"{(family == "IPv6" ? ipv6 : ipv4)}\"]\n");
            yaml.Append($"    conditions: {{ ready: {Bool(ep.Ready)}, serving: {Bool(ep.Serving)}, terminating: {Bool(ep.Terminating)} }}\n");
            yaml.Append($"    nodeName: {node}\n");
            if (ep.Zone is not null) yaml.Append($"    zone: {ep.Zone}\n");
            if (ep.Hint is not null || ep.NodeHint is not null)
            {
                var hints = new List<string>();
                if (ep.NodeHint is not null) hints.Add($"forNodes: [ {{ name: {ep.NodeHint} }} ]");
                if (ep.Hint is not null) hints.Add($"forZones: [ {{ name: {ep.Hint} }} ]");
                yaml.Append($"    hints: {{ {string.Join(", ", hints)} }}\n");
            }
        }
        return yaml.Append("---\n").ToString();
    }

    /// <summary>This node's Node object; <paramref name="internalIP"/> is its primary IPv4 (one of the node's own addresses).</summary>
    public static string Node(string? zone = null, string internalIP = NodeIp) =>
        $"apiVersion: v1\nkind: Node\nmetadata:\n  name: {NodeName}\n  labels: {{ topology.kubernetes.io/zone: {zone ?? "none"} }}\nspec:\n  podCIDRs: [\"10.244.1.0/24\", \"fd00:10:244:1::/64\"]\nstatus:\n  addresses: [ {{ type: InternalIP, address: {internalIP} }} ]\n---\n";

    private static string Bool(bool value) => value ? "true" : "false";
}
