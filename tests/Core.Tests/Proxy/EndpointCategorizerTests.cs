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

        Assert.Equal(TrafficDistribution.PreferSameZone, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.AllReachable));
    }

    [Fact]
    public void Categorize_OneReadyEndpointWithoutHints_TopologyNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: ["zone-b"]), EpInfo("10.0.0.3") };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a");

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2", "10.0.0.3"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_EmptyHintsList_TopologyNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: []) };

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(2, EndpointCategorizer.Categorize(Info(), endpoints, "zone-a").Cluster.Count);
    }

    [Fact]
    public void Categorize_NoEndpointHintedForNodeZone_TopologyNotUsed()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-b"]), EpInfo("10.0.0.2", hints: ["zone-c"]) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a");

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    public void Categorize_NodeHasNoZone_TopologyNotUsed(string? zone)
    {
        var endpoints = new[] { EpInfo("10.0.0.1", hints: ["zone-a"]), EpInfo("10.0.0.2", hints: ["zone-b"]) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, zone);

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, zone));
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

    // PreferSameNode: the slice controller writes forNodes (the endpoint's node) and forZones (its
    // zone) on every endpoint; kube-proxy uses the node hints, else the zone hints, else everything.

    [Fact]
    public void Categorize_EveryReadyEndpointNodeHintedOneForThisNode_OnlyThisNodesEndpoints()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"], nodeHints: ["node-b"]),
            EpInfo("10.0.0.3", hints: ["zone-a"], nodeHints: ["node-c", Host]),
            EpInfo("10.0.0.4", ready: false, serving: false), // not ready: its missing hints do not matter
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.PreferSameNode, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.Cluster)); // the zone alone would also take 10.0.0.2
        Assert.Equal(["10.0.0.1", "10.0.0.3"], Addresses(set.AllReachable));
        Assert.True(set.HasAnyEndpoints);
    }

    [Fact]
    public void Categorize_NodeHintsNoneForThisNode_FallsBackToZoneHints()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: ["node-b"]),
            EpInfo("10.0.0.2", hints: ["zone-b"], nodeHints: ["node-c"]),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.PreferSameZone, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_OneReadyEndpointWithoutNodeHint_FallsBackToZoneHints()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"]),
            EpInfo("10.0.0.3", hints: ["zone-b"], nodeHints: ["node-c"]),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.PreferSameZone, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_NodeHintsPartialAndZoneHintsPartial_AllEndpoints()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2"),
            EpInfo("10.0.0.3", hints: ["zone-b"], nodeHints: ["node-c"]),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2", "10.0.0.3"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_NodeHintsForThisNodeWithoutZoneHints_OnlyThisNodesEndpoints()
    {
        // The controller writes node hints alone when nodes have no zone: the node mode needs no zone.
        var endpoints = new[] { EpInfo("10.0.0.1", nodeHints: [Host]), EpInfo("10.0.0.2", nodeHints: ["node-b"]) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null, Host);

        Assert.Equal(["10.0.0.1"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_NodeHintsNoneForThisNodeAndNoZoneHints_AllEndpoints()
    {
        var endpoints = new[] { EpInfo("10.0.0.1", nodeHints: ["node-b"]), EpInfo("10.0.0.2", nodeHints: ["node-c"]) };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_OnlyANotReadyEndpointHintedForThisNode_FallsBackToZoneHints()
    {
        // Only ready endpoints count: a node mode would leave nothing ready to serve here.
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", ready: false, serving: true, terminating: true, hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"], nodeHints: ["node-b"]),
            EpInfo("10.0.0.3", hints: ["zone-b"], nodeHints: ["node-c"]),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.PreferSameZone, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.2"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_NodeHintedButNoneReady_ServingTerminatingEndpointsIgnoreHints()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", ready: false, serving: true, terminating: true, hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", ready: false, serving: true, terminating: true, hints: ["zone-b"], nodeHints: ["node-b"]),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
        Assert.True(set.HasAnyEndpoints);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("")]
    public void Categorize_NodeNameUnknown_NodeHintsNeverMatchZoneHintsDo(string? nodeName)
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"], nodeHints: ["node-b"]),
            EpInfo("10.0.0.3", hints: ["zone-b"], nodeHints: ["node-c"]),
        };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, "zone-a", nodeName);

        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_ServiceTrafficDistributionWithoutHints_AllEndpoints()
    {
        // As in kube-proxy the hints decide, not the field: without hints nothing narrows.
        var service = Info() with { TrafficDistribution = TrafficDistribution.PreferSameNode };
        var endpoints = new[] { EpInfo("10.0.0.1", local: true), EpInfo("10.0.0.2") };

        var set = EndpointCategorizer.Categorize(service, endpoints, "zone-a", Host);

        Assert.Equal(TrafficDistribution.Default, EndpointCategorizer.TopologyModeFromHints(endpoints, Host, "zone-a"));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
    }

    [Fact]
    public void Categorize_NodeHintsAndInternalLocal_LocalIgnoresHints()
    {
        // The endpoint on this node is hinted for another node: policy Local still takes it, and only it.
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"], nodeHints: ["node-b"], local: true),
        };

        var set = EndpointCategorizer.Categorize(Info(internalLocal: true), endpoints, "zone-a", Host);

        Assert.Equal(["10.0.0.2"], Addresses(set.Local));
        Assert.Equal(["10.0.0.2"], Addresses(set.AllReachable));
        Assert.True(set.Cluster.IsEmpty);
    }

    [Fact]
    public void Categorize_NodeHintsWithExternalLocal_ClusterNarrowedLocalNotAndAllReachableMergesBoth()
    {
        var service = Info(nodePort: 30080, externalLocal: true);
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"], nodeHints: ["node-b"], local: true),
            EpInfo("10.0.0.3", hints: ["zone-b"], nodeHints: ["node-c"]),
        };

        var set = EndpointCategorizer.Categorize(service, endpoints, "zone-a", Host);

        Assert.Equal(["10.0.0.1"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.2"], Addresses(set.Local));
        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.AllReachable));
    }

    [Fact]
    public void CategorizeByFamily_NodeHints_MatchedAgainstTheNetworksNodeName()
    {
        var endpoints = new[]
        {
            EpInfo("10.0.0.1", hints: ["zone-a"], nodeHints: [Host]),
            EpInfo("10.0.0.2", hints: ["zone-a"], nodeHints: ["node-b"]),
        };

        var onThisNode = EndpointCategorizer.CategorizeByFamily(Info(), endpoints, "zone-a", new NodeNetwork { NodeName = Host, Zone = "zone-a" });
        var onNodeB = EndpointCategorizer.CategorizeByFamily(Info(), endpoints, "zone-a", new NodeNetwork { NodeName = "node-b", Zone = "zone-a" });

        Assert.Equal(["10.0.0.1"], Addresses(onThisNode.IPv4Endpoints.Cluster));
        Assert.Equal(["10.0.0.2"], Addresses(onNodeB.IPv4Endpoints.Cluster));
    }

    [Fact]
    public void Categorize_UnsortedInput_OutputSortedByAddress()
    {
        var endpoints = new[] { EpInfo("10.0.0.10"), EpInfo("10.0.0.9"), EpInfo("10.0.0.100") };

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.Equal(["10.0.0.9", "10.0.0.10", "10.0.0.100"], Addresses(set.Cluster));
    }
}
