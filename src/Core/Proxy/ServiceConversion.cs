using System.Collections.Immutable;
using System.Globalization;
using System.Net;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// Validates Services and EndpointSlices into the backend-neutral model. The one place that
/// reads API objects; everything downstream sees only <see cref="ServicePortInfo"/> and
/// <see cref="EndpointInfo"/>.
/// </summary>
public static class ServiceConversion
{
    public const int DefaultStickyTimeoutSeconds = 10800;

    public static NamespacedName NameOf(IKubernetesObject obj) =>
        new(obj.Metadata?.Namespace is { Length: > 0 } ns ? ns : "default", obj.Metadata?.Name ?? "");

    /// <summary>
    /// Why a service is not proxied at all, or null when it is. Mirrors kube-proxy: services
    /// owned by another proxy, headless services and ExternalName services are left alone.
    /// </summary>
    public static string? SkipReason(Service service)
    {
        if (service.Metadata?.Labels?.ContainsKey(WellKnownLabels.ServiceProxyName) == true) return "it names another service proxy";
        if (service.Metadata?.Labels?.ContainsKey(WellKnownLabels.Headless) == true) return "it is headless";
        var spec = service.Spec;
        if (spec is null) return "it has no spec";
        if (string.Equals(spec.Type, "ExternalName", StringComparison.Ordinal)) return "it is an ExternalName service";
        if (spec.ClusterIP is null or "" or "None") return "it is headless";
        return null;
    }

    /// <summary>
    /// The ports of a service, keyed by name. Invalid fields are reported through
    /// <paramref name="errors"/> and the service (or the offending value) is left out.
    /// </summary>
    public static ImmutableDictionary<ServicePortName, ServicePortInfo> ToServicePorts(Service service, List<string>? errors = null) =>
        ToServicePortArray(service, errors) is { Length: > 0 } ports
            ? ports.ToImmutableDictionary(p => p.Name)
            : ImmutableDictionary<ServicePortName, ServicePortInfo>.Empty;

    /// <summary>
    /// <see cref="ToServicePorts"/> as an array in the order of the spec's ports (each name once): what the
    /// service tracker keeps per service, without a dictionary per service.
    /// </summary>
    internal static ServicePortInfo[] ToServicePortArray(Service service, List<string>? errors = null)
    {
        if (SkipReason(service) is not null) return [];
        var name = NameOf(service);
        var spec = service.Spec!;

        var clusterIPs = ParseAddresses(spec.ClusterIPs is { Count: > 0 } ips ? ips : [spec.ClusterIP!], name, "clusterIP", errors);
        if (clusterIPs.IsEmpty) return [];

        var type = spec.Type ?? "ClusterIP";
        var isLoadBalancer = type == "LoadBalancer";
        var exposesNodePorts = type is "NodePort" or "LoadBalancer";
        var externalIPs = ParseAddresses(spec.ExternalIPs ?? [], name, "externalIPs", errors);
        var loadBalancerIPs = isLoadBalancer
            ? ParseAddresses(
                (service.Status?.LoadBalancer?.Ingress ?? [])
                    // ipMode Proxy means the load balancer delivers to the node, not to the VIP.
                    .Where(i => !string.IsNullOrEmpty(i.Ip) && i.IpMode != "Proxy")
                    .Select(i => i.Ip!).ToList(),
                name, "status.loadBalancer.ingress", errors)
            : EquatableArray<IPAddress>.Empty;
        var sourceRanges = isLoadBalancer ? ParsePrefixes(spec.LoadBalancerSourceRanges ?? [], name, errors) : EquatableArray<IpPrefix>.Empty;
        int? sticky = spec.SessionAffinity == "ClientIP"
            ? spec.SessionAffinityConfig?.ClientIP?.TimeoutSeconds is > 0 and var t ? t : DefaultStickyTimeoutSeconds
            : null;

        var hasExternalFrontends = !externalIPs.IsEmpty || !loadBalancerIPs.IsEmpty;
        var result = new List<ServicePortInfo>(spec.Ports?.Count ?? 0);
        foreach (var port in spec.Ports ?? [])
        {
            if (!TryParseProtocol(port.Protocol, out var protocol))
            {
                errors?.Add($"Service {name}: port '{port.Name}': unknown protocol '{port.Protocol}'");
                continue;
            }
            if (port.Port is < 1 or > 65535)
            {
                errors?.Add($"Service {name}: port '{port.Name}': port {port.Port} is out of range 1-65535");
                continue;
            }
            var nodePort = exposesNodePorts ? port.NodePort ?? 0 : 0;
            var portName = new ServicePortName(name, port.Name ?? "", protocol);
            var info = new ServicePortInfo
            {
                Name = portName,
                Port = port.Port,
                ClusterIPs = clusterIPs,
                NodePort = nodePort,
                ExternalIPs = externalIPs,
                LoadBalancerIPs = loadBalancerIPs,
                LoadBalancerSourceRanges = sourceRanges,
                StickyTimeoutSeconds = sticky,
                HealthCheckNodePort = spec.HealthCheckNodePort ?? 0,
                TrafficDistribution = ParseTrafficDistribution(spec.TrafficDistribution),
                InternalPolicyLocal = spec.InternalTrafficPolicy == "Local",
                // Only with external frontends (ServicePortInfo.HasExternalFrontends) does the external policy apply.
                ExternalPolicyLocal = spec.ExternalTrafficPolicy == "Local" && (nodePort != 0 || hasExternalFrontends),
            };
            if (ContainsPort(result, portName))
                errors?.Add($"Service {name}: port name '{port.Name}' ({protocol}) appears twice");
            else
                result.Add(info);
        }
        return [.. result];
    }

    private static bool ContainsPort(List<ServicePortInfo> ports, ServicePortName name)
    {
        foreach (var port in ports)
            if (port.Name == name) return true;
        return false;
    }

    /// <summary>
    /// The endpoints one EndpointSlice gives each of its service's ports, keyed by
    /// (port name, protocol). The slice's port numbers are the resolved target ports.
    /// </summary>
    public static IEnumerable<(ServicePortName Port, EndpointInfo Endpoint)> ToEndpoints(EndpointSlice slice, string hostName)
    {
        if (ServiceOf(slice) is not { } service) yield break;
        foreach (var port in slice.Ports ?? [])
        {
            if (!TryPortName(service, port, out var portName)) continue;
            foreach (var endpoint in slice.Endpoints ?? [])
                if (ToEndpoint(endpoint, port.Port!.Value, hostName) is { } info)
                    yield return (portName, info);
        }
    }

    /// <summary>The service an EndpointSlice of a known address type belongs to, or null when it names none.</summary>
    internal static NamespacedName? ServiceOf(EndpointSlice slice)
    {
        if (slice.AddressType is not ("IPv4" or "IPv6")) return null;
        if (slice.Metadata?.Labels?.TryGetValue(WellKnownLabels.ServiceName, out var serviceName) != true || string.IsNullOrEmpty(serviceName)) return null;
        return new NamespacedName(NameOf(slice).Namespace, serviceName);
    }

    /// <summary>The service port a slice's port serves; false when its number or protocol is invalid (the port is skipped).</summary>
    internal static bool TryPortName(NamespacedName service, EndpointPort port, out ServicePortName name)
    {
        name = default;
        if (port.Port is not (>= 1 and <= 65535) || !TryParseProtocol(port.Protocol, out var protocol)) return false;
        name = new ServicePortName(service, port.Name ?? "", protocol);
        return true;
    }

    /// <summary>One endpoint of a slice on one (resolved target) port; null when it has no valid address.</summary>
    internal static EndpointInfo? ToEndpoint(Endpoint endpoint, int port, string hostName)
    {
        // A slice lists one address per endpoint (the API allows more; kube-proxy uses the first).
        if (endpoint.Addresses is not [var first, ..] || first is null || !IpPrefix.TryParseAddress(first, out var address)) return null;
        var ready = endpoint.Conditions?.Ready ?? true; // unknown means ready, as the API documents
        return new EndpointInfo(address, port)
        {
            Ready = ready,
            Serving = endpoint.Conditions?.Serving ?? ready,
            Terminating = endpoint.Conditions?.Terminating ?? false,
            NodeName = endpoint.NodeName,
            IsLocal = endpoint.NodeName is { Length: > 0 } node && node == hostName,
            Zone = endpoint.Zone,
            ZoneHints = endpoint.Hints?.ForZones is { } zones ? HintNames(zones.Select(z => z.Name)) : null,
            NodeHints = endpoint.Hints?.ForNodes is { } nodes ? HintNames(nodes.Select(n => n.Name)) : null,
        };
    }

    /// <summary>
    /// A service's <c>trafficDistribution</c>. <c>PreferClose</c> is the older name of
    /// <c>PreferSameZone</c>; a value this proxy does not know means no preference, as in kube-proxy
    /// (the API may add values an older proxy has never heard of).
    /// </summary>
    public static TrafficDistribution ParseTrafficDistribution(string? text) => text switch
    {
        "PreferClose" or "PreferSameZone" => TrafficDistribution.PreferSameZone,
        "PreferSameNode" => TrafficDistribution.PreferSameNode,
        _ => TrafficDistribution.Default,
    };

    /// <summary>
    /// The names of one endpoint's zone or node hints, sorted so equal hints compare equal. A slice
    /// that gives none leaves the endpoint's hints null, which the categorizer reads as "not hinted".
    /// </summary>
    private static EquatableArray<string> HintNames(IEnumerable<string?> names) =>
        new(names.Select(n => n ?? "").Where(n => n.Length > 0).Order(StringComparer.Ordinal));

    public static DateTimeOffset? LastChangeTriggerTime(EndpointSlice slice) =>
        slice.Metadata?.Annotations?.TryGetValue(WellKnownLabels.LastChangeTriggerTime, out var text) == true &&
        DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time)
            ? time
            : null;

    public static bool TryParseProtocol(string? text, out Protocol protocol)
    {
        switch (text)
        {
            case null or "" or "TCP": protocol = Protocol.TCP; return true;
            case "UDP": protocol = Protocol.UDP; return true;
            case "SCTP": protocol = Protocol.SCTP; return true;
            default: protocol = default; return false;
        }
    }

    private static EquatableArray<IPAddress> ParseAddresses(IReadOnlyCollection<string> texts, NamespacedName service, string field, List<string>? errors)
    {
        if (texts.Count == 0) return EquatableArray<IPAddress>.Empty;
        var result = new List<IPAddress>(texts.Count);
        foreach (var text in texts)
        {
            if (IpPrefix.TryParseAddress(text, out var address))
                result.Add(address);
            else
                errors?.Add($"Service {service}: {field}: '{text}' is not an IP address");
        }
        return new EquatableArray<IPAddress>(result);
    }

    private static EquatableArray<IpPrefix> ParsePrefixes(IReadOnlyCollection<string> texts, NamespacedName service, List<string>? errors)
    {
        if (texts.Count == 0) return EquatableArray<IpPrefix>.Empty;
        var result = new List<IpPrefix>();
        foreach (var text in texts)
        {
            if (IpPrefix.TryParse(text, out var prefix)) result.Add(prefix);
            else errors?.Add($"Service {service}: loadBalancerSourceRanges: '{text}' is not a CIDR");
        }
        return new EquatableArray<IpPrefix>(result);
    }
}
