using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Proxy;

public class ServiceChangeTrackerTests
{
    private static Service Web(int httpPort = 80, int httpsPort = 443) => Service("web", ports: [Port("http", httpPort), Port("https", httpsPort)]);

    [Fact]
    public void Update_Add_PendingAndCheckoutReturnsEveryPort()
    {
        var tracker = new ServiceChangeTracker();

        Assert.True(tracker.Update(null, Web()));
        Assert.Equal(1, tracker.PendingCount);

        var changed = tracker.Checkout();

        Assert.Equal([PortName("web", "http"), PortName("web", "https")], changed.Select(c => c.Name).Order());
        Assert.All(changed, c => Assert.NotNull(c.Info));
        Assert.Equal(0, tracker.PendingCount);
    }

    [Fact]
    public void Update_AddThenDeleteBeforeCheckout_NoPendingChange()
    {
        var tracker = new ServiceChangeTracker();
        var service = Web();

        tracker.Update(null, service);
        Assert.False(tracker.Update(service, null));

        Assert.Equal(0, tracker.PendingCount);
        Assert.Empty(tracker.Checkout());
    }

    [Fact]
    public void Update_IdenticalContent_Dropped()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        var sameContent = Web();
        sameContent.Metadata!.ResourceVersion = "2";
        sameContent.Metadata.Annotations = new() { ["note"] = "irrelevant to the proxy" };

        Assert.False(tracker.Update(Web(), sameContent));
        Assert.Equal(0, tracker.PendingCount);
        Assert.Empty(tracker.Checkout());
    }

    [Fact]
    public void Update_SamePortsInAnotherOrder_Dropped()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        var reordered = Web();
        reordered.Spec!.Ports!.Reverse();

        Assert.False(tracker.Update(Web(), reordered));
        Assert.Equal(0, tracker.PendingCount);
        Assert.Empty(tracker.Checkout());
    }

    [Fact]
    public void Update_ChangeThenRevertBeforeCheckout_CancelsOut()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        Assert.True(tracker.Update(Web(), Web(httpPort: 8080)));
        Assert.Equal(1, tracker.PendingCount);
        Assert.False(tracker.Update(Web(httpPort: 8080), Web()));

        Assert.Equal(0, tracker.PendingCount);
        Assert.Empty(tracker.Checkout());
    }

    [Fact]
    public void Checkout_OnePortOfTwoChanged_ReportsOnlyThatPort()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        tracker.Update(Web(), Web(httpsPort: 8443));
        var (name, info) = Assert.Single(tracker.Checkout());

        Assert.Equal(PortName("web", "https"), name);
        Assert.Equal(8443, info!.Port);
    }

    [Fact]
    public void Checkout_PortRemoved_ReportedWithNullInfo()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        tracker.Update(Web(), Service("web", ports: [Port("http", 80)]));
        var (name, info) = Assert.Single(tracker.Checkout());

        Assert.Equal(PortName("web", "https"), name);
        Assert.Null(info);
    }

    [Fact]
    public void Checkout_ServiceDeleted_EveryPortReportedRemoved()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        Assert.True(tracker.Update(Web(), null));
        var changed = tracker.Checkout();

        Assert.Equal(2, changed.Count);
        Assert.All(changed, c => Assert.Null(c.Info));
    }

    [Fact]
    public void Checkout_ServiceBecomesHeadless_PortsRemoved()
    {
        var tracker = new ServiceChangeTracker();
        tracker.Update(null, Web());
        tracker.Checkout();

        var headless = Web();
        headless.Spec!.ClusterIP = "None";
        Assert.True(tracker.Update(Web(), headless));

        Assert.All(tracker.Checkout(), c => Assert.Null(c.Info));
    }

    [Fact]
    public void PendingCount_CountsServicesNotUpdates()
    {
        var tracker = new ServiceChangeTracker();

        tracker.Update(null, Web());
        tracker.Update(Web(), Web(httpPort: 81));
        tracker.Update(null, Service("api", clusterIP: "10.96.0.11", ports: [Port("grpc", 9000)]));

        Assert.Equal(2, tracker.PendingCount);
        Assert.Equal(3, tracker.Checkout().Count);
        Assert.Equal(0, tracker.PendingCount);
    }

    [Fact]
    public void Update_InvalidService_RaisesInvalidService()
    {
        var tracker = new ServiceChangeTracker();
        var problems = new List<string>();
        tracker.InvalidService += problems.Add;

        Assert.False(tracker.Update(null, Service("web", clusterIP: "bogus", ports: [Port("http", 80)])));

        Assert.Contains("bogus", Assert.Single(problems));
    }

    [Fact]
    public void Update_BothNull_NoChange()
    {
        var tracker = new ServiceChangeTracker();

        Assert.False(tracker.Update(null, null));
        Assert.Equal(0, tracker.PendingCount);
    }
}

public class EndpointsChangeTrackerTests
{
    private static EndpointSlice WebSlice(string name, params Endpoint[] endpoints) =>
        Slice(name, "web", [SlicePort("http", 8080), SlicePort("metrics", 9090)], endpoints);

    [Fact]
    public void Update_AddThenDeleteBeforeCheckout_NothingPending()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var slice = WebSlice("web-1", Ep("10.244.0.1"));

        Assert.True(tracker.Update(null, slice));
        Assert.False(tracker.Update(slice, null));

        Assert.Equal(0, tracker.PendingCount);
        var (changed, triggers) = tracker.Checkout();
        Assert.Empty(changed);
        Assert.Empty(triggers);
    }

    [Fact]
    public void Update_IdenticalContent_Dropped()
    {
        var tracker = new EndpointsChangeTracker(Host);
        tracker.Update(null, WebSlice("web-1", Ep("10.244.0.1")));
        tracker.Checkout();

        Assert.False(tracker.Update(WebSlice("web-1", Ep("10.244.0.1")), WebSlice("web-1", Ep("10.244.0.1"))));

        Assert.Equal(0, tracker.PendingCount);
        Assert.Empty(tracker.Checkout().Changed);
    }

    [Fact]
    public void Checkout_SlicesOfOneService_Merged()
    {
        var tracker = new EndpointsChangeTracker(Host);

        tracker.Update(null, WebSlice("web-1", Ep("10.244.0.2"), Ep("10.244.0.1")));
        tracker.Update(null, WebSlice("web-2", Ep("10.244.0.3"), Ep("10.244.0.1"))); // .1 listed twice counts once
        Assert.Equal(1, tracker.PendingCount);
        var (changed, _) = tracker.Checkout();

        Assert.Equal([PortName("web", "http"), PortName("web", "metrics")], changed.Order());
        Assert.Equal(["10.244.0.1:8080", "10.244.0.2:8080", "10.244.0.3:8080"], tracker.EndpointsOf(PortName("web", "http")).Select(e => e.Endpoint));
        Assert.Equal(["10.244.0.1:9090", "10.244.0.2:9090", "10.244.0.3:9090"], tracker.EndpointsOf(PortName("web", "metrics")).Select(e => e.Endpoint));
    }

    [Fact]
    public void Checkout_OneSliceOfTwoDeleted_OtherSliceEndpointsRemain()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var first = WebSlice("web-1", Ep("10.244.0.1"));
        tracker.Update(null, first);
        tracker.Update(null, WebSlice("web-2", Ep("10.244.0.2")));
        tracker.Checkout();

        Assert.True(tracker.Update(first, null));
        tracker.Checkout();

        Assert.Equal(["10.244.0.2:8080"], tracker.EndpointsOf(PortName("web", "http")).Select(e => e.Endpoint));
    }

    [Fact]
    public void Checkout_EndpointRemoved_ReportsItsPorts()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var before = WebSlice("web-1", Ep("10.244.0.1"), Ep("10.244.0.2"));
        tracker.Update(null, before);
        tracker.Checkout();

        tracker.Update(before, WebSlice("web-1", Ep("10.244.0.1")));
        var (changed, _) = tracker.Checkout();

        Assert.Equal([PortName("web", "http"), PortName("web", "metrics")], changed.Order());
        Assert.Equal(["10.244.0.1:8080"], tracker.EndpointsOf(PortName("web", "http")).Select(e => e.Endpoint));
    }

    [Fact]
    public void Checkout_OnlyOnePortChanged_ReportsOnlyThatPort()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var before = Slice("web-1", "web", [SlicePort("http", 8080), SlicePort("metrics", 9090)], [Ep("10.244.0.1")]);
        tracker.Update(null, before);
        tracker.Checkout();

        tracker.Update(before, Slice("web-1", "web", [SlicePort("http", 8080), SlicePort("metrics", 9091)], [Ep("10.244.0.1")]));
        var (changed, _) = tracker.Checkout();

        Assert.Equal([PortName("web", "metrics")], changed);
    }

    [Fact]
    public void Checkout_ConditionChanged_ReportsPorts()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var before = WebSlice("web-1", Ep("10.244.0.1"));
        tracker.Update(null, before);
        tracker.Checkout();

        Assert.True(tracker.Update(before, WebSlice("web-1", Ep("10.244.0.1", ready: false, serving: true, terminating: true))));
        var (changed, _) = tracker.Checkout();

        Assert.Equal(2, changed.Count);
        Assert.True(tracker.EndpointsOf(PortName("web", "http")).Single().Terminating);
    }

    [Fact]
    public void Checkout_AllSlicesDeleted_PortsReportedAndEndpointsEmpty()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var slice = WebSlice("web-1", Ep("10.244.0.1"));
        tracker.Update(null, slice);
        tracker.Checkout();

        tracker.Update(slice, null);
        var (changed, _) = tracker.Checkout();

        Assert.Equal(2, changed.Count);
        Assert.True(tracker.EndpointsOf(PortName("web", "http")).IsEmpty);
    }

    [Fact]
    public void Checkout_TriggerTimes_EarliestPerServiceReturnedOnce()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var early = new DateTimeOffset(2024, 5, 1, 10, 0, 0, TimeSpan.Zero);

        tracker.Update(null, Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.0.1")], triggerTime: "2024-05-01T10:00:05Z"));
        tracker.Update(null, Slice("web-2", "web", [SlicePort("http", 8080)], [Ep("10.244.0.2")], triggerTime: "2024-05-01T10:00:00Z"));
        tracker.Update(null, Slice("web-3", "web", [SlicePort("http", 8080)], [Ep("10.244.0.3")], triggerTime: "2024-05-01T10:00:09Z"));

        var (_, triggers) = tracker.Checkout();

        Assert.Equal([early], triggers);
        Assert.Empty(tracker.Checkout().TriggerTimes);
    }

    [Fact]
    public void Checkout_ChangeCancelledOut_TriggerTimeDropped()
    {
        var tracker = new EndpointsChangeTracker(Host);
        var slice = Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.0.1")], triggerTime: "2024-05-01T10:00:00Z");

        tracker.Update(null, slice);
        tracker.Update(slice, null);

        Assert.Empty(tracker.Checkout().TriggerTimes);
    }

    [Fact]
    public void PendingCount_CountsServices()
    {
        var tracker = new EndpointsChangeTracker(Host);

        tracker.Update(null, WebSlice("web-1", Ep("10.244.0.1")));
        tracker.Update(null, WebSlice("web-2", Ep("10.244.0.2")));
        tracker.Update(null, Slice("api-1", "api", [SlicePort("grpc", 9000)], [Ep("10.244.1.1")]));

        Assert.Equal(2, tracker.PendingCount);
        tracker.Checkout();
        Assert.Equal(0, tracker.PendingCount);
    }

    [Fact]
    public void Update_SliceWithoutServiceNameLabel_Ignored()
    {
        var tracker = new EndpointsChangeTracker(Host);

        Assert.False(tracker.Update(null, Slice("orphan", null, [SlicePort("http", 8080)], [Ep("10.244.0.1")])));
        Assert.Equal(0, tracker.PendingCount);
    }

    [Fact]
    public void EndpointsOf_LocalEndpoint_MarkedByHostName()
    {
        var tracker = new EndpointsChangeTracker(Host);
        tracker.Update(null, WebSlice("web-1", Ep("10.244.0.1", node: Host), Ep("10.244.0.2", node: "node-b")));
        tracker.Checkout();

        var endpoints = tracker.EndpointsOf(PortName("web", "http"));

        Assert.True(endpoints[0].IsLocal);
        Assert.False(endpoints[1].IsLocal);
    }

    [Fact]
    public void EndpointsOf_BeforeCheckout_ReturnsAppliedOnly()
    {
        var tracker = new EndpointsChangeTracker(Host);
        tracker.Update(null, WebSlice("web-1", Ep("10.244.0.1")));

        Assert.True(tracker.EndpointsOf(PortName("web", "http")).IsEmpty);
    }

    [Fact]
    public void Update_SameSliceNameInOtherNamespace_SeparateServices()
    {
        var tracker = new EndpointsChangeTracker(Host);
        tracker.Update(null, Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.0.1")], ns: "a"));
        tracker.Update(null, Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.0.2")], ns: "b"));
        tracker.Checkout();

        Assert.Equal(["10.244.0.1:8080"], tracker.EndpointsOf(PortName("web", "http", ns: "a")).Select(e => e.Endpoint));
        Assert.Equal(["10.244.0.2:8080"], tracker.EndpointsOf(PortName("web", "http", ns: "b")).Select(e => e.Endpoint));
    }
}
