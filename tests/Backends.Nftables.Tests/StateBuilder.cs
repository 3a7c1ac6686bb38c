using System.Collections.Immutable;
using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Nftables.Tests;

/// <summary>Builds DesiredStates directly (no manifests), for unit tests and randomized sequences.</summary>
internal static class StateBuilder
{
    public static readonly NodeNetwork Network = new()
    {
        NodeName = "node-a",
        LocalDetector = new LocalTrafficDetector(LocalDetectMode.ClusterCidr, new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.0.0/16"), IpPrefix.Parse("fd00:10:244::/48")])),
        NodeIPs = new EquatableArray<IPAddress>([IPAddress.Parse("203.0.113.1")]),
    };

    public static ServicePortName Name(string service, string port = "http", Protocol protocol = Protocol.TCP) =>
        new(new NamespacedName("ns", service), port, protocol);

    public static ServicePortInfo Info(string service, string clusterIP, int port = 80, string portName = "http", Protocol protocol = Protocol.TCP) => new()
    {
        Name = Name(service, portName, protocol),
        Port = port,
        ClusterIPs = new EquatableArray<IPAddress>(clusterIP.Split(',').Select(IPAddress.Parse)),
    };

    public static EndpointInfo Endpoint(string ip, int port = 8080, bool local = true, bool ready = true, bool terminating = false) =>
        new(IPAddress.Parse(ip), port) { IsLocal = local, Ready = ready, Serving = ready || terminating, Terminating = terminating, NodeName = local ? "node-a" : "node-b" };

    public static ServicePortState Port(ServicePortInfo info, params EndpointInfo[] endpoints) =>
        EndpointCategorizer.CategorizeByFamily(info, endpoints, null, Network);

    public static DesiredState State(NodeNetwork? network, params ServicePortState[] ports) =>
        new(ports.ToImmutableSortedDictionary(p => p.Name, p => p), network ?? Network);

    public static SyncRequest Full(DesiredState state) => new(state, true, new HashSet<ServicePortName>());

    public static SyncRequest Partial(DesiredState state, params ServicePortName[] changed) => new(state, false, changed.ToHashSet());

    /// <summary>The ports whose state differs between two states (added, removed or changed).</summary>
    public static HashSet<ServicePortName> Changed(DesiredState before, DesiredState after) =>
        before.ServicePorts.Keys.Union(after.ServicePorts.Keys)
            .Where(n => !before.ServicePorts.TryGetValue(n, out var a) || !after.ServicePorts.TryGetValue(n, out var b) || a != b)
            .ToHashSet();
}

/// <summary>
/// Random but reproducible clusters: services with every feature the planner renders, a few of
/// them deliberately sharing external IPs (so shared map keys change hands), mutated step by step.
/// </summary>
/// <remarks>With <paramref name="changeFamilies"/>, a change may also make a service dual-stack or single-stack (it gains or loses its IPv6 cluster IP).</remarks>
internal sealed class RandomCluster(int seed, bool changeFamilies = false)
{
    private readonly Random _random = new(seed);
    private readonly Dictionary<string, (ServicePortInfo Info, EndpointInfo[] Endpoints)> _services = [];
    private int _next;

    public DesiredState State(NodeNetwork network) =>
        StateBuilder.State(network, _services.Values.Select(s => StateBuilder.Port(s.Info, s.Endpoints)).ToArray());

    /// <summary>Adds, removes or changes a few services.</summary>
    public void Mutate()
    {
        var steps = _random.Next(1, 4);
        for (var i = 0; i < steps; i++)
        {
            var roll = _random.Next(10);
            if (_services.Count < 3 || roll < 3) Add();
            else if (roll < 5) _services.Remove(_services.Keys.ElementAt(_random.Next(_services.Count)));
            else
            {
                var name = _services.Keys.ElementAt(_random.Next(_services.Count));
                var (info, endpoints) = _services[name];
                if (changeFamilies && _random.Next(4) == 0) _services[name] = (ToggleIPv6(info), endpoints);
                else _services[name] = _random.Next(3) == 0 ? (Features(info), endpoints) : (info, Endpoints());
            }
        }
    }

    private void Add()
    {
        var n = _next++;
        var dual = _random.Next(4) == 0;
        var protocol = _random.Next(5) switch { 0 => Protocol.UDP, 1 => Protocol.SCTP, _ => Protocol.TCP };
        var info = StateBuilder.Info($"svc{n}", dual ? $"10.96.{n / 200}.{n % 200 + 1},fd00:10:96::{n + 1:x}" : $"10.96.{n / 200}.{n % 200 + 1}", protocol: protocol);
        _services[$"svc{n}"] = (Features(info), Endpoints());
    }

    private static ServicePortInfo ToggleIPv6(ServicePortInfo info)
    {
        var ipv4 = info.ClusterIPs.First(ip => ip.AddressFamily == System.Net.Sockets.AddressFamily.InterNetwork);
        var dual = info.ClusterIPs.Count > 1;
        var ipv6 = IPAddress.Parse($"fd00:10:96::{ipv4.GetAddressBytes()[2] * 200 + ipv4.GetAddressBytes()[3]:x}");
        return info with { ClusterIPs = new EquatableArray<IPAddress>(dual ? [ipv4] : [ipv4, ipv6]) };
    }

    private ServicePortInfo Features(ServicePortInfo info)
    {
        var r = _random;
        var external = r.Next(3) == 0;
        var lb = r.Next(4) == 0;
        return info with
        {
            NodePort = r.Next(3) == 0 ? 30000 + r.Next(1000) : 0,
            // Few external addresses: services collide on them on purpose.
            ExternalIPs = external ? new EquatableArray<IPAddress>([IPAddress.Parse($"198.51.100.{r.Next(1, 4)}")]) : EquatableArray<IPAddress>.Empty,
            LoadBalancerIPs = lb ? new EquatableArray<IPAddress>([IPAddress.Parse($"198.51.100.{r.Next(10, 13)}"), IPAddress.Parse("2001:db8:100::1")]) : EquatableArray<IPAddress>.Empty,
            LoadBalancerSourceRanges = lb && r.Next(2) == 0
                ? new EquatableArray<IpPrefix>(new[] { "203.0.113.0/24", "203.0.113.128/25", "192.0.2.0/25", "2001:db8::/64" }.Where(_ => r.Next(2) == 0).Select(IpPrefix.Parse))
                : EquatableArray<IpPrefix>.Empty,
            StickyTimeoutSeconds = r.Next(4) == 0 ? (r.Next(2) == 0 ? 60 : 10800) : null,
            ExternalPolicyLocal = r.Next(3) == 0,
            InternalPolicyLocal = r.Next(5) == 0,
            HealthCheckNodePort = r.Next(4) == 0 ? 32000 + r.Next(3) : 0,
        };
    }

    private EndpointInfo[] Endpoints()
    {
        var count = _random.Next(0, 4);
        var endpoints = new List<EndpointInfo>();
        for (var i = 0; i < count; i++)
        {
            var host = _random.Next(2, 9);
            var local = _random.Next(2) == 0;
            var ready = _random.Next(5) != 0;
            endpoints.Add(StateBuilder.Endpoint($"10.244.{(local ? 1 : 2)}.{host}", local: local, ready: ready, terminating: !ready));
            if (_random.Next(3) == 0)
                endpoints.Add(StateBuilder.Endpoint($"fd00:10:244:{(local ? 1 : 2)}::{host}", local: local, ready: ready, terminating: !ready));
        }
        return endpoints.DistinctBy(e => e.Address).ToArray();
    }
}
