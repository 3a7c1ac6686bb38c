using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>Small builders for the API objects and model records the proxy tests use.</summary>
internal static class TestObjects
{
    public const string Host = "node-a";

    public static ServicePort Port(string? name, int port, string? protocol = null, int? nodePort = null, int? targetPort = null) => new()
    {
        Name = name,
        Port = port,
        Protocol = protocol,
        NodePort = nodePort,
        TargetPort = targetPort is { } t ? IntOrString.FromInt(t) : null,
    };

    public static Service Service(
        string name,
        string? clusterIP = "10.96.0.10",
        string? type = null,
        string ns = "default",
        Dictionary<string, string>? labels = null,
        params ServicePort[] ports) => new()
    {
        ApiVersion = "v1",
        Kind = "Service",
        Metadata = new ObjectMeta { Name = name, Namespace = ns, Labels = labels },
        Spec = new ServiceSpec { Type = type, ClusterIP = clusterIP, Ports = [.. ports] },
    };

    public static Endpoint Ep(
        string address,
        bool? ready = null,
        bool? serving = null,
        bool? terminating = null,
        string? node = null,
        string? zone = null,
        string[]? hints = null,
        string[]? nodeHints = null) => new()
    {
        Addresses = [address],
        Conditions = ready is null && serving is null && terminating is null
            ? (EndpointConditions?)null
            : new EndpointConditions { Ready = ready, Serving = serving, Terminating = terminating },
        NodeName = node,
        Zone = zone,
        Hints = hints is null && nodeHints is null ? null : new EndpointHints
        {
            ForZones = hints is null ? null : [.. hints.Select(h => new ForZone { Name = h })],
            ForNodes = nodeHints is null ? null : [.. nodeHints.Select(n => new ForNode { Name = n })],
        },
    };

    public static EndpointPort SlicePort(string? name, int port, string? protocol = null) => new() { Name = name, Port = port, Protocol = protocol };

    public static EndpointSlice Slice(
        string name,
        string? service,
        EndpointPort[] ports,
        Endpoint[] endpoints,
        string ns = "default",
        string addressType = "IPv4",
        string? triggerTime = null) => new()
    {
        ApiVersion = "discovery.k8s.io/v1",
        Kind = "EndpointSlice",
        Metadata = new ObjectMeta
        {
            Name = name,
            Namespace = ns,
            Labels = service is null ? null : new() { [WellKnownLabels.ServiceName] = service },
            Annotations = triggerTime is null ? null : new() { [WellKnownLabels.LastChangeTriggerTime] = triggerTime },
        },
        AddressType = addressType,
        Ports = [.. ports],
        Endpoints = [.. endpoints],
    };

    public static ServicePortName PortName(string service, string port = "", Protocol protocol = Protocol.TCP, string ns = "default") =>
        new(new NamespacedName(ns, service), port, protocol);

    /// <summary>A service port model record, as ServiceConversion would produce it.</summary>
    public static ServicePortInfo Info(
        string service = "svc",
        string port = "http",
        int nodePort = 0,
        bool internalLocal = false,
        bool externalLocal = false,
        string[]? externalIPs = null) => new()
    {
        Name = PortName(service, port),
        Port = 80,
        ClusterIPs = new EquatableArray<IPAddress>([IPAddress.Parse("10.96.0.10")]),
        NodePort = nodePort,
        ExternalIPs = new EquatableArray<IPAddress>((externalIPs ?? []).Select(IPAddress.Parse)),
        InternalPolicyLocal = internalLocal,
        ExternalPolicyLocal = externalLocal,
    };

    /// <summary>An endpoint model record: ready unless told otherwise.</summary>
    public static EndpointInfo EpInfo(
        string address,
        bool ready = true,
        bool serving = true,
        bool terminating = false,
        bool local = false,
        string[]? hints = null,
        string[]? nodeHints = null) => new(IPAddress.Parse(address), 8080)
    {
        Ready = ready,
        Serving = serving,
        Terminating = terminating,
        IsLocal = local,
        NodeName = local ? Host : "node-b",
        ZoneHints = hints is null ? null : new EquatableArray<string>(hints),
        NodeHints = nodeHints is null ? null : new EquatableArray<string>(nodeHints),
    };

    public static string[] Addresses(IEnumerable<EndpointInfo> endpoints) => [.. endpoints.Select(e => e.Address.ToString())];
}
