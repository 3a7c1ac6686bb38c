using System.Net;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Core.Tests.Proxy;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Web;
using static ProxyPlanes.Core.Tests.Metrics.MetricsTestHelpers;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Health;

/// <summary>
/// /healthz and /livez per IP family, as kube-proxy 1.33+ answers them: the real controller and health
/// server (Kestrel on loopback, a real HTTP client), a backend whose IPv6 part fails, a clock moved by hand.
/// </summary>
public sealed class ProxyHealthEndpointsTests : IAsyncDisposable
{
    private static readonly DateTimeOffset Start = new(2024, 1, 1, 0, 0, 0, TimeSpan.Zero);

    private readonly ManualTimeProvider _time = new(Start);
    private readonly RecordingBackend _backend = new() { Families = [IpFamily.IPv4, IpFamily.IPv6] };
    private readonly ProxyMetrics _metrics = new();
    private readonly ProxyController _controller;
    private readonly HttpClient _http = Loopback.Client();
    private readonly int _port = Loopback.FreePort();
    private WebApplication? _app;

    public ProxyHealthEndpointsTests()
    {
        // --sync-period 30 s: a change may wait 60 s before the proxy is unhealthy.
        var options = new ProxyOptions { HostName = Host, Sync = new SyncRunnerOptions { SyncPeriod = TimeSpan.FromSeconds(30) } };
        _controller = new ProxyController(options, _backend, _metrics, NullLogger.Instance, _time);
    }

    public async ValueTask DisposeAsync()
    {
        if (_app is not null) await _app.DisposeAsync();
        _http.Dispose();
        _metrics.Dispose();
    }

    private async Task StartServerAsync()
    {
        var endpoint = new IPEndPoint(IPAddress.Loopback, _port);
        var builder = WebApplication.CreateSlimBuilder();
        ProxyHttpEndpoints.Listen(builder, null, endpoint);
        _app = builder.Build();
        ProxyHttpEndpoints.Map(_app, null, endpoint, _metrics, _controller.Health, _backend.Mode);
        await _app.StartAsync();
    }

    private async Task<(int Status, string Body)> GetAsync(string path)
    {
        using var response = await _http.GetAsync(Loopback.Url(_port, path));
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("nosniff", Assert.Single(response.Headers.GetValues("X-Content-Type-Options")));
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    private async Task<((int Status, string Body) Healthz, (int Status, string Body) Livez)> ProbeAsync() =>
        (await GetAsync("/healthz"), await GetAsync("/livez"));

    private static Service Web() => Service("web", ports: [Port("http", 80)]);

    private static EndpointSlice WebSlice(string ip) => Slice("web-1", "web", [SlicePort("http", 8080)], [Ep(ip)]);

    [Fact]
    public async Task Healthz_Ipv6PartFailsPastTheTimeout_503WithKubeProxysPerFamilyBody_Ipv4StillUpdated()
    {
        await StartServerAsync();
        var before = await GetAsync("/healthz");
        Assert.Equal(503, before.Status); // nothing programmed yet
        _controller.OnService(null, Web());
        _controller.OnEndpointSlice(null, WebSlice("10.244.1.2"));
        _controller.OnInitialStateDelivered();
        await _controller.SyncNowAsync(full: true);
        _time.Advance(TimeSpan.FromSeconds(1));

        // Positive control: both families programmed.
        var healthy = await GetAsync("/healthz");
        Assert.Equal(200, healthy.Status);
        Assert.Equal(
            """{"lastUpdated":"2024-01-01T00:00:01Z","currentTime":"2024-01-01T00:00:01Z","nodeEligible":true,"healthy":true,"status":{"IPv4":{"lastUpdated":"2024-01-01T00:00:00Z","healthy":true},"IPv6":{"lastUpdated":"2024-01-01T00:00:00Z","healthy":true}}}""",
            healthy.Body);

        // A change arrives; ip6tables-restore (say) refuses it, iptables-restore takes it.
        _backend.FailingFamily = IpFamily.IPv6;
        _controller.OnEndpointSlice(WebSlice("10.244.1.2"), WebSlice("10.244.1.3"));
        _time.Advance(TimeSpan.FromMilliseconds(500));
        var failure = await Assert.ThrowsAsync<BackendSyncException>(() => _controller.SyncNowAsync(full: false));
        Assert.Equal([IpFamily.IPv4], failure.AppliedFamilies);
        _time.Advance(TimeSpan.FromSeconds(59.4));
        Assert.Equal(200, (await GetAsync("/healthz")).Status); // the IPv6 change has waited 59.9 s: not too long yet
        _time.Advance(TimeSpan.FromSeconds(0.6));

        var (healthz, livez) = await ProbeAsync();

        Assert.Equal(503, healthz.Status);
        Assert.Equal(
            """{"lastUpdated":"2024-01-01T00:00:01.5Z","currentTime":"2024-01-01T00:01:01.5Z","nodeEligible":true,"healthy":false,"status":{"IPv4":{"lastUpdated":"2024-01-01T00:00:01.5Z","healthy":true},"IPv6":{"lastUpdated":"2024-01-01T00:00:00Z","healthy":false}}}""",
            healthz.Body);
        Assert.Equal(503, livez.Status);
        Assert.Equal( // /livez: the same without nodeEligible
            """{"lastUpdated":"2024-01-01T00:00:01.5Z","currentTime":"2024-01-01T00:01:01.5Z","healthy":false,"status":{"IPv4":{"lastUpdated":"2024-01-01T00:00:01.5Z","healthy":true},"IPv6":{"lastUpdated":"2024-01-01T00:00:00Z","healthy":false}}}""",
            livez.Body);

        // The retry programs IPv6 too: healthy again.
        _backend.FailingFamily = null;
        await _controller.SyncNowAsync(full: true);
        Assert.Equal(200, (await GetAsync("/healthz")).Status);
        Assert.Equal(200, (await GetAsync("/livez")).Status);

        var scrape = await _metrics.ExportTextAsync();
        Assert.Equal(3, Sample(scrape, "kubeproxy_proxy_healthz_total{code=\"200\"}"));
        Assert.Equal(2, Sample(scrape, "kubeproxy_proxy_healthz_total{code=\"503\"}"));
        Assert.Equal(1, Sample(scrape, "kubeproxy_proxy_livez_total{code=\"200\"}"));
        Assert.Equal(1, Sample(scrape, "kubeproxy_proxy_livez_total{code=\"503\"}"));
    }

    [Fact]
    public async Task Healthz_NodeTaintedForDeletion_503ButHealthyTrue_LivezStays200()
    {
        await StartServerAsync();
        _controller.OnService(null, Web());
        _controller.OnInitialStateDelivered();
        await _controller.SyncNowAsync(full: true);
        Assert.Equal(200, (await GetAsync("/healthz")).Status); // positive control

        _controller.Health.NodeEligible(false);
        var (healthz, livez) = await ProbeAsync();

        // kube-proxy: "healthy" is the proxy's own health; only the status code adds the node check,
        // and lastUpdated is the newest family update, not "now", since the answer is not 200.
        Assert.Equal(503, healthz.Status);
        Assert.Equal(
            """{"lastUpdated":"2024-01-01T00:00:00Z","currentTime":"2024-01-01T00:00:00Z","nodeEligible":false,"healthy":true,"status":{"IPv4":{"lastUpdated":"2024-01-01T00:00:00Z","healthy":true},"IPv6":{"lastUpdated":"2024-01-01T00:00:00Z","healthy":true}}}""",
            healthz.Body);
        Assert.Equal(200, livez.Status);
        Assert.DoesNotContain("nodeEligible", livez.Body);
    }

    [Fact]
    public void GoTime_AsGoMarshalsTimeToJson()
    {
        Assert.Equal("0001-01-01T00:00:00Z", ProxyHttpEndpoints.GoTime(null)); // Go's zero time: never updated
        Assert.Equal("2024-01-01T00:00:00Z", ProxyHttpEndpoints.GoTime(Start));
        Assert.Equal("2024-01-01T00:00:00.1234567Z", ProxyHttpEndpoints.GoTime(Start.AddTicks(1_234_567)));
        Assert.Equal("2024-01-01T00:00:00.12Z", ProxyHttpEndpoints.GoTime(Start.AddMilliseconds(120)));
        Assert.Equal("2024-01-01T01:00:00Z", ProxyHttpEndpoints.GoTime(new DateTimeOffset(2024, 1, 1, 2, 0, 0, TimeSpan.FromHours(1))));
    }
}
