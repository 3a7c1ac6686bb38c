using System.Collections.Immutable;
using System.Net;
using System.Runtime.InteropServices;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Model;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>
/// The intake's compact structures (issues 12, 13): the endpoints tracker's sorted slice and port arrays, the
/// pools that share the tracker's arrays, and the shared verdicts of a family without endpoints.
/// </summary>
public class IntakeSharingTests
{
    private static EndpointSlice Named(string name) => Slice(name, "web", [SlicePort("http", 8080)], []);

    private static string[] Names((string Name, EndpointSlice Slice)[] slices) => [.. slices.Select(s => s.Name)];

    [Fact]
    public void WithSlice_AddsInNameOrder_ReplacesAndRemoves_WithoutTouchingTheOldArray()
    {
        (string, EndpointSlice)[] slices = [];
        foreach (var name in new[] { "web-b", "web-d", "web-a", "web-c" })
            slices = EndpointsChangeTracker.WithSlice(slices, name, Named(name));
        Assert.Equal(["web-a", "web-b", "web-c", "web-d"], Names(slices));

        var replacement = Named("web-c");
        var replaced = EndpointsChangeTracker.WithSlice(slices, "web-c", replacement);
        Assert.Same(replacement, replaced[2].Item2);
        Assert.NotSame(replacement, slices[2].Item2); // the array the tracker held before is not changed
        Assert.Equal(4, replaced.Length);

        var removed = EndpointsChangeTracker.WithSlice(replaced, "web-b", null);
        Assert.Equal(["web-a", "web-c", "web-d"], Names(removed));
        Assert.Equal(["web-a", "web-b", "web-c", "web-d"], Names(replaced));
        Assert.Same(removed, EndpointsChangeTracker.WithSlice(removed, "web-x", null));
        Assert.Empty(EndpointsChangeTracker.WithSlice([("web-a", Named("web-a"))], "web-a", null));
    }

    [Fact]
    public void SortedDistinct_UnsortedWithDuplicates_SortedAndTheFirstListedKept()
    {
        var first = EpInfo("10.0.0.2") with { Zone = "first" };
        var endpoints = new List<EndpointInfo>
        {
            EpInfo("10.0.0.3"), first, EpInfo("10.0.0.1"), EpInfo("10.0.0.2") with { Zone = "second" }, EpInfo("10.0.0.2") with { Zone = "third" },
        };

        var result = EndpointsChangeTracker.SortedDistinct(endpoints);

        Assert.Equal(["10.0.0.1", "10.0.0.2", "10.0.0.3"], Addresses(result));
        Assert.Same(first, result[1]);
    }

    [Fact]
    public void SortedDistinct_SortedInput_SameEndpoints()
    {
        var endpoints = new List<EndpointInfo> { EpInfo("10.0.0.1"), EpInfo("10.0.0.2"), EpInfo("10.0.0.10") };

        Assert.Equal(endpoints, EndpointsChangeTracker.SortedDistinct(endpoints));
    }

    [Fact]
    public void Merge_SameEndpointInTwoSlices_TheFirstSliceByNameWinsWhateverTheOrderOfUpdates()
    {
        var early = Slice("web-a", "web", [SlicePort("http", 8080)], [Ep("10.244.0.1", ready: true, zone: "a")]);
        var late = Slice("web-b", "web", [SlicePort("http", 8080)], [Ep("10.244.0.1", ready: false, zone: "b"), Ep("10.244.0.0")]);
        foreach (var order in new[] { new[] { early, late }, [late, early] })
        {
            var tracker = new EndpointsChangeTracker(Host);
            foreach (var slice in order) tracker.Update(null, slice);
            tracker.Checkout();

            var endpoints = tracker.EndpointsOf(PortName("web", "http"));
            Assert.Equal(["10.244.0.0", "10.244.0.1"], Addresses(endpoints));
            Assert.Equal("a", endpoints[1].Zone);
        }
    }

    [Fact]
    public void Merge_PortsOfSeveralSlices_SortedByPortAndMergedPerPort()
    {
        var slices = new[]
        {
            ("s1", Slice("s1", "web", [SlicePort("metrics", 9090), SlicePort("http", 8080)], [Ep("10.244.0.2")])),
            ("s2", Slice("s2", "web", [SlicePort("http", 8080), SlicePort("dns", 53, "UDP")], [Ep("10.244.0.1")])),
        };

        var merged = EndpointsChangeTracker.Merge(slices, Host);

        Assert.Equal([PortName("web", "dns", Protocol.UDP), PortName("web", "http"), PortName("web", "metrics")], merged.Select(p => p.Port));
        Assert.Equal(["10.244.0.1", "10.244.0.2"], Addresses(merged[1].Endpoints));
        Assert.Equal(["10.244.0.1"], Addresses(merged[0].Endpoints));
        Assert.Equal(["10.244.0.2"], Addresses(merged[2].Endpoints));
    }

    [Fact]
    public void CategorizeByFamily_SortedEndpointsAllQualify_PoolsAndVerdictAreTheTrackersArray()
    {
        var tracker = new EndpointsChangeTracker(Host);
        tracker.Update(null, Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.0.2"), Ep("10.244.0.1", node: Host)]));
        tracker.Checkout();
        var endpoints = tracker.EndpointsOf(PortName("web", "http"));
        var array = ImmutableCollectionsMarshal.AsArray(endpoints.AsImmutableArray());

        var state = EndpointCategorizer.CategorizeByFamily(Info("web", externalLocal: false) with { InternalPolicyLocal = false }, endpoints, null, new NodeNetwork { NodeName = Host });

        Assert.Same(array, ImmutableCollectionsMarshal.AsArray(state.IPv4Endpoints.Cluster.AsImmutableArray()));
        Assert.Same(array, ImmutableCollectionsMarshal.AsArray(state.IPv4Verdict.Endpoints.AsImmutableArray()));
        Assert.Same(array, ImmutableCollectionsMarshal.AsArray(state.IPv4Verdict.InternalTraffic.Endpoints.AsImmutableArray()));
    }

    [Fact]
    public void Categorize_UnsortedEndpointsAllQualify_SortedCopy()
    {
        var endpoints = ImmutableArray.Create(EpInfo("10.0.0.2"), EpInfo("10.0.0.1"));

        var set = EndpointCategorizer.Categorize(Info(), endpoints, null);

        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(set.Cluster));
        Assert.Equal(["10.0.0.2", "10.0.0.1"], Addresses(endpoints));
    }

    [Fact]
    public void CategorizeByFamily_MixedFamilies_EachFamilyItsOwn()
    {
        var endpoints = ImmutableArray.Create(EpInfo("10.0.0.1"), EpInfo("fd00::1"), EpInfo("10.0.0.2"));

        var state = EndpointCategorizer.CategorizeByFamily(Info(), endpoints, null);

        Assert.Equal(["10.0.0.1", "10.0.0.2"], Addresses(state.IPv4Endpoints.Cluster));
        Assert.Equal(["fd00::1"], Addresses(state.IPv6Endpoints.Cluster));
    }

    public static TheoryData<bool, bool, bool, int?, bool> NoEndpointCases()
    {
        var data = new TheoryData<bool, bool, bool, int?, bool>();
        foreach (var internalLocal in new[] { false, true })
        foreach (var externalLocal in new[] { false, true })
        foreach (var masqueradeAll in new[] { false, true })
        foreach (var sticky in new int?[] { null, 300 })
        foreach (var ranges in new[] { false, true })
            data.Add(internalLocal, externalLocal, masqueradeAll, sticky, ranges);
        return data;
    }

    [Theory]
    [MemberData(nameof(NoEndpointCases))]
    public void DecideOrShare_FamilyWithoutEndpoints_SameVerdictAsDecide(bool internalLocal, bool externalLocal, bool masqueradeAll, int? sticky, bool ranges)
    {
        var service = Info(nodePort: 30080, internalLocal: internalLocal, externalLocal: externalLocal) with
        {
            StickyTimeoutSeconds = sticky,
            LoadBalancerSourceRanges = ranges ? new EquatableArray<IpPrefix>([IpPrefix.Parse("fd00::/64"), IpPrefix.Parse("10.0.0.0/8")]) : EquatableArray<IpPrefix>.Empty,
        };
        var network = new NodeNetwork
        {
            NodeName = Host,
            MasqueradeAll = masqueradeAll,
            LocalDetector = new LocalTrafficDetector(LocalDetectMode.ClusterCidr, new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.0.0/16"), IpPrefix.Parse("fd00:244::/64")])),
            NodeIPs = new EquatableArray<IPAddress>([IPAddress.Parse("fd00::5"), IPAddress.Parse("10.0.0.5")]),
        };
        foreach (var family in new[] { IpFamily.IPv4, IpFamily.IPv6 })
            Assert.Equal(
                EndpointCategorizer.Decide(service, EndpointSet.Empty, family, network),
                EndpointCategorizer.DecideOrShare(service, EndpointSet.Empty, family, network));
    }

    [Fact]
    public void CategorizeByFamily_SingleStackPorts_ShareTheOtherFamilysVerdict()
    {
        var a = EndpointCategorizer.CategorizeByFamily(Info("a"), [EpInfo("10.0.0.1")], null);
        var b = EndpointCategorizer.CategorizeByFamily(Info("b"), [EpInfo("10.0.0.2")], null);
        var sticky = EndpointCategorizer.CategorizeByFamily(Info("c") with { StickyTimeoutSeconds = 60 }, [EpInfo("10.0.0.3")], null);

        Assert.Same(a.IPv6Verdict, b.IPv6Verdict);
        Assert.Equal(TrafficAction.Reject, a.IPv6Verdict.InternalTraffic.Action);
        Assert.Equal(60, sticky.IPv6Verdict.AffinityTimeoutSeconds);
        Assert.NotSame(a.IPv4Verdict, b.IPv4Verdict);
    }

    [Fact]
    public void Checkout_AfterABurst_PendingMapsGiveTheirRoomBack()
    {
        var services = new ServiceChangeTracker();
        var endpoints = new EndpointsChangeTracker(Host);
        for (var i = 0; i < 3 * ChangeTracking.KeptCapacity; i++)
        {
            services.Update(null, Service($"svc-{i}", ports: [Port("http", 80)]));
            endpoints.Update(null, Slice($"svc-{i}-1", $"svc-{i}", [SlicePort("http", 8080)], [Ep("10.244.0.1")], triggerTime: "2026-12-07T10:00:00Z"));
        }
        Assert.True(services.PendingCapacity >= 3 * ChangeTracking.KeptCapacity);

        services.Checkout();
        endpoints.Checkout();

        Assert.True(services.PendingCapacity <= ChangeTracking.KeptCapacity, $"{services.PendingCapacity}");
        Assert.True(endpoints.PendingCapacity.Pending <= ChangeTracking.KeptCapacity, $"{endpoints.PendingCapacity}");
        Assert.True(endpoints.PendingCapacity.TriggerTimes <= ChangeTracking.KeptCapacity, $"{endpoints.PendingCapacity}");
        Assert.Equal([new IPEndPoint(IPAddress.Parse("10.244.0.1"), 8080).ToString()], endpoints.EndpointsOf(PortName("svc-7", "http")).Select(e => e.Endpoint));
    }
}
