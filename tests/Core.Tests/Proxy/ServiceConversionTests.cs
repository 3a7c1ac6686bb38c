using System.Net;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Proxy;

public class ServiceConversionTests
{
    [Fact]
    public void ToServicePorts_ClusterIPServiceWithNamedPorts_OnePortInfoPerPort()
    {
        var service = Service("web", ns: "shop", ports: [Port("http", 80), Port("https", 443), Port("dns", 53, "UDP")]);

        var ports = ServiceConversion.ToServicePorts(service);

        Assert.Equal(3, ports.Count);
        var http = ports[PortName("web", "http", ns: "shop")];
        Assert.Equal(80, http.Port);
        Assert.Equal(Protocol.TCP, http.Protocol);
        Assert.Equal([IPAddress.Parse("10.96.0.10")], http.ClusterIPs);
        Assert.Equal(0, http.NodePort);
        Assert.Null(http.StickyTimeoutSeconds);
        Assert.False(http.HasExternalFrontends);
        Assert.Equal(443, ports[PortName("web", "https", ns: "shop")].Port);
        Assert.Equal(Protocol.UDP, ports[PortName("web", "dns", Protocol.UDP, ns: "shop")].Protocol);
        Assert.Equal("shop/web:http", http.Name.ToString());
    }

    [Fact]
    public void ToServicePorts_UnnamedPortWithoutNamespace_UsesEmptyPortNameAndDefaultNamespace()
    {
        var service = Service("web", ports: [Port(null, 80)]);
        service.Metadata!.Namespace = null;

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal(PortName("web", ""), port.Name);
        Assert.Equal("default/web", port.Name.ToString());
    }

    [Fact]
    public void ToServicePorts_NodePortType_KeepsNodePort()
    {
        var service = Service("web", type: "NodePort", ports: [Port("http", 80, nodePort: 30080)]);

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal(30080, port.NodePort);
        Assert.True(port.HasExternalFrontends);
    }

    [Fact]
    public void ToServicePorts_ClusterIPTypeWithNodePortSet_DropsNodePort()
    {
        var service = Service("web", type: "ClusterIP", ports: [Port("http", 80, nodePort: 30080)]);

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal(0, port.NodePort);
        Assert.False(port.HasExternalFrontends);
    }

    [Theory]
    [InlineData("None")]
    [InlineData("")]
    [InlineData(null)]
    public void ToServicePorts_HeadlessService_NoPorts(string? clusterIP)
    {
        var service = Service("web", clusterIP: clusterIP, ports: [Port("http", 80)]);
        var errors = new List<string>();

        Assert.Empty(ServiceConversion.ToServicePorts(service, errors));
        Assert.Empty(errors);
        Assert.NotNull(ServiceConversion.SkipReason(service));
    }

    [Fact]
    public void ToServicePorts_ExternalNameService_NoPorts()
    {
        var service = Service("web", clusterIP: null, type: "ExternalName", ports: [Port("http", 80)]);
        service.Spec!.ExternalName = "example.com";

        Assert.Empty(ServiceConversion.ToServicePorts(service));
        Assert.Contains("ExternalName", ServiceConversion.SkipReason(service));
    }

    [Fact]
    public void ToServicePorts_ServiceProxyNameLabel_NoPorts()
    {
        var service = Service(
            "web",
            labels: new() { [WellKnownLabels.ServiceProxyName] = "other-proxy" },
            ports: [Port("http", 80)]);

        Assert.Empty(ServiceConversion.ToServicePorts(service));
        Assert.NotNull(ServiceConversion.SkipReason(service));
    }

    [Fact]
    public void ToServicePorts_UnrelatedLabel_StillProxied()
    {
        var service = Service("web", labels: new() { ["app"] = "web" }, ports: [Port("http", 80)]);

        Assert.Null(ServiceConversion.SkipReason(service));
        Assert.Single(ServiceConversion.ToServicePorts(service));
    }

    [Theory]
    [InlineData("not-an-ip")]
    [InlineData("10.96.0")]
    [InlineData("10")]
    [InlineData("0x0a.0.0.1")]
    [InlineData("[fd00::10]:80")]
    [InlineData("fd00::10%eth0")]
    public void ToServicePorts_InvalidClusterIP_NoPortsAndErrorReported(string clusterIP)
    {
        var service = Service("web", clusterIP: clusterIP, ports: [Port("http", 80)]);
        var errors = new List<string>();

        Assert.Empty(ServiceConversion.ToServicePorts(service, errors));

        var error = Assert.Single(errors);
        Assert.Contains("default/web", error);
        Assert.Contains("clusterIP", error);
        Assert.Contains(clusterIP, error);
    }

    [Fact]
    public void ToServicePorts_DualStackClusterIPs_KeepsBothFamilies()
    {
        var service = Service("web", ports: [Port("http", 80)]);
        service.Spec!.ClusterIPs = ["10.96.0.10", "fd00::10"];

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal([IPAddress.Parse("10.96.0.10"), IPAddress.Parse("fd00::10")], port.ClusterIPs);
    }

    [Fact]
    public void ToServicePorts_InvalidPortFields_BadPortSkippedOthersKept()
    {
        var service = Service("web", ports: [Port("http", 80), Port("bad-proto", 81, "ICMP"), Port("bad-port", 70000), Port("http", 8080)]);
        var errors = new List<string>();

        var ports = ServiceConversion.ToServicePorts(service, errors);

        var port = Assert.Single(ports).Value;
        Assert.Equal(80, port.Port); // the first of the duplicated names wins
        Assert.Equal(3, errors.Count);
        Assert.Contains(errors, e => e.Contains("ICMP"));
        Assert.Contains(errors, e => e.Contains("70000"));
        Assert.Contains(errors, e => e.Contains("appears twice"));
    }

    [Fact]
    public void ToServicePorts_ClientIPAffinityWithoutTimeout_DefaultTimeout10800()
    {
        var service = Service("web", ports: [Port("http", 80)]);
        service.Spec!.SessionAffinity = "ClientIP";

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal(10800, port.StickyTimeoutSeconds);
    }

    [Fact]
    public void ToServicePorts_ClientIPAffinityWithTimeout_UsesExplicitTimeout()
    {
        var service = Service("web", ports: [Port("http", 80)]);
        service.Spec!.SessionAffinity = "ClientIP";
        service.Spec.SessionAffinityConfig = new SessionAffinityConfig { ClientIP = new ClientIPConfig { TimeoutSeconds = 60 } };

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal(60, port.StickyTimeoutSeconds);
    }

    [Fact]
    public void ToServicePorts_AffinityNone_NoStickiness()
    {
        var service = Service("web", ports: [Port("http", 80)]);
        service.Spec!.SessionAffinity = "None";
        service.Spec.SessionAffinityConfig = new SessionAffinityConfig { ClientIP = new ClientIPConfig { TimeoutSeconds = 60 } };

        Assert.Null(Assert.Single(ServiceConversion.ToServicePorts(service)).Value.StickyTimeoutSeconds);
    }

    [Fact]
    public void ToServicePorts_LoadBalancerIngress_ProxyModeAndHostnamesSkipped()
    {
        var service = Service("web", type: "LoadBalancer", ports: [Port("http", 80, nodePort: 30080)]);
        service.Status = new ServiceStatus
        {
            LoadBalancer = new LoadBalancerStatus
            {
                Ingress =
                [
                    new LoadBalancerIngress { Ip = "203.0.113.10" },
                    new LoadBalancerIngress { Ip = "203.0.113.11", IpMode = "VIP" },
                    new LoadBalancerIngress { Ip = "203.0.113.12", IpMode = "Proxy" },
                    new LoadBalancerIngress { Hostname = "lb.example.com" },
                ],
            },
        };
        service.Spec!.LoadBalancerSourceRanges = ["198.51.100.0/24", "2001:db8::/32", "192.0.2.7"];

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.Equal([IPAddress.Parse("203.0.113.10"), IPAddress.Parse("203.0.113.11")], port.LoadBalancerIPs);
        Assert.Equal(
            [IpPrefix.Parse("198.51.100.0/24"), IpPrefix.Parse("2001:db8::/32"), IpPrefix.Parse("192.0.2.7/32")],
            port.LoadBalancerSourceRanges);
        Assert.Equal(30080, port.NodePort);
    }

    [Fact]
    public void ToServicePorts_InvalidSourceRange_ReportedAndOthersKept()
    {
        var service = Service("web", type: "LoadBalancer", ports: [Port("http", 80)]);
        service.Spec!.LoadBalancerSourceRanges = ["198.51.100.0/24", "nope/8"];
        var errors = new List<string>();

        var port = Assert.Single(ServiceConversion.ToServicePorts(service, errors)).Value;

        Assert.Equal([IpPrefix.Parse("198.51.100.0/24")], port.LoadBalancerSourceRanges);
        Assert.Contains("nope/8", Assert.Single(errors));
    }

    [Fact]
    public void ToServicePorts_NotLoadBalancer_IgnoresIngressAndSourceRanges()
    {
        var service = Service("web", type: "NodePort", ports: [Port("http", 80, nodePort: 30080)]);
        service.Status = new ServiceStatus { LoadBalancer = new LoadBalancerStatus { Ingress = [new LoadBalancerIngress { Ip = "203.0.113.10" }] } };
        service.Spec!.LoadBalancerSourceRanges = ["198.51.100.0/24"];

        var port = Assert.Single(ServiceConversion.ToServicePorts(service)).Value;

        Assert.True(port.LoadBalancerIPs.IsEmpty);
        Assert.True(port.LoadBalancerSourceRanges.IsEmpty);
    }

    [Fact]
    public void ToServicePorts_ExternalTrafficPolicyLocal_OnlyWhenExternallyReachable()
    {
        var clusterIP = Service("a", ports: [Port("http", 80)]);
        clusterIP.Spec!.ExternalTrafficPolicy = "Local";
        var nodePort = Service("b", type: "NodePort", ports: [Port("http", 80, nodePort: 30080)]);
        nodePort.Spec!.ExternalTrafficPolicy = "Local";
        var externalIP = Service("c", ports: [Port("http", 80)]);
        externalIP.Spec!.ExternalTrafficPolicy = "Local";
        externalIP.Spec.ExternalIPs = ["192.0.2.1"];

        Assert.False(Assert.Single(ServiceConversion.ToServicePorts(clusterIP)).Value.ExternalPolicyLocal);
        Assert.True(Assert.Single(ServiceConversion.ToServicePorts(nodePort)).Value.ExternalPolicyLocal);
        var withExternalIP = Assert.Single(ServiceConversion.ToServicePorts(externalIP)).Value;
        Assert.True(withExternalIP.ExternalPolicyLocal);
        Assert.Equal([IPAddress.Parse("192.0.2.1")], withExternalIP.ExternalIPs);
    }

    [Fact]
    public void ToServicePorts_InternalTrafficPolicyLocal_Flagged()
    {
        var service = Service("web", ports: [Port("http", 80)]);
        service.Spec!.InternalTrafficPolicy = "Local";

        Assert.True(Assert.Single(ServiceConversion.ToServicePorts(service)).Value.InternalPolicyLocal);
    }

    [Theory]
    [InlineData(null, TrafficDistribution.Default)]
    [InlineData("PreferClose", TrafficDistribution.PreferSameZone)] // the older name of PreferSameZone
    [InlineData("PreferSameZone", TrafficDistribution.PreferSameZone)]
    [InlineData("PreferSameNode", TrafficDistribution.PreferSameNode)]
    [InlineData("preferSameNode", TrafficDistribution.Default)] // API values are case-sensitive
    [InlineData("PreferSameRack", TrafficDistribution.Default)] // unknown values are ignored, as kube-proxy does
    public void ToServicePorts_TrafficDistribution_ParsedWithAliasAndUnknownIgnored(string? value, TrafficDistribution expected)
    {
        var service = Service("web", ports: [Port("http", 80)]);
        service.Spec!.TrafficDistribution = value;

        Assert.Equal(expected, Assert.Single(ServiceConversion.ToServicePorts(service)).Value.TrafficDistribution);
    }

    [Fact]
    public void ToServicePorts_SameInput_EqualResults()
    {
        var a = ServiceConversion.ToServicePorts(Service("web", ports: [Port("http", 80)]));
        var b = ServiceConversion.ToServicePorts(Service("web", ports: [Port("http", 80)]));

        Assert.Equal(a.Single().Value, b.Single().Value);
    }

    [Fact]
    public void ToEndpoints_NamedPorts_EachEndpointPerPortByName()
    {
        var slice = Slice(
            "web-abc", "web",
            [SlicePort("http", 8080), SlicePort("metrics", 9090)],
            [Ep("10.244.1.5", node: Host), Ep("10.244.2.6", node: "node-b")],
            ns: "shop");

        var endpoints = ServiceConversion.ToEndpoints(slice, Host).ToList();

        Assert.Equal(4, endpoints.Count);
        var http = endpoints.Where(e => e.Port == PortName("web", "http", ns: "shop")).Select(e => e.Endpoint.Endpoint).ToList();
        var metrics = endpoints.Where(e => e.Port == PortName("web", "metrics", ns: "shop")).Select(e => e.Endpoint.Endpoint).ToList();
        Assert.Equal(["10.244.1.5:8080", "10.244.2.6:8080"], http);
        Assert.Equal(["10.244.1.5:9090", "10.244.2.6:9090"], metrics);
    }

    [Fact]
    public void ToEndpoints_NoConditions_ReadyAndServingNotTerminating()
    {
        var slice = Slice("web-abc", "web", [SlicePort("http", 8080)], [Ep("10.244.1.5")]);

        var (_, ep) = Assert.Single(ServiceConversion.ToEndpoints(slice, Host));

        Assert.True(ep.Ready);
        Assert.True(ep.Serving);
        Assert.False(ep.Terminating);
    }

    [Fact]
    public void ToEndpoints_ReadyNilWithOtherConditions_Ready()
    {
        var slice = Slice("web-abc", "web", [SlicePort("http", 8080)], [Ep("10.244.1.5", terminating: false)]);

        Assert.True(Assert.Single(ServiceConversion.ToEndpoints(slice, Host)).Endpoint.Ready);
    }

    [Fact]
    public void ToEndpoints_ExplicitConditions_Kept()
    {
        var slice = Slice("web-abc", "web", [SlicePort("http", 8080)], [Ep("10.244.1.5", ready: false, serving: true, terminating: true)]);

        var ep = Assert.Single(ServiceConversion.ToEndpoints(slice, Host)).Endpoint;

        Assert.False(ep.Ready);
        Assert.True(ep.Serving);
        Assert.True(ep.Terminating);
    }

    [Fact]
    public void ToEndpoints_NodeName_IsLocalOnlyForThisHost()
    {
        var slice = Slice(
            "web-abc", "web", [SlicePort("http", 8080)],
            [Ep("10.244.1.5", node: Host), Ep("10.244.2.6", node: "node-b"), Ep("10.244.3.7")]);

        var local = ServiceConversion.ToEndpoints(slice, Host).ToDictionary(e => e.Endpoint.Address.ToString(), e => e.Endpoint.IsLocal);

        Assert.True(local["10.244.1.5"]);
        Assert.False(local["10.244.2.6"]);
        Assert.False(local["10.244.3.7"]);
    }

    [Fact]
    public void ToEndpoints_ZoneHints_SortedAndNullWithoutHints()
    {
        var slice = Slice(
            "web-abc", "web", [SlicePort("http", 8080)],
            [Ep("10.244.1.5", zone: "z1", hints: ["zb", "za"]), Ep("10.244.2.6")]);

        var eps = ServiceConversion.ToEndpoints(slice, Host).Select(e => e.Endpoint).ToList();

        Assert.Equal("z1", eps[0].Zone);
        Assert.Equal(["za", "zb"], eps[0].ZoneHints!.Value);
        Assert.Null(eps[1].ZoneHints);
    }

    [Fact]
    public void ToEndpoints_NodeHints_SortedAndNullWithoutThem()
    {
        var slice = Slice(
            "web-abc", "web", [SlicePort("http", 8080)],
            [Ep("10.244.1.5", hints: ["za"], nodeHints: ["node-b", Host]), Ep("10.244.2.6", hints: ["zb"]), Ep("10.244.3.7")]);

        var eps = ServiceConversion.ToEndpoints(slice, Host).Select(e => e.Endpoint).ToList();

        Assert.Equal([Host, "node-b"], eps[0].NodeHints!.Value);
        Assert.Equal(["za"], eps[0].ZoneHints!.Value);
        Assert.Null(eps[1].NodeHints); // zone hints alone
        Assert.Null(eps[2].NodeHints);
    }

    [Fact]
    public void ToEndpoints_FqdnAddressType_Ignored()
    {
        var slice = Slice("web-abc", "web", [SlicePort("http", 8080)], [Ep("example.com")], addressType: "FQDN");

        Assert.Empty(ServiceConversion.ToEndpoints(slice, Host));
    }

    [Fact]
    public void ToEndpoints_IPv6Slice_FormatsBracketedEndpoint()
    {
        var slice = Slice("web-abc", "web", [SlicePort("http", 8080)], [Ep("fd00::5")], addressType: "IPv6");

        var ep = Assert.Single(ServiceConversion.ToEndpoints(slice, Host)).Endpoint;

        Assert.Equal(IpFamily.IPv6, ep.Family);
        Assert.Equal("[fd00::5]:8080", ep.Endpoint);
    }

    [Fact]
    public void ToEndpoints_MissingServiceNameLabel_Ignored()
    {
        var slice = Slice("web-abc", null, [SlicePort("http", 8080)], [Ep("10.244.1.5")]);

        Assert.Empty(ServiceConversion.ToEndpoints(slice, Host));
    }

    [Fact]
    public void ToEndpoints_InvalidPortsAndAddresses_Skipped()
    {
        var slice = Slice(
            "web-abc", "web",
            [SlicePort("http", 8080), SlicePort("bad", 0), SlicePort("icmp", 1, "ICMP"), new EndpointPort { Name = "nil-port" }],
            [Ep("10.244.1.5"), Ep("garbage"), Ep("10.244.1")]);

        var (port, ep) = Assert.Single(ServiceConversion.ToEndpoints(slice, Host));

        Assert.Equal(PortName("web", "http"), port);
        Assert.Equal("10.244.1.5:8080", ep.Endpoint);
    }

    [Fact]
    public void LastChangeTriggerTime_Annotation_Parsed()
    {
        var slice = Slice("web-abc", "web", [], [], triggerTime: "2024-05-01T10:00:00Z");

        Assert.Equal(new DateTimeOffset(2024, 5, 1, 10, 0, 0, TimeSpan.Zero), ServiceConversion.LastChangeTriggerTime(slice));
        Assert.Null(ServiceConversion.LastChangeTriggerTime(Slice("web-abc", "web", [], [])));
        Assert.Null(ServiceConversion.LastChangeTriggerTime(Slice("web-abc", "web", [], [], triggerTime: "yesterday")));
    }
}
