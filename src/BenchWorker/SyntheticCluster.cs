using System.Globalization;
using System.Net;
using ProxyPlanes.Model;

namespace ProxyPlanes.Bench;

/// <summary>
/// A synthetic cluster of N services × M endpoints, built as API objects so it goes through the
/// same conversion, trackers and policy as a real one. Services 0 and N-1 point at real pods (for
/// the data-plane cost probe); the rest point at unrouted addresses.
/// </summary>
public sealed class SyntheticCluster
{
    public const string Namespace = "bench";

    /// <summary>The port every endpoint serves on (the real pods listen on it too).</summary>
    public const int PodPort = 8080;
    private readonly string[] _realPods;
    private int _nextService;
    private int _nextEndpoint;

    public SyntheticCluster(int services, int endpointsPerService, string nodeName, string[] realPods)
    {
        EndpointsPerService = endpointsPerService;
        NodeName = nodeName;
        _realPods = realPods;
        for (var i = 0; i < services; i++) Add();
    }

    public int EndpointsPerService { get; }
    public string NodeName { get; }
    public Dictionary<string, Service> Services { get; } = [];
    public Dictionary<string, EndpointSlice> Slices { get; } = [];
    public List<string> Names { get; } = [];

    /// <summary>Service i's cluster IP: 10.96.0.0/12 holds a million, far more than any run.</summary>
    public static string ClusterIP(int index) => new IPAddress(BitConverter.GetBytes(IPAddress.HostToNetworkOrder(0x0A600000 + index + 1))).ToString();

    /// <summary>Adds a service with its slice; returns its name.</summary>
    public string Add()
    {
        var index = _nextService++;
        var name = $"svc-{index:D6}";
        Services[name] = new Service
        {
            ApiVersion = "v1", Kind = "Service",
            Metadata = new ObjectMeta { Name = name, Namespace = Namespace },
            Spec = new ServiceSpec
            {
                ClusterIP = ClusterIP(index),
                Ports = [new ServicePort { Name = "http", Port = 80, TargetPort = IntOrString.FromName("http") }],
            },
        };
        Slices[name] = NewSlice(name, Enumerable.Range(0, EndpointsPerService).Select(_ => NextEndpoint()).ToList());
        Names.Add(name);
        return name;
    }

    /// <summary>Points a service at the real pods (for the data-plane probe).</summary>
    public void UseRealPods(string name)
    {
        var slice = Slices[name];
        slice.Endpoints = _realPods.Select(ip => NewEndpoint(ip)).ToList();
    }

    public EndpointSlice NewSlice(string service, List<Endpoint> endpoints) => new()
    {
        ApiVersion = "discovery.k8s.io/v1", Kind = "EndpointSlice",
        Metadata = new ObjectMeta
        {
            Name = service + "-1", Namespace = Namespace,
            Labels = new() { ["kubernetes.io/service-name"] = service },
        },
        AddressType = "IPv4",
        Ports = [new EndpointPort { Name = "http", Protocol = "TCP", Port = PodPort }],
        Endpoints = endpoints,
    };

    public Endpoint NextEndpoint()
    {
        // 10.245.0.0/16 and up: endpoint addresses nobody routes to.
        var n = _nextEndpoint++;
        return NewEndpoint(string.Create(CultureInfo.InvariantCulture, $"10.{245 + n / 65536}.{n / 256 % 256}.{n % 256}"));
    }

    public Endpoint NewEndpoint(string ip, bool ready = true) => new()
    {
        Addresses = [ip],
        Conditions = new EndpointConditions { Ready = ready, Serving = ready, Terminating = false },
        NodeName = NodeName,
    };

    /// <summary>A copy of a slice, so the sink gets distinct previous and current objects.</summary>
    public static EndpointSlice Copy(EndpointSlice slice) => new()
    {
        ApiVersion = slice.ApiVersion, Kind = slice.Kind, Metadata = slice.Metadata, AddressType = slice.AddressType, Ports = slice.Ports,
        Endpoints = slice.Endpoints!.Select(e => new Endpoint { Addresses = e.Addresses, Conditions = e.Conditions, NodeName = e.NodeName }).ToList(),
    };
}
