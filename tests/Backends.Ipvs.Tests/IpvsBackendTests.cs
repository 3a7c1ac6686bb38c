using System.Net;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Nftables.Tests;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

namespace ProxyPlanes.Backends.Ipvs.Tests;

/// <summary>The backend over the in-memory kernel: full and partial syncs, failures, graceful termination, cleanup.</summary>
public sealed partial class IpvsBackendTests : IDisposable
{
    private readonly ProxyMetrics _metrics = new();
    private readonly FakeIpvsKernel _kernel = new(IpvsPlannerGoldenTests.NodeIPs);
    private readonly ManualTime _time = new(IpvsPlannerGoldenTests.Now);

    public void Dispose() => _metrics.Dispose();

    private IpvsBackend Backend(string? scheduler = null, IEnumerable<IpPrefix>? exclude = null) =>
        new(_kernel, _metrics, NullLogger.Instance, [IpFamily.IPv4, IpFamily.IPv6], scheduler, TimeSpan.FromMinutes(15), exclude, _time);

    private static readonly VirtualServerKey Web = new(IPAddress.Parse("10.96.0.10"), Protocol.TCP, 80);
    private static readonly RealServerKey A = new(IPAddress.Parse("10.244.1.2"), 8080);
    private static readonly RealServerKey B = new(IPAddress.Parse("10.244.2.3"), 8080);

    private static DesiredState WebWith(params EndpointInfo[] endpoints) =>
        StateBuilder.State(null, StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), endpoints));

    private static SyncRequest Changed(DesiredState state) => StateBuilder.Partial(state, StateBuilder.Name("web"));

    [Fact]
    public async Task FirstSync_IsFullAndPreparesTheKernelOnce()
    {
        var backend = Backend();

        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false))), default);

        Assert.Equal(1, _kernel.Prepared);
        Assert.True(backend.LastPlan!.Full is false);
        Assert.Equal(["ipvsadm -a -t 10.96.0.10:80 -r 10.244.2.3:8080 -m -w 1"], backend.LastPlan.Operations.Select(o => o.ToString()));
        Assert.Equal(1, _kernel.Destination(Web, B)!.Weight);
        Assert.Contains(IPAddress.Parse("10.96.0.10"), _kernel.LinkAddresses);
    }

    [Fact]
    public async Task Canary_ChecksAServerTheLastSyncLeft_AnotherOnceThatOneLeavesTheState()
    {
        var backend = Backend();
        var api = new VirtualServerKey(IPAddress.Parse("10.96.0.20"), Protocol.TCP, 80);
        var both = StateBuilder.State(null,
            StateBuilder.Port(StateBuilder.Info("web", "10.96.0.10"), StateBuilder.Endpoint("10.244.1.2")),
            StateBuilder.Port(StateBuilder.Info("api", "10.96.0.20"), StateBuilder.Endpoint("10.244.2.3")));
        await backend.SyncAsync(StateBuilder.Full(both), default);
        Assert.True(await backend.CanaryIntactAsync(default));

        // The server it checks (the smallest key, web) deleted from outside: noticed.
        await _kernel.ApplyAsync([new DeleteService(Web)], default);
        Assert.False(await backend.CanaryIntactAsync(default));
        await backend.SyncAsync(StateBuilder.Full(both), default);
        Assert.True(await backend.CanaryIntactAsync(default));

        // web leaves the state: the canary moves to api (a server the last sync left), and api deleted from
        // outside is noticed; positive control: intact before.
        var apiOnly = StateBuilder.State(null, StateBuilder.Port(StateBuilder.Info("api", "10.96.0.20"), StateBuilder.Endpoint("10.244.2.3")));
        await backend.SyncAsync(StateBuilder.Partial(apiOnly, StateBuilder.Name("web")), default);
        Assert.True(await backend.CanaryIntactAsync(default));
        await _kernel.ApplyAsync([new DeleteService(api)], default);
        Assert.False(await backend.CanaryIntactAsync(default));
    }

    [Fact]
    public async Task Canary_IsTheLinkAndAVirtualServer_GoneWhenEitherIsRemovedFromOutside()
    {
        var backend = Backend();
        Assert.False(await backend.CanaryIntactAsync(default)); // nothing synced yet: nothing to trust
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.True(await backend.CanaryIntactAsync(default));

        // `ipvsadm -C` from outside: the virtual server is gone, the link still there.
        await _kernel.ApplyAsync([new DeleteService(Web)], default);
        Assert.False(await backend.CanaryIntactAsync(default));
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.True(await backend.CanaryIntactAsync(default));
        Assert.NotNull(_kernel.Destination(Web, A));

        // `ip link del kube-ipvs0`: the VIPs are gone although every virtual server stays.
        await _kernel.ApplyAsync([new DeleteLink(IpvsNames.Link)], default);
        Assert.False(await backend.CanaryIntactAsync(default));
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.True(await backend.CanaryIntactAsync(default));
        Assert.Contains(IPAddress.Parse("10.96.0.10"), _kernel.LinkAddresses);
    }

    [Fact]
    public async Task RemovedEndpoint_WithConnections_DrainsAtWeightZeroThenGoesWhenIdle()
    {
        var backend = Backend();
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false))), default);
        _kernel.SetConnections(Web, B, active: 2, inactive: 1);

        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.Equal(0, _kernel.Destination(Web, B)!.Weight);

        // Still busy at the next full sync: it stays.
        _time.Advance(TimeSpan.FromMinutes(1));
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.NotNull(_kernel.Destination(Web, B));
        Assert.Equal(1, backend.LastPlan!.State.DrainingCount);

        // Its connections ended: the next sync deletes it.
        _kernel.SetConnections(Web, B, active: 0, inactive: 0);
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.Null(_kernel.Destination(Web, B));
        Assert.Equal(0, backend.LastPlan!.State.DrainingCount);
    }

    [Fact]
    public async Task RemovedEndpoint_WithoutConnections_IsDeletedAtOnce()
    {
        var backend = Backend();
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false))), default);

        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        Assert.Null(_kernel.Destination(Web, B));
        Assert.Equal(["ipvsadm -d -t 10.96.0.10:80 -r 10.244.2.3:8080"], backend.LastPlan!.Operations.Where(o => o is not IpsetRestore).Select(o => o.ToString()));
    }

    [Fact]
    public async Task DrainingEndpoint_PastTheTimeout_IsDeletedWithItsConnections()
    {
        var backend = Backend();
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false))), default);
        _kernel.SetConnections(Web, B, active: 5, inactive: 0);
        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        _time.Advance(TimeSpan.FromMinutes(14));
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.NotNull(_kernel.Destination(Web, B));

        _time.Advance(TimeSpan.FromMinutes(2));
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.Null(_kernel.Destination(Web, B));
    }

    [Fact]
    public async Task DrainingEndpoint_ThatComesBack_GetsItsWeightBack()
    {
        var backend = Backend();
        var both = WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false));
        await backend.SyncAsync(StateBuilder.Full(both), default);
        _kernel.SetConnections(Web, B, active: 1, inactive: 0);
        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        Assert.Equal(0, _kernel.Destination(Web, B)!.Weight);

        await backend.SyncAsync(Changed(both), default);

        Assert.Equal(1, _kernel.Destination(Web, B)!.Weight);
        Assert.Equal(0, backend.LastPlan!.State.DrainingCount);
    }

    [Fact]
    public async Task TerminatingEndpoint_NotServing_Drains()
    {
        var backend = Backend();
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false))), default);
        _kernel.SetConnections(Web, B, active: 1, inactive: 0);

        // Terminating while another endpoint is ready: policy no longer uses it.
        await backend.SyncAsync(Changed(WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false, ready: false, terminating: true))), default);

        Assert.Equal(0, _kernel.Destination(Web, B)!.Weight);
    }

    [Fact]
    public async Task RemovedUdpEndpoint_IsDeletedEvenWithConnections()
    {
        var backend = Backend();
        var dns = new VirtualServerKey(IPAddress.Parse("10.96.0.53"), Protocol.UDP, 53);
        DesiredState State(params EndpointInfo[] endpoints) =>
            StateBuilder.State(null, StateBuilder.Port(StateBuilder.Info("dns", "10.96.0.53", 53, "dns", Protocol.UDP), endpoints));
        await backend.SyncAsync(StateBuilder.Full(State(StateBuilder.Endpoint("10.244.1.2", 53), StateBuilder.Endpoint("10.244.2.3", 53, local: false))), default);
        _kernel.SetConnections(dns, new RealServerKey(IPAddress.Parse("10.244.2.3"), 53), active: 0, inactive: 4);

        await backend.SyncAsync(StateBuilder.Partial(State(StateBuilder.Endpoint("10.244.1.2", 53)), StateBuilder.Name("dns", "dns", Protocol.UDP)), default);

        Assert.Null(_kernel.Destination(dns, new RealServerKey(IPAddress.Parse("10.244.2.3"), 53)));
    }

    [Fact]
    public async Task RefusedOperation_FailsTheSync_AndTheNextSyncIsFullAndRepairs()
    {
        var backend = Backend();
        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);
        _kernel.Fail = o => o is AddDestination;
        var both = WebWith(StateBuilder.Endpoint("10.244.1.2"), StateBuilder.Endpoint("10.244.2.3", local: false));

        var e = await Assert.ThrowsAsync<BackendSyncException>(() => backend.SyncAsync(Changed(both), default));
        Assert.Contains("ipvsadm -a -t 10.96.0.10:80 -r 10.244.2.3:8080 -m -w 1: Input/output error (EIO)", e.Message);
        Assert.Contains("the next sync is full", e.Message);

        _kernel.Fail = null;
        await backend.SyncAsync(Changed(both), default);
        Assert.True(backend.LastPlan!.Full);
        Assert.Equal(1, _kernel.Destination(Web, B)!.Weight);
    }

    [Fact]
    public async Task FullSync_RemovesForeignServersOutsideTheExcludedPrefixes()
    {
        var ours = new VirtualServerKey(IPAddress.Parse("10.96.9.9"), Protocol.TCP, 80);
        var theirs = new VirtualServerKey(IPAddress.Parse("192.168.50.1"), Protocol.TCP, 80);
        await _kernel.ApplyAsync([new AddService(new VirtualServer(ours, "rr")), new AddService(new VirtualServer(theirs, "wlc"))], default);
        var backend = Backend(exclude: [IpPrefix.Parse("192.168.50.0/24")]);

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        Assert.Equal([Web, theirs], _kernel.Services);
    }

    [Fact]
    public async Task Scheduler_IsCheckedAndUsed()
    {
        Assert.Throws<ArgumentException>(() => Backend("fastest"));
        var backend = Backend("mh");

        await backend.SyncAsync(StateBuilder.Full(WebWith(StateBuilder.Endpoint("10.244.1.2"))), default);

        Assert.Contains("ipvsadm -A -t 10.96.0.10:80 -s mh -b mh-port", backend.LastPlan!.ToString());
    }

    [Fact]
    public async Task Cleanup_RemovesServersLinkSetsAndRules()
    {
        var pristine = new FakeIpvsKernel(IpvsPlannerGoldenTests.NodeIPs).Dump();
        var backend = Backend();
        var cluster = new RandomCluster(7);
        for (var i = 0; i < 15; i++) cluster.Mutate();
        await backend.SyncAsync(StateBuilder.Full(cluster.State(StateBuilder.Network)), default);
        Assert.NotEmpty(_kernel.Services);

        await backend.CleanupAsync(default);

        Assert.Equal(pristine, _kernel.Dump());
    }

    [Fact]
    public async Task FullSync_AfterCleanup_RebuildsEverything()
    {
        var backend = Backend();
        var state = WebWith(StateBuilder.Endpoint("10.244.1.2"));
        await backend.SyncAsync(StateBuilder.Full(state), default);
        var built = _kernel.Dump();

        await backend.CleanupAsync(default);
        await backend.SyncAsync(Changed(state), default);

        Assert.Equal(built, _kernel.Dump());
    }

    private sealed class ManualTime(DateTimeOffset now) : TimeProvider
    {
        private DateTimeOffset _now = now;
        public void Advance(TimeSpan by) => _now += by;
        public override DateTimeOffset GetUtcNow() => _now;
    }
}
