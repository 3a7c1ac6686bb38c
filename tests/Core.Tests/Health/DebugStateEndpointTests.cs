using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Tests.Proxy;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Web;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Health;

/// <summary>
/// /debug/state on the metrics listener, as <c>proxyplanes explain --all</c> reads it: the real
/// controller (Core's policy decides the verdicts), Kestrel on loopback, a real HTTP client, and
/// explain's own fetcher (<see cref="DaemonState"/>).
/// </summary>
public sealed class DebugStateEndpointTests : IAsyncDisposable
{
    private static readonly DateTimeOffset Start = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly IPAddress[] NodeLocalAddresses = [IPAddress.Parse("203.0.113.1"), IPAddress.Loopback, IPAddress.Parse("10.244.1.1")];

    private readonly ManualTimeProvider _time = new(Start);
    private readonly RecordingBackend _backend = new();
    private readonly ProxyMetrics _metrics = new();
    private readonly ProxyController _controller;
    private readonly HttpClient _http = Loopback.Client();
    private readonly int _port = Loopback.FreePort();
    private WebApplication? _app;

    public DebugStateEndpointTests()
    {
        _controller = new ProxyController(new ProxyOptions { HostName = Host }, _backend, _metrics, NullLogger.Instance, _time)
        {
            LocalAddresses = () => NodeLocalAddresses,
        };
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null) await _app.DisposeAsync();
        _http.Dispose();
        _metrics.Dispose();
    }

    private async Task StartServerAsync(ProxyController? controller)
    {
        var endpoint = new IPEndPoint(IPAddress.Loopback, _port);
        var builder = WebApplication.CreateSlimBuilder();
        ProxyHttpEndpoints.Listen(builder, endpoint, null);
        _app = builder.Build();
        ProxyHttpEndpoints.Map(_app, endpoint, null, _metrics, _controller.Health, _backend.Mode, controller);
        await _app.StartAsync();
    }

    private async Task<(int Status, string? MediaType, string Body)> GetAsync(string path)
    {
        using var response = await _http.GetAsync(Loopback.Url(_port, path));
        return ((int)response.StatusCode, response.Content.Headers.ContentType?.MediaType, await response.Content.ReadAsStringAsync());
    }

    /// <summary>web (two endpoints), lonely (none), edge (node port, Local policy, its endpoint on another node), lb (a load-balancer IP with source ranges).</summary>
    private void DeliverServices()
    {
        _controller.OnService(null, Service("web", ports: [Port("http", 80)]));
        _controller.OnEndpointSlice(null, Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.1.2", node: "node-b"), Ep("10.244.1.3", node: "node-b")]));
        _controller.OnService(null, Service("lonely", clusterIP: "10.96.0.20", ports: [Port("http", 80)]));
        var edge = Service("edge", clusterIP: "10.96.0.30", type: "NodePort", ports: [Port("http", 80, nodePort: 30030)]);
        edge.Spec!.ExternalTrafficPolicy = "Local";
        _controller.OnService(null, edge);
        _controller.OnEndpointSlice(null, Slice("edge-1", "edge", [SlicePort("http", 8080)], [Ep("10.244.1.4", node: "node-b")]));
        var lb = Service("lb", clusterIP: "10.96.0.40", type: "LoadBalancer", ports: [Port("https", 443)]);
        lb.Spec!.LoadBalancerSourceRanges = ["198.51.100.0/24"];
        lb.Status = new ServiceStatus { LoadBalancer = new LoadBalancerStatus { Ingress = [new LoadBalancerIngress { Ip = "192.0.2.10" }] } };
        _controller.OnService(null, lb);
        _controller.OnEndpointSlice(null, Slice("lb-1", "lb", [SlicePort("https", 8443)], [Ep("10.244.1.5", node: "node-b")]));
        _controller.OnInitialStateDelivered();
    }

    private static string Row(DesiredFrontend f) =>
        $"{f.Name} {f.ServicePort} {DebugState.KindName(f.Kind)} {DebugState.VerdictName(f.Verdict)} [{string.Join(" ", f.Endpoints)}] [{string.Join(" ", f.SourceRanges)}]";

    [Fact]
    public async Task DebugState_BeforeTheFirstSync_503OneLine_AfterIt_EveryFrontendWithCoresVerdicts_AndTheSyncsGeneration()
    {
        await StartServerAsync(_controller);
        DeliverServices();

        var before = await GetAsync("/debug/state");
        Assert.Equal(503, before.Status);
        Assert.Equal("no successful sync yet: the desired state is served once the kernel has been programmed", Assert.Single(before.Body.Split('\n', StringSplitOptions.RemoveEmptyEntries)));

        await _controller.SyncNowAsync(full: true);
        var after = await GetAsync("/debug/state");

        Assert.Equal(200, after.Status);
        Assert.Equal("application/json", after.MediaType);
        var document = DebugState.Parse(after.Body);
        Assert.Equal(("fake", Host, 1L, Start), (document.Mode, document.Node, document.Generation, document.SyncedAt));
        Assert.Equal(
        [
            // Node ports at every local address but loopback; Local policy without a local endpoint drops.
            "tcp 10.244.1.1:30030 default/edge:http nodePort drop [] []",
            "tcp 10.96.0.10:80 default/web:http clusterIP forward [10.244.1.2:8080 10.244.1.3:8080] []",
            "tcp 10.96.0.20:80 default/lonely:http clusterIP reject [] []",
            "tcp 10.96.0.30:80 default/edge:http clusterIP forward [10.244.1.4:8080] []",
            "tcp 10.96.0.40:443 default/lb:https clusterIP forward [10.244.1.5:8443] []",
            "tcp 192.0.2.10:443 default/lb:https loadBalancerIP forward [10.244.1.5:8443] [198.51.100.0/24]",
            "tcp 203.0.113.1:30030 default/edge:http nodePort drop [] []",
        ], document.Frontends.Select(Row));

        // The next sync that programs something is generation 2, at its own time.
        _time.Advance(TimeSpan.FromSeconds(5));
        _controller.OnEndpointSlice(null, Slice("lonely-1", "lonely", [SlicePort("http", 8080)], [Ep("10.244.1.6", node: "node-b")]));
        await _controller.SyncNowAsync(full: false);
        var next = DebugState.Parse((await GetAsync("/debug/state")).Body);
        Assert.Equal((2L, Start.AddSeconds(5)), (next.Generation, next.SyncedAt));
        Assert.Contains("tcp 10.96.0.20:80 default/lonely:http clusterIP forward [10.244.1.6:8080] []", next.Frontends.Select(Row));
    }

    [Fact]
    public async Task DebugState_AFailedSync_KeepsServingTheLastAppliedState()
    {
        await StartServerAsync(_controller);
        DeliverServices();
        await _controller.SyncNowAsync(full: true);

        _backend.Failing = true;
        _controller.OnEndpointSlice(null, Slice("lonely-1", "lonely", [SlicePort("http", 8080)], [Ep("10.244.1.6", node: "node-b")]));
        await Assert.ThrowsAsync<BackendSyncException>(() => _controller.SyncNowAsync(full: false));

        // The kernel still holds generation 1: that is what the daemon says it programmed.
        var document = DebugState.Parse((await GetAsync("/debug/state")).Body);
        Assert.Equal(1L, document.Generation);
        Assert.Contains("tcp 10.96.0.20:80 default/lonely:http clusterIP reject [] []", document.Frontends.Select(Row));
    }

    [Fact]
    public async Task DebugState_NotMappedWithoutAController_404()
    {
        await StartServerAsync(controller: null);
        Assert.Equal(404, (await GetAsync("/debug/state")).Status);
        Assert.Equal(200, (await GetAsync("/proxyMode")).Status); // positive control: the listener is up
    }

    [Theory]
    [InlineData("127.0.0.1", "127.0.0.1", true)]
    [InlineData("127.0.0.5", "0.0.0.0", true)]
    [InlineData("::1", "::1", true)]
    [InlineData("::ffff:127.0.0.1", "::ffff:127.0.0.1", true)]
    [InlineData("203.0.113.1", "203.0.113.1", true)] // explain on the node, to the node's address it listens on
    [InlineData("10.244.1.7", "203.0.113.1", false)] // a pod, or another host: the metrics address may be 0.0.0.0
    [InlineData("::ffff:203.0.113.10", "::ffff:203.0.113.1", false)]
    public void FromThisNode_LoopbackOrTheListenedAddressItself(string remote, string local, bool expected) =>
        Assert.Equal(expected, ProxyHttpEndpoints.FromThisNode(IPAddress.Parse(remote), IPAddress.Parse(local)));

    [Fact]
    public async Task ExplainsFetcher_ReadsTheRealEndpoint_AndSaysWhyWhenItCannot()
    {
        await StartServerAsync(_controller);
        DeliverServices();
        var url = Loopback.Url(_port, "/debug/state");

        var (none, notYet) = await DaemonState.FetchAsync(url, DaemonState.Timeout, CancellationToken.None);
        Assert.Null(none);
        Assert.Equal($"{url} answered 503: no successful sync yet: the desired state is served once the kernel has been programmed", notYet);

        await _controller.SyncNowAsync(full: true);
        var (document, problem) = await DaemonState.FetchAsync(url, DaemonState.Timeout, CancellationToken.None);
        Assert.Null(problem);
        Assert.Equal(7, document!.Frontends.Count);

        // Nothing listens: skipped, with the reason, no exception.
        var closed = Loopback.Url(Loopback.FreePort(), "/debug/state");
        var (nothing, refused) = await DaemonState.FetchAsync(closed, DaemonState.Timeout, CancellationToken.None);
        Assert.Null(nothing);
        Assert.StartsWith($"{closed}: ", refused, StringComparison.Ordinal);
        Assert.Contains("refused", refused, StringComparison.OrdinalIgnoreCase);
    }
}
