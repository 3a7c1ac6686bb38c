using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Model;
using ProxyPlanes.Web;

namespace ProxyPlanes.Core.Tests.Health;

public sealed class ServiceHealthServerTests : IAsyncLifetime
{
    private static readonly NamespacedName Web = new("shop", "web");
    private static readonly NamespacedName Api = new("shop", "api");

    private readonly CapturingLogger _logger = new();
    private readonly HttpClient _http = Loopback.Client();
    private volatile bool _proxyHealthy = true;
    private readonly ServiceHealthServer _server;

    public ServiceHealthServerTests() => _server = new ServiceHealthServer(_logger, () => _proxyHealthy);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        _http.Dispose();
        await _server.DisposeAsync();
    }

    private static Dictionary<int, (NamespacedName Service, int LocalEndpoints)> Services(params (int Port, NamespacedName Service, int Count)[] entries) =>
        entries.ToDictionary(e => e.Port, e => (e.Service, e.Count));

    private Task UpdateAsync(params (int Port, NamespacedName Service, int Count)[] entries) =>
        _server.UpdateAsync(Services(entries), Loopback.V4, CancellationToken.None).WaitAsync(Loopback.Timeout);

    private async Task<(HttpStatusCode Status, string Body, HttpResponseMessage Response)> GetAsync(int port, string path = "/")
    {
        var response = await _http.GetAsync(Loopback.Url(port, path));
        return (response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    private static void AssertBody(string body, NamespacedName service, int count, bool proxyHealthy)
    {
        using var json = JsonDocument.Parse(body);
        var root = json.RootElement;
        Assert.Equal(service.Namespace, root.GetProperty("service").GetProperty("namespace").GetString());
        Assert.Equal(service.Name, root.GetProperty("service").GetProperty("name").GetString());
        Assert.Equal(count, root.GetProperty("localEndpoints").GetInt32());
        Assert.Equal(proxyHealthy, root.GetProperty("serviceProxyHealthy").GetBoolean());
    }

    [Fact]
    public async Task UpdateAsync_ServiceWithLocalEndpoints_Answers200WithJsonAndHeaders()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 2));

        var (status, body, response) = await GetAsync(port, "/any/path?probe=1");

        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("nosniff", Assert.Single(response.Headers.GetValues("X-Content-Type-Options")));
        Assert.Equal("2", Assert.Single(response.Headers.GetValues("X-Load-Balancing-Endpoint-Weight")));
        Assert.Equal(
            "{\n\t\"service\": {\n\t\t\"namespace\": \"shop\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}",
            body);
        AssertBody(body, Web, 2, proxyHealthy: true);
        Assert.Contains(port, _server.ListeningPorts);
    }

    [Theory]
    [InlineData("shop", "web")]
    [InlineData("we\"ird", "back\\slash")]
    [InlineData("<script>", "caf\u00e9\n\t")]
    public void FormatBody_EscapesNamesAsTheJsonSerializerDoes(string ns, string name)
    {
        var body = ServiceHealthServer.FormatBody(new NamespacedName(ns, name), 3, proxyHealthy: false);

        // The reflection serializer is the reference (fine in a test; the daemon is published native AOT without it).
        Assert.Contains($"\"namespace\": {JsonSerializer.Serialize(ns)},", body);
        Assert.Contains($"\"name\": {JsonSerializer.Serialize(name)}\n", body);
        using var json = JsonDocument.Parse(body);
        Assert.Equal(ns, json.RootElement.GetProperty("service").GetProperty("namespace").GetString());
        Assert.Equal(name, json.RootElement.GetProperty("service").GetProperty("name").GetString());
    }

    [Fact]
    public async Task UpdateAsync_NoLocalEndpoints_Answers503WithZeroCount()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 0));

        var (status, body, response) = await GetAsync(port);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        Assert.Equal("application/json", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("\"localEndpoints\": 0", body);
        AssertBody(body, Web, 0, proxyHealthy: true);
    }

    [Fact]
    public async Task Request_ProxyUnhealthy_Answers503EvenWithLocalEndpoints()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 3));

        _proxyHealthy = false;
        var (unhealthy, body, _) = await GetAsync(port);
        _proxyHealthy = true;
        var (healthy, _, _) = await GetAsync(port);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, unhealthy);
        AssertBody(body, Web, 3, proxyHealthy: false);
        Assert.Equal(HttpStatusCode.OK, healthy);
    }

    [Fact]
    public async Task UpdateAsync_OnlyCountsChange_UpdatesInPlaceWithoutRestart()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 1));
        await using var connection = await RawHttpConnection.ConnectAsync(port);
        var first = await connection.GetAsync("/");

        await UpdateAsync((port, Web, 0));
        var drained = await connection.GetAsync("/healthz");
        await UpdateAsync((port, Web, 4));
        var back = await connection.GetAsync("/");

        // The same kept-alive connection answered all three: the listener never restarted.
        Assert.Equal(200, first.Status);
        AssertBody(first.Body, Web, 1, proxyHealthy: true);
        Assert.Equal(503, drained.Status);
        AssertBody(drained.Body, Web, 0, proxyHealthy: true);
        Assert.Equal(200, back.Status);
        AssertBody(back.Body, Web, 4, proxyHealthy: true);
    }

    [Fact]
    public async Task UpdateAsync_PortRemoved_StopsListening()
    {
        var kept = Loopback.FreePort();
        var removed = Loopback.FreePort();
        await UpdateAsync((kept, Web, 1), (removed, Api, 1));
        Assert.True(await Loopback.AcceptsAsync(removed));

        await UpdateAsync((kept, Web, 1));

        Assert.False(await Loopback.AcceptsAsync(removed));
        var refused = await Assert.ThrowsAsync<HttpRequestException>(() => _http.GetAsync(Loopback.Url(removed)));
        Assert.Equal(SocketError.ConnectionRefused, Assert.IsType<SocketException>(refused.InnerException).SocketErrorCode);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(kept)).Status);
        Assert.Equal(new HashSet<int> { kept }, _server.ListeningPorts.ToHashSet());
        Assert.Contains(_logger.AtLeast(LogLevel.Information), m => m.Contains($"{removed}") && m.Contains("shop/api"));
    }

    [Fact]
    public async Task UpdateAsync_PortReassignedToAnotherService_AnswersForTheNewService()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 1));

        await UpdateAsync((port, Api, 0));

        var (status, body, _) = await GetAsync(port);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, status);
        AssertBody(body, Api, 0, proxyHealthy: true);
    }

    [Fact]
    public async Task UpdateAsync_PortInUse_WarnsOnceDoesNotThrowAndRetriesNextUpdate()
    {
        var busy = Loopback.FreePort();
        var free = Loopback.FreePort();
        var blocker = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        blocker.Bind(new IPEndPoint(IPAddress.Loopback, busy));
        blocker.Listen();

        await UpdateAsync((busy, Web, 1), (free, Api, 1));
        await UpdateAsync((busy, Web, 1), (free, Api, 1));

        var warnings = _logger.AtLeast(LogLevel.Warning).ToList();
        var warning = Assert.Single(warnings);
        Assert.Contains($"{busy}", warning);
        Assert.Contains("shop/web", warning);
        Assert.Contains("in use", warning);
        Assert.DoesNotContain(busy, _server.ListeningPorts);
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(free)).Status);

        blocker.Dispose();
        await UpdateAsync((busy, Web, 1), (free, Api, 1));

        Assert.Contains(busy, _server.ListeningPorts);
        var (status, body, _) = await GetAsync(busy);
        Assert.Equal(HttpStatusCode.OK, status);
        AssertBody(body, Web, 1, proxyHealthy: true);
    }

    [Fact]
    public async Task UpdateAsync_PortRemovedThenAddedAgain_ListensAgain()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 1));
        Assert.Equal(HttpStatusCode.OK, (await GetAsync(port)).Status);

        await UpdateAsync();
        Assert.False(await Loopback.AcceptsAsync(port));
        await UpdateAsync((port, Web, 2));

        var (status, body, _) = await GetAsync(port);
        Assert.Equal(HttpStatusCode.OK, status);
        AssertBody(body, Web, 2, proxyHealthy: true);
    }

    [Ipv6Fact]
    public async Task UpdateAsync_AddressesChange_RebindsOnTheNewAddresses()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 1));

        await _server.UpdateAsync(Services((port, Web, 1)), new EquatableArray<IPAddress>([IPAddress.IPv6Loopback]), CancellationToken.None)
            .WaitAsync(Loopback.Timeout);

        Assert.False(await Loopback.AcceptsAsync(port));
        var response = await _http.GetAsync(Loopback.Url(port, address: IPAddress.IPv6Loopback));
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
    }

    [Ipv6Fact]
    public async Task UpdateAsync_IPv4AndIPv6Loopback_AnswersOnBoth()
    {
        var port = Loopback.FreePort();

        await _server.UpdateAsync(Services((port, Web, 1)), new EquatableArray<IPAddress>([IPAddress.Loopback, IPAddress.IPv6Loopback]), CancellationToken.None)
            .WaitAsync(Loopback.Timeout);

        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync(Loopback.Url(port))).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await _http.GetAsync(Loopback.Url(port, address: IPAddress.IPv6Loopback))).StatusCode);
    }

    [Fact]
    public async Task DisposeAsync_OpenListeners_ClosesThemAndRejectsUpdates()
    {
        var port = Loopback.FreePort();
        await UpdateAsync((port, Web, 1));

        await _server.DisposeAsync();

        Assert.False(await Loopback.AcceptsAsync(port));
        Assert.Empty(_server.ListeningPorts);
        await Assert.ThrowsAsync<ObjectDisposedException>(() => UpdateAsync((port, Web, 1)));
    }

    [Fact]
    public async Task UpdateAsync_CancelledBeforeStart_ThrowsAndOpensNothing()
    {
        var port = Loopback.FreePort();
        using var cancelled = new CancellationTokenSource();
        await cancelled.CancelAsync();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => _server.UpdateAsync(Services((port, Web, 1)), Loopback.V4, cancelled.Token));

        Assert.Empty(_server.ListeningPorts);
        Assert.False(await Loopback.AcceptsAsync(port));
    }
}

/// <summary>A fact that needs IPv6 (::1): skipped, saying so, on a host without it.</summary>
public sealed class Ipv6FactAttribute : FactAttribute
{
    public Ipv6FactAttribute()
    {
        if (!Socket.OSSupportsIPv6) Skip = "needs IPv6 (::1); this host has no IPv6";
    }
}
