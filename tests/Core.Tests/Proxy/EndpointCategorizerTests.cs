using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Proxy;

public class EndpointCategorizerTests
{
    [Fact]
    public void Categorize_MixedReadiness_OnlyReadyEndpoints()
    {
        var endpoints = new[] { EpInfo("10.0.0.3"), EpInfo("10.0.0.1", ready: false, serving: false), EpInfo("10.0.0.2") };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.Equal(["10.0.0.2", "10.0.0.3"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.2", "10.0.0.3"], Addresses(set.AllReachable));
        Assert.True(set.Local.IsEmpty);
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_ReadyAndServingTerminating_TerminatingNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1"), EpInfo("10.0.0.2", ready: false, serving: true, terminating: true) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.Equal(["10.0.0.1"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_NoneReady_FallsBackToServingTerminating()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", ready: false, serving: true, terminating: true),
            EpInfo("10.0.0.2", ready: false, serving: false, terminating: true),
            EpInfo("10.0.0.3", ready: false, serving: false),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.Equal(["10.0.0.1"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.1"], Addresses(set.AllReachable));
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_NothingServing_HasAnyEndpointsFalse()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", ready: false, serving: false, terminating: true),
            EpInfo("10.0.0.2", ready: false, serving: true, terminating: false),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.False(set.HasAnyEndpoints);
        Assert.True(set.Cluster.IsEmpty);
        Assert.True(set.AllReachable.IsEmpty);
    }

    [Fact]
    public void Categorize_NoEndpoints_EmptyAndHasAnyEndpointsFalse()
    {
        var set = EndpointCategorizer.Categorize(Info(internalLocal: true), [], null);

        Assert.False(set.HasAnyEndpoints);
        Assert.True(set.AllReachable.IsEmpty);
    }

    [Fact]
    public void Categorize_InternalTrafficPolicyLocal_OnlyLocalEndpoints()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", local: true), EpInfo("10.0.0.2"), EpInfo("10.0.0.3", local: true) };

        var set = EndpointCategorizer.Categorize(Info(internalLocal: true), endpoints, null);

        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.Local));
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.AllReachable));
        Assert.True(set.Cluster.IsEmpty);
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_InternalLocalWithOnlyRemoteEndpoints_NoLocalButHasAnyEndpoints()
    {
        // Traffic is dropped (not rejected): endpoints exist, just none on this node.
        var set = EndpointCategorizer.Categorize(Info(internalLocal: true), [EpInfo("10.0.0.2")], null);

        Assert.True(set.Local.IsEmpty);
        Assert.True(set.AllReachable.IsEmpty);
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_InternalLocalWithOnlyLocalTerminating_FallsBackToLocalServingTerminating()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", ready: false, serving: true, terminating: true, local: true),
            EpInfo("10.0.0.2", ready: false, serving: true, terminating: true),
        };

        var set = EndpointCategorizer.Categorize(Info(internalLocal: true), endpoints, null);

        Assert.Equal(["10.0.0.1"], Addresses(set.Local));
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_ExternalTrafficPolicyLocalWithNodePort_ClusterStillPresentAndLocalOnlyLocal()
    {
        var service = Info(nodePort: 30080, externalLocal: true);
        var endpoints = new[] { EpInfo("10.0.0.1", local: true), EpInfo("10.0.0.2"), EpInfo("10.0.0.3") };

        var set = EndpointCategorizer.Categorize(service, endpoints, null);

        Assert.True(EndpointCategorizer.UsesClusterEndpoints(service));
        Assert.True(EndpointCategorizer.UsesLocalEndpoints(service));
        Assert.Equal(["10.0.0.1", "10.0.0.2", "10.0.0.3"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.1"], Addresses(set.Local));
        Assert.Equal(["10.0.0.1", "10.0.0.2", "10.0.0.3"], Addresses(set.AllReachable));
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_InternalLocalButNodePort_ClusterKeptForExternalShortCircuit()
    {
        var service = Info(nodePort: 30080, internalLocal: true);
        var endpoints = new[] { EpInfo("10.0.0.1", local: true), EpInfo("10.0.0.2") };

        var set = EndpointCategorizer.Categorize(service, endpoints, null);

        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.1"], Addresses(set.Local));
    }

    [Fact]
    public void Categorize_ExternalLocalWithLocalOnlyTerminating_AllReachableMergesBoth()
    {
        var service = Info(nodePort: 30080, externalLocal: true);
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", ready: false, serving: true, terminating: true, local: true),
            EpInfo("10.0.0.2"),
        };

        var set = EndpointCategorizer.Categorize(service, endpoints, null);

        Assert.Equal(["10.0.0.2"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.1"], Addresses(set.Local));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.AllReachable));
    }

    [Fact]
    public void Categorize_TopologyHintsMatchNodeZone_OnlyHintedEndpoints()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"]),
            EpInfo("10.0.0.2", hints: ["zone-b"]),
            EpInfo("10.0.0.3", hints: ["zone-a", "zone-b"]),
            EpInfo("10.0.0.4", ready: false, serving: false), // not ready: its missing hints do not matter
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a");

        Assert.True(EndpointCategorizer.CanUseTopology(endpoints, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.AllReachable));
    }

    [Fact]
    public void Categorize_OneReadyEndpointWithoutHints_TopologyNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: ["zone-b"]), EpInfo("10.0.0.3") };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a");

        Assert.False(EndpointCategorizer.CanUseTopology(endpoints, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2", "10.0.0.3"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_EmptyHintsList_TopologyNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: []) };

        Assert.False(EndpointCategorizer.CanUseTopology(endpoints, "zone-a"));
        Assert.Equal(2, EndpointCategorizer.Categorize(Info(), endpoints, "zone-a").Cluster.Count);
    }

    [Fact]
    public void Categorize_NoEndpointHintedForNodeZone_TopologyNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-b"]), EpInfo("10.0.0.2", hints: ["zone-c"]) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a");

        Assert.False(EndpointCategorizer.CanUseTopology(endpoints, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    public void Categorize_NodeHasNoZone_TopologyNotUsed(string? zone)
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: ["zone-b"]) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, zone);

        Assert.False(EndpointCategorizer.CanUseTopology(endpoints, zone));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_TopologyWithExternalLocal_AllReachableIncludesLocalOutsideZone()
    {
        var service = Info(nodePort: 30080, externalLocal: true);
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"]),
            EpInfo("10.0.0.2", hints: ["zone-b"], local: true),
        };

        var set = EndpointCategorizer.Categorize(service, endpoints, "zone-a");

        Assert.Equal(["10.0.0.1"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.2"], Addresses(set.Local));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.AllReachable));
    }

    [Fact]
    public void Categorize_TopologyAndInternalLocal_LocalIgnoresHints()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: ["zone-b"], local: true) };

        var set = EndpointCategorizer.Categorize(Info(internalLocal: true), endpoints, "zone-a");

        Assert.Equal(["10.0.0.2"], Addresses(set.Local));
        Assert.Equal(["10.0.0.2"], Addresses(set.AllReachable));
    }

    [Fact]
    public void Categorize_UnsortedInput_OutputSortedByAddress()
    {
        var endpoints = new[] { EpInfo("10.0.0.10"), EpInfo("10.0.0.9"), EpInfo("10.0.0.100") };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.Equal(["10.0.0.9", "10.0.0.10", "10.0.0.100"], Addresses(set.Cluster));
    }
}
