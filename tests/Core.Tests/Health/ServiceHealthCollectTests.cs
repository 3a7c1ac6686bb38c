using System.Collections.Immutable;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.Web;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Health;

public sealed class ServiceHealthCollectTests
{
    private static ServicePortState Port(ServicePortInfo info, params EndpointInfo[] local)
    {
        var endpoints = new EquatableArray<EndpointInfo>(local);
        return EndpointCategorizer.Decided(info, new EndpointSet(endpoints, endpoints, endpoints) { HasAnyEndpoints = local.Length > 0 });
    }

    private static DesiredState State(params ServicePortState[] ports) =>
        DesiredState.Empty with { ServicePorts = ports.ToImmutableSortedDictionary(p => p.Name, p => p) };

    [Fact]
    public void Collect_MixedServices_PicksOnlyExternalPolicyLocalWithHealthCheckPort()
    {
        var state = State(
            Port(Info("local", nodePort: 30080, externalLocal: true) with { HealthCheckNodePort = 32000 }, EpInfo("10.244.0.5", local: true)),
            Port(Info("cluster", nodePort: 30081) with { HealthCheckNodePort = 32001 }, EpInfo("10.244.0.6", local: true)),
            Port(Info("noport", nodePort: 30082, externalLocal: true), EpInfo("10.244.0.7", local: true)),
            Port(Info("internal", internalLocal: true) with { HealthCheckNodePort = 32003 }, EpInfo("10.244.0.8", local: true)));

        var services = ServiceHealthServer.Collect(state);

        var (port, entry) = Assert.Single(services);
        Assert.Equal(32000, port);
        Assert.Equal(new NamespacedName("default", "local"), entry.Service);
        Assert.Equal(1, entry.LocalEndpoints);
    }

    [Fact]
    public void Collect_NoLocalEndpoints_ReportsZero()
    {
        var state = State(Port(Info("web", nodePort: 30080, externalLocal: true) with { HealthCheckNodePort = 32000 }));

        var services = ServiceHealthServer.Collect(state);

        Assert.Equal((new NamespacedName("default", "web"), 0), services[32000]);
    }

    [Fact]
    public void Collect_SeveralPorts_OneEntryCountingDistinctReadyAddresses()
    {
        // Pod .5 serves both ports (counted once); pod .6 serves only https.
        var state = State(
            Port(Info("web", "http", nodePort: 30080, externalLocal: true) with { HealthCheckNodePort = 32000 },
                EpInfo("10.244.0.5", local: true)),
            Port(Info("web", "https", nodePort: 30443, externalLocal: true) with { HealthCheckNodePort = 32000 },
                EpInfo("10.244.0.5", local: true) with { Port = 8443 }, EpInfo("10.244.0.6", local: true) with { Port = 8443 }));

        var services = ServiceHealthServer.Collect(state);

        Assert.Equal((new NamespacedName("default", "web"), 2), Assert.Single(services).Value);
    }

    [Fact]
    public void Collect_OnlyTerminatingLocalEndpoints_ReportsZeroSoLoadBalancersDrain()
    {
        // The categorizer keeps serving-terminating endpoints as the local fallback; they still
        // serve existing connections, but the health check must send new ones elsewhere.
        var state = State(Port(Info("web", nodePort: 30080, externalLocal: true) with { HealthCheckNodePort = 32000 },
            EpInfo("10.244.0.5", ready: false, serving: true, terminating: true, local: true)));

        var services = ServiceHealthServer.Collect(state);

        Assert.Equal(0, services[32000].LocalEndpoints);
    }

    [Fact]
    public void Collect_TwoServicesClaimSamePort_FirstByNameKeepsIt()
    {
        var state = State(
            Port(Info("zeta", nodePort: 30080, externalLocal: true) with { HealthCheckNodePort = 32000 }),
            Port(Info("alpha", nodePort: 30081, externalLocal: true) with { HealthCheckNodePort = 32000 }, EpInfo("10.244.0.5", local: true)));

        var services = ServiceHealthServer.Collect(state);

        Assert.Equal((new NamespacedName("default", "alpha"), 1), Assert.Single(services).Value);
    }

    [Fact]
    public void Collect_EmptyState_ReturnsEmpty() => Assert.Empty(ServiceHealthServer.Collect(DesiredState.Empty));
}
