using System.Collections.Frozen;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Transport.Sockets;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Model;

namespace ProxyPlanes.Web;

/// <summary>
/// kube-proxy's service health servers (pkg/proxy/healthcheck/service_health.go): for every
/// Service with <c>externalTrafficPolicy: Local</c> and a <c>spec.healthCheckNodePort</c>, an
/// HTTP listener on that port of every node-port address tells load balancers whether this node
/// has a ready local endpoint (200) or not (503), so they only send traffic to nodes that can
/// serve it without a second hop.
/// </summary>
/// <remarks>
/// Each port gets its own minimal Kestrel server, so ports open and close independently.
/// <see cref="UpdateAsync"/> is meant to run after every successful sync: it opens new ports,
/// closes ports no longer wanted and updates counts in place (no restart). A port that cannot
/// be bound is logged and retried on the next update; it never fails the sync.
/// </remarks>
public sealed class ServiceHealthServer : IAsyncDisposable
{
    private static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(2);

    private readonly ILogger _logger;
    private readonly Func<bool> _proxyHealthy;
    private readonly SemaphoreSlim _gate = new(1, 1);
    private readonly Dictionary<int, Listener> _listeners = [];
    // Port → description of its last bind failure, so a port that stays busy warns once, not every sync.
    private readonly Dictionary<int, string> _failures = [];
    private EquatableArray<IPAddress>? _addresses;
    private bool _addressesKnown;
    private bool _disposed;
    private IReadOnlySet<int> _listening = FrozenSet<int>.Empty;

    public ServiceHealthServer(ILogger logger, Func<bool> proxyHealthy)
    {
        ArgumentNullException.ThrowIfNull(logger);
        ArgumentNullException.ThrowIfNull(proxyHealthy);
        _logger = logger;
        _proxyHealthy = proxyHealthy;
    }

    /// <summary>Ports currently being served (a snapshot).</summary>
    public IReadOnlySet<int> ListeningPorts => Volatile.Read(ref _listening);

    /// <summary>
    /// The health check ports a state needs: for every service with a port whose external
    /// traffic policy is Local and that has a health check node port, that port mapped to the
    /// service and its local endpoint count.
    /// </summary>
    /// <remarks>
    /// The count follows kube-proxy (EndpointsMap.LocalReadyEndpoints): the number of distinct
    /// addresses of <em>ready</em> local endpoints over all the service's ports, so a pod serving
    /// two ports counts once and a service contributes one entry however many ports it has.
    /// Local endpoints kept only as the serving-but-terminating fallback are not counted: a node
    /// whose local pods are all terminating answers 503, letting load balancers drain it while
    /// those pods finish existing connections. The health check node port is per service, so
    /// all its ports carry the same one; should two services ever claim the same port (the API
    /// server prevents it), the first in name order keeps it.
    /// </remarks>
    public static IReadOnlyDictionary<int, (NamespacedName Service, int LocalEndpoints)> Collect(DesiredState state)
    {
        ArgumentNullException.ThrowIfNull(state);
        var ports = new Dictionary<NamespacedName, int>();
        var ready = new Dictionary<NamespacedName, HashSet<IPAddress>>();
        // ServicePorts is sorted by name, so a service's ports are adjacent and services come in order.
        foreach (var (name, port) in state.ServicePorts)
        {
            if (!port.Info.ExternalPolicyLocal || port.Info.HealthCheckNodePort == 0) continue;
            ports.TryAdd(name.Service, port.Info.HealthCheckNodePort);
            if (!ready.TryGetValue(name.Service, out var addresses)) ready[name.Service] = addresses = [];
            foreach (var endpoint in port.Endpoints.Local)
                if (endpoint.Ready && endpoint.IsLocal) addresses.Add(endpoint.Address);
        }

        var result = new Dictionary<int, (NamespacedName Service, int LocalEndpoints)>();
        foreach (var (service, port) in ports.OrderBy(p => p.Key))
            result.TryAdd(port, (service, ready[service].Count));
        return result;
    }

    /// <summary>
    /// Makes the listeners match <paramref name="services"/> (health check port → service and its
    /// local endpoint count) on <paramref name="addresses"/> (null: every address, 0.0.0.0 and [::]).
    /// </summary>
    public async Task UpdateAsync(
        IReadOnlyDictionary<int, (NamespacedName Service, int LocalEndpoints)> services,
        EquatableArray<IPAddress>? addresses,
        CancellationToken ct)
    {
        ArgumentNullException.ThrowIfNull(services);
        await _gate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);

            // New node-port addresses mean every listener binds elsewhere: reopen them all.
            var addressesChanged = _addressesKnown && _addresses != addresses;
            _addresses = addresses;
            _addressesKnown = true;

            var closing = _listeners.Values.Where(l => addressesChanged || !services.ContainsKey(l.Port)).ToList();
            foreach (var listener in closing)
            {
                _listeners.Remove(listener.Port);
                if (!services.ContainsKey(listener.Port))
                    _logger.LogInformation("Closing health check node port {Port} of service {Service}", listener.Port, listener.Current.Service);
            }
            await Task.WhenAll(closing.Select(StopAsync)).ConfigureAwait(false);
            foreach (var port in _failures.Keys.Where(p => !services.ContainsKey(p)).ToList())
                _failures.Remove(port);

            var opening = new List<Listener>();
            foreach (var (port, (service, count)) in services)
            {
                var entry = new HealthEntry(service, Math.Max(0, count));
                if (_listeners.TryGetValue(port, out var existing))
                    existing.Current = entry;
                else if (port is <= 0 or > 65535)
                    _logger.LogWarning("Ignoring health check node port {Port} of service {Service}: not a valid port", port, service);
                else
                    opening.Add(new Listener(port, entry));
            }

            var bindTo = BindAddresses(addresses);
            var results = await Task.WhenAll(opening.Select(l => TryStartAsync(l, bindTo, ct))).ConfigureAwait(false);
            for (var i = 0; i < opening.Count; i++)
                if (Report(opening[i], results[i], ct)) _listeners[opening[i].Port] = opening[i];
            ct.ThrowIfCancellationRequested();
        }
        finally
        {
            _listening = _listeners.Keys.ToFrozenSet();
            _gate.Release();
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _gate.WaitAsync().ConfigureAwait(false);
        try
        {
            if (_disposed) return;
            _disposed = true;
            var all = _listeners.Values.ToList();
            _listeners.Clear();
            _listening = FrozenSet<int>.Empty;
            await Task.WhenAll(all.Select(StopAsync)).ConfigureAwait(false);
        }
        finally
        {
            _gate.Release();
        }
    }

    /// <summary>
    /// kube-proxy's response body, byte for byte (tab-indented, no trailing newline). The names are escaped as
    /// <c>JsonSerializer.Serialize(string)</c> would (the same default encoder), without the reflection serializer
    /// a native AOT build cannot use.
    /// </summary>
    internal static string FormatBody(NamespacedName service, int localEndpoints, bool proxyHealthy) =>
        string.Create(CultureInfo.InvariantCulture,
            $"{{\n\t\"service\": {{\n\t\t\"namespace\": \"{JsonEncodedText.Encode(service.Namespace)}\",\n\t\t\"name\": \"{JsonEncodedText.Encode(service.Name)}\"\n\t}},\n" +
            $"\t\"localEndpoints\": {localEndpoints},\n\t\"serviceProxyHealthy\": {(proxyHealthy ? "true" : "false")}\n}}");

    private static IReadOnlyList<IPAddress> BindAddresses(EquatableArray<IPAddress>? addresses)
    {
        if (addresses is { } list) return [.. list.Distinct()];
        return Socket.OSSupportsIPv6 ? [IPAddress.Any, IPAddress.IPv6Any] : [IPAddress.Any];
    }

    /// <summary>How opening one port went; reported once every port has been tried.</summary>
    private sealed record StartResult(WebApplication? App, IReadOnlyList<IPAddress> BoundTo, string? Error, string? Ipv6Error);

    /// <summary>Opens one port; never throws (the ports open concurrently, so nothing here touches shared state).</summary>
    private async Task<StartResult> TryStartAsync(Listener listener, IReadOnlyList<IPAddress> bindTo, CancellationToken ct)
    {
        if (bindTo.Count == 0) return new StartResult(null, bindTo, "no node-port address to listen on", null);
        try
        {
            return new StartResult(await StartAppAsync(listener, bindTo, ct).ConfigureAwait(false), bindTo, null, null);
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
            return new StartResult(null, bindTo, "cancelled", null);
        }
        catch (Exception ex) when (IsAllAddresses(bindTo))
        {
            // [::] may be unusable (IPv6 disabled): serve IPv4 rather than nothing.
            IReadOnlyList<IPAddress> ipv4 = [IPAddress.Any];
            try
            {
                return new StartResult(await StartAppAsync(listener, ipv4, ct).ConfigureAwait(false), ipv4, null, Describe(ex));
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                return new StartResult(null, bindTo, "cancelled", null);
            }
            catch (Exception retry)
            {
                return new StartResult(null, bindTo, Describe(retry), null);
            }
        }
        catch (Exception ex)
        {
            return new StartResult(null, bindTo, Describe(ex), null);
        }
    }

    /// <summary>Logs how opening a port went; true when it is now served.</summary>
    private bool Report(Listener listener, StartResult result, CancellationToken ct)
    {
        var service = listener.Current.Service;
        if (result.App is { } app)
        {
            listener.App = app;
            if (result.Ipv6Error is not null)
                _logger.LogWarning(
                    "Health check node port {Port} of service {Service} listens on 0.0.0.0 only: could not bind [::]:{Port}: {Error}",
                    listener.Port, service, listener.Port, result.Ipv6Error);
            var level = _failures.Remove(listener.Port) ? LogLevel.Information : LogLevel.Debug;
            _logger.Log(level, "Opened health check node port {Port} for service {Service} on {Addresses}",
                listener.Port, service, string.Join(", ", result.BoundTo));
            return true;
        }
        if (ct.IsCancellationRequested) return false;

        // A port that stays busy warns once (and again if the service or the error changes).
        var key = $"{service}|{result.Error}";
        var first = !_failures.TryGetValue(listener.Port, out var previous) || previous != key;
        _failures[listener.Port] = key;
        _logger.Log(first ? LogLevel.Warning : LogLevel.Debug,
            "Cannot open health check node port {Port} for service {Service} on {Addresses}: {Error}. " +
            "Load balancers will see this node as unhealthy for the service; retrying on the next sync",
            listener.Port, service, result.BoundTo.Count == 0 ? "(none)" : string.Join(", ", result.BoundTo), result.Error);
        return false;
    }

    private static bool IsAllAddresses(IReadOnlyList<IPAddress> bindTo) =>
        bindTo.Count == 2 && bindTo.Contains(IPAddress.Any) && bindTo.Contains(IPAddress.IPv6Any);

    private static string Describe(Exception ex)
    {
        var message = ex.Message;
        for (var inner = ex.InnerException; inner is not null; inner = inner.InnerException)
            if (inner is SocketException) message = $"{message} ({inner.Message})";
        return ex is AddressInUseException ? $"address already in use ({message})" : message;
    }

    private async Task<WebApplication> StartAppAsync(Listener listener, IReadOnlyList<IPAddress> bindTo, CancellationToken ct)
    {
        // The empty builder reads no configuration, environment or appsettings, and logs nothing:
        // only the endpoints listed here are bound.
        var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
        builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
        {
            kestrel.AddServerHeader = false;
            kestrel.Limits.MaxRequestBodySize = 4096;
            foreach (var address in bindTo)
                kestrel.Listen(address, listener.Port, o => o.Protocols = HttpProtocols.Http1);
        });
        builder.WebHost.UseSockets(o => o.CreateBoundListenSocket = BindSocket);
        var app = builder.Build();
        app.Run(context => HandleAsync(context, listener));
        try
        {
            await app.StartAsync(ct).ConfigureAwait(false);
            return app;
        }
        catch
        {
            await app.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Kestrel makes [::] dual-stack, which would collide with the 0.0.0.0 listener on the same
    /// port: bind it IPv6-only instead.
    /// </summary>
    private static Socket BindSocket(EndPoint endpoint)
    {
        if (endpoint is not IPEndPoint ip || !ip.Address.Equals(IPAddress.IPv6Any))
            return SocketTransportOptions.CreateDefaultBoundListenSocket(endpoint);
        var socket = new Socket(AddressFamily.InterNetworkV6, SocketType.Stream, ProtocolType.Tcp) { DualMode = false, NoDelay = true };
        try
        {
            socket.Bind(endpoint);
            return socket;
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }

    private Task HandleAsync(HttpContext context, Listener listener)
    {
        var entry = listener.Current;
        var proxyHealthy = ProxyHealthy();
        var body = Encoding.UTF8.GetBytes(FormatBody(entry.Service, entry.LocalEndpoints, proxyHealthy));
        var response = context.Response;
        response.StatusCode = entry.LocalEndpoints > 0 && proxyHealthy ? StatusCodes.Status200OK : StatusCodes.Status503ServiceUnavailable;
        response.ContentType = "application/json";
        response.Headers["X-Content-Type-Options"] = "nosniff";
        response.Headers["X-Load-Balancing-Endpoint-Weight"] = entry.LocalEndpoints.ToString(CultureInfo.InvariantCulture);
        response.ContentLength = body.Length;
        return response.Body.WriteAsync(body, context.RequestAborted).AsTask();
    }

    private bool ProxyHealthy()
    {
        try
        {
            return _proxyHealthy();
        }
        catch (Exception ex)
        {
            _logger.LogWarning(ex, "Proxy health check failed; reporting the proxy unhealthy");
            return false;
        }
    }

    private async Task StopAsync(Listener listener)
    {
        if (listener.App is not { } app) return;
        listener.App = null;
        using var timeout = new CancellationTokenSource(StopTimeout);
        try
        {
            await app.StopAsync(timeout.Token).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            _logger.LogDebug(ex, "Stopping health check node port {Port}", listener.Port);
        }
        await app.DisposeAsync().ConfigureAwait(false);
    }

    private sealed record HealthEntry(NamespacedName Service, int LocalEndpoints);

    private sealed class Listener(int port, HealthEntry current)
    {
        private HealthEntry _current = current;

        public int Port => port;

        /// <summary>Read by request threads, replaced by updates.</summary>
        public HealthEntry Current
        {
            get => Volatile.Read(ref _current);
            set => Volatile.Write(ref _current, value);
        }

        public WebApplication? App { get; set; }
    }
}
