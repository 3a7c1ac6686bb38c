using System.Text.Json.Serialization;

namespace ProxyPlanes.Model;

// The subset of the Kubernetes API a service proxy reads. Property names follow the API's
// camelCase JSON; unknown fields are ignored, so full objects from kubectl or the API parse.

public sealed class ObjectMeta
{
    public string? Name { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? Namespace { get; set; }
    public string? Uid { get; set; }
    public string? ResourceVersion { get; set; }
    public Dictionary<string, string>? Labels { get; set; }
    [JsonConverter(typeof(KeptAnnotationsConverter))] public Dictionary<string, string>? Annotations { get; set; }
    public string? DeletionTimestamp { get; set; }
}

/// <summary>Common shape of every object the proxy watches.</summary>
public interface IKubernetesObject
{
    string? ApiVersion { get; }
    string? Kind { get; }
    ObjectMeta? Metadata { get; }
}

public sealed class Service : IKubernetesObject
{
    [JsonConverter(typeof(SharedStringConverter))] public string? ApiVersion { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? Kind { get; set; }
    public ObjectMeta? Metadata { get; set; }
    public ServiceSpec? Spec { get; set; }
    public ServiceStatus? Status { get; set; }
}

public sealed class ServiceSpec
{
    [JsonConverter(typeof(SharedStringConverter))] public string? Type { get; set; }
    public string? ClusterIP { get; set; }
    public List<string>? ClusterIPs { get; set; }
    public List<ServicePort>? Ports { get; set; }
    public List<string>? ExternalIPs { get; set; }
    public string? ExternalName { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? SessionAffinity { get; set; }
    public SessionAffinityConfig? SessionAffinityConfig { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? ExternalTrafficPolicy { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? InternalTrafficPolicy { get; set; }
    public int? HealthCheckNodePort { get; set; }
    public string? LoadBalancerIP { get; set; }
    public List<string>? LoadBalancerSourceRanges { get; set; }
    public List<string>? IpFamilies { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? IpFamilyPolicy { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? TrafficDistribution { get; set; }
}

public sealed class ServicePort
{
    [JsonConverter(typeof(SharedStringConverter))] public string? Name { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? Protocol { get; set; }
    public int Port { get; set; }
    public IntOrString? TargetPort { get; set; }
    public int? NodePort { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? AppProtocol { get; set; }
}

public sealed class SessionAffinityConfig
{
    public ClientIPConfig? ClientIP { get; set; }
}

public sealed class ClientIPConfig
{
    public int? TimeoutSeconds { get; set; }
}

public sealed class ServiceStatus
{
    public LoadBalancerStatus? LoadBalancer { get; set; }
}

public sealed class LoadBalancerStatus
{
    public List<LoadBalancerIngress>? Ingress { get; set; }
}

public sealed class LoadBalancerIngress
{
    public string? Ip { get; set; }
    public string? Hostname { get; set; }
    public string? IpMode { get; set; }
}

public sealed class EndpointSlice : IKubernetesObject
{
    [JsonConverter(typeof(SharedStringConverter))] public string? ApiVersion { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? Kind { get; set; }
    public ObjectMeta? Metadata { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? AddressType { get; set; }
    public List<Endpoint>? Endpoints { get; set; }
    public List<EndpointPort>? Ports { get; set; }
}

public sealed class Endpoint
{
    public List<string>? Addresses { get; set; }
    public EndpointConditions? Conditions { get; set; }
    public string? Hostname { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? NodeName { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? Zone { get; set; }
    public EndpointHints? Hints { get; set; }
}

/// <summary>
/// A value, not an object: three flags inline in each <see cref="Endpoint"/> instead of a 24-byte object per endpoint
/// (issue 13: 250,000 of them at 50,000 services × 5 endpoints).
/// </summary>
public struct EndpointConditions
{
    public bool? Ready { get; set; }
    public bool? Serving { get; set; }
    public bool? Terminating { get; set; }
}

public sealed class EndpointHints
{
    public List<ForZone>? ForZones { get; set; }
    public List<ForNode>? ForNodes { get; set; }
}

public sealed class ForZone
{
    [JsonConverter(typeof(SharedStringConverter))] public string? Name { get; set; }
}

public sealed class ForNode
{
    [JsonConverter(typeof(SharedStringConverter))] public string? Name { get; set; }
}

public sealed class EndpointPort
{
    [JsonConverter(typeof(SharedStringConverter))] public string? Name { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? Protocol { get; set; }
    public int? Port { get; set; }
    [JsonConverter(typeof(SharedStringConverter))] public string? AppProtocol { get; set; }
}

public sealed class Node : IKubernetesObject
{
    public string? ApiVersion { get; set; }
    public string? Kind { get; set; }
    public ObjectMeta? Metadata { get; set; }
    public NodeSpec? Spec { get; set; }
    public NodeStatus? Status { get; set; }
}

public sealed class NodeSpec
{
    public string? PodCIDR { get; set; }
    public List<string>? PodCIDRs { get; set; }
    public List<Taint>? Taints { get; set; }
}

public sealed class Taint
{
    public string? Key { get; set; }
    public string? Value { get; set; }
    public string? Effect { get; set; }
}

public sealed class NodeStatus
{
    public List<NodeAddress>? Addresses { get; set; }
}

public sealed class NodeAddress
{
    public string? Type { get; set; }
    public string? Address { get; set; }
}

/// <summary>Only apiVersion/kind/metadata: used to decide how to read a document.</summary>
public sealed class TypeProbe
{
    public string? ApiVersion { get; set; }
    public string? Kind { get; set; }
}

/// <summary>The metadata of a list response: the snapshot's resourceVersion and the next page's continue token.</summary>
public sealed class ListMeta
{
    public string? ResourceVersion { get; set; }
    public string? Continue { get; set; }
    public long? RemainingItemCount { get; set; }
}

/// <summary>A list response (<c>ServiceList</c>, <c>EndpointSliceList</c>, <c>NodeList</c>): one page of items.</summary>
public sealed class KubernetesList<T> where T : class, IKubernetesObject
{
    public string? ApiVersion { get; set; }
    public string? Kind { get; set; }
    public ListMeta? Metadata { get; set; }
    public List<T>? Items { get; set; }
}

/// <summary>
/// A <c>meta/v1 Status</c>: the body of a failed request, and the object of a watch <c>ERROR</c> event
/// (e.g. code 410, reason <c>Expired</c>: the watch's resourceVersion is too old).
/// </summary>
public sealed class ApiStatus
{
    public string? ApiVersion { get; set; }
    public string? Kind { get; set; }
    public string? Status { get; set; }
    public string? Message { get; set; }
    public string? Reason { get; set; }
    public int? Code { get; set; }
}

/// <summary>
/// One line of a watch stream (<c>{"type":"ADDED","object":{...}}</c>). Used to write events; the
/// client reads them with a streaming reader that picks the object's type from the event type.
/// </summary>
public sealed class KubernetesWatchEvent<T> where T : class
{
    public string? Type { get; set; }
    public T? Object { get; set; }
}

[JsonSourceGenerationOptions(
    PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase,
    DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    Converters = [typeof(IntOrStringJsonConverter)])]
[JsonSerializable(typeof(Service))]
[JsonSerializable(typeof(EndpointSlice))]
[JsonSerializable(typeof(Node))]
[JsonSerializable(typeof(TypeProbe))]
[JsonSerializable(typeof(KubernetesList<Service>), TypeInfoPropertyName = "ServiceList")]
[JsonSerializable(typeof(KubernetesList<EndpointSlice>), TypeInfoPropertyName = "EndpointSliceList")]
[JsonSerializable(typeof(KubernetesList<Node>), TypeInfoPropertyName = "NodeList")]
[JsonSerializable(typeof(ApiStatus))]
[JsonSerializable(typeof(KubernetesWatchEvent<Service>), TypeInfoPropertyName = "ServiceWatchEvent")]
[JsonSerializable(typeof(KubernetesWatchEvent<EndpointSlice>), TypeInfoPropertyName = "EndpointSliceWatchEvent")]
[JsonSerializable(typeof(KubernetesWatchEvent<Node>), TypeInfoPropertyName = "NodeWatchEvent")]
public sealed partial class KubernetesJsonContext : JsonSerializerContext;
