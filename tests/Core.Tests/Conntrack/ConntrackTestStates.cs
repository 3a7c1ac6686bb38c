using System.Collections.Immutable;
using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Conntrack;

/// <summary>Builders for the desired states the conntrack tests compare.</summary>
internal static class ConntrackTestStates
{
    public static ServicePortName Name(string service, Protocol protocol = Protocol.UDP, string port = "dns") =>
        new(new NamespacedName("default", service), port, protocol);

    public static ServicePortState Port(
        ServicePortName name,
        string[] clusterIPs,
        string[] endpoints,
        int port = 53,
        int nodePort = 0,
        string[]? externalIPs = null,
        string[]? loadBalancerIPs = null)
    {
        var info = new ServicePortInfo
        {
            Name = name,
            Port = port,
            ClusterIPs = new EquatableArray<IPAddress>(clusterIPs.Select(IPAddress.Parse)),
            NodePort = nodePort,
            ExternalIPs = new EquatableArray<IPAddress>((externalIPs ?? []).Select(IPAddress.Parse)),
            LoadBalancerIPs = new EquatableArray<IPAddress>((loadBalancerIPs ?? []).Select(IPAddress.Parse)),
        };
        var eps = new EquatableArray<EndpointInfo>(endpoints.Select(ParseEndpoint).Order());
        return EndpointCategorizer.Decided(info, EndpointsOf(eps, IpFamily.IPv4), EndpointsOf(eps, IpFamily.IPv6));
    }

    /// <summary>The endpoints of one family, all of them serving cluster traffic (policy is not what is tested here).</summary>
    private static EndpointSet EndpointsOf(EquatableArray<EndpointInfo> endpoints, IpFamily family)
    {
        var ofFamily = new EquatableArray<EndpointInfo>(endpoints.Where(e => e.Family == family));
        return new EndpointSet(ofFamily, ofFamily, EquatableArray<EndpointInfo>.Empty) { HasAnyEndpoints = !ofFamily.IsEmpty };
    }

    public static DesiredState State(params ServicePortState[] ports) =>
        new(ports.ToImmutableSortedDictionary(p => p.Name, p => p), new NodeNetwork());

    /// <summary>"10.244.1.2:8080" or "[fd00::2]:8080".</summary>
    public static EndpointInfo ParseEndpoint(string text)
    {
        var endpoint = IPEndPoint.Parse(text);
        return new EndpointInfo(endpoint.Address, endpoint.Port);
    }
}
