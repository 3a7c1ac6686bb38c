using System.Collections.Concurrent;
using System.Globalization;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization.Metadata;
using System.Threading.Channels;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.AspNetCore.Server.Kestrel.Https;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Kubernetes;

namespace ProxyPlanes.TestKit;

/// <summary>A request the fake API server received.</summary>
public sealed record SeenRequest(
    string Path,
    string RawQuery,
    IReadOnlyDictionary<string, string> Query,
    string? Authorization,
    string? UserAgent,
    string? Accept,
    string Protocol,
    string? ClientCertificateSubject,
    long Timestamp)
{
    public bool IsWatch => Query.ContainsKey("watch");

    public string? this[string key] => Query.TryGetValue(key, out var v) ? v : null;

    public override string ToString() => $"{Path}{RawQuery}";
}

/// <summary>How an expired resourceVersion is reported to a watch.</summary>
public enum GoneMode
{
    /// <summary>HTTP 410 with a Status body (etcd-backed watches).</summary>
    HttpStatus,

    /// <summary>200, then an ERROR event with code 410 (the watch cache).</summary>
    ErrorEvent,
}

/// <summary>
/// An API server on 127.0.0.1 (Kestrel, ephemeral port; or on a listening socket the caller made, e.g. inside a
/// network namespace) speaking the list/watch protocol for Services,
/// EndpointSlices and Nodes: paginated lists (limit/continue, one resourceVersion per snapshot), chunked
/// JSON-lines watches replaying history after a resourceVersion, bookmarks, 410 for compacted versions,
/// label and field selectors, and faults (cut connections, error statuses, slow responses).
/// </summary>
public sealed class FakeApiServer : IAsyncDisposable
{
    private readonly ConcurrentQueue<SeenRequest> _requests = new();
    private readonly CancellationTokenSource _stopping = new();
    private WebApplication? _app;
    private Socket? _listenSocket;
    private long _resourceVersion = 100;

    private FakeApiServer()
    {
        Services = new FakeCollection<Service>(this, KubernetesResources.Services, KubernetesJsonContext.Default.ServiceWatchEvent);
        EndpointSlices = new FakeCollection<EndpointSlice>(this, KubernetesResources.EndpointSlices, KubernetesJsonContext.Default.EndpointSliceWatchEvent);
        Nodes = new FakeCollection<Node>(this, KubernetesResources.Nodes, KubernetesJsonContext.Default.NodeWatchEvent);
    }

    public FakeCollection<Service> Services { get; }
    public FakeCollection<EndpointSlice> EndpointSlices { get; }
    public FakeCollection<Node> Nodes { get; }

    public Uri BaseUri { get; private set; } = null!;

    /// <summary>When set, a request whose Authorization header it rejects gets 401.</summary>
    public Func<string?, bool>? Authorize { get; set; }

    public IReadOnlyList<SeenRequest> Requests => [.. _requests];

    public IReadOnlyList<SeenRequest> RequestsTo(string path) => [.. _requests.Where(r => r.Path == path)];

    internal CancellationToken Stopping => _stopping.Token;

    internal long NextResourceVersion() => Interlocked.Increment(ref _resourceVersion);

    public long CurrentResourceVersion => Interlocked.Read(ref _resourceVersion);

    /// <param name="serverCertificate">serve HTTPS (HTTP/1.1 and HTTP/2) with this certificate.</param>
    /// <param name="clientCa">require a client certificate issued by this CA.</param>
    /// <param name="listenSocket">
    /// a bound (not yet listening) TCP socket to serve on instead of an ephemeral port on 127.0.0.1; the server
    /// owns it. A socket made inside a network namespace serves that namespace (its loopback, its addresses).
    /// </param>
    public static async Task<FakeApiServer> StartAsync(
        X509Certificate2? serverCertificate = null, X509Certificate2? clientCa = null, Socket? listenSocket = null)
    {
        var server = new FakeApiServer { _listenSocket = listenSocket };
        try
        {
            var builder = WebApplication.CreateEmptyBuilder(new WebApplicationOptions());
            builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(2));
            builder.WebHost.UseKestrelCore().ConfigureKestrel(kestrel =>
            {
                kestrel.AddServerHeader = false;
                void Configure(ListenOptions listen)
                {
                    if (serverCertificate is null)
                    {
                        listen.Protocols = HttpProtocols.Http1;
                        return;
                    }

                    listen.Protocols = HttpProtocols.Http1AndHttp2;
                    var https = new HttpsConnectionAdapterOptions { ServerCertificate = serverCertificate };
                    if (clientCa is not null)
                    {
                        https.ClientCertificateMode = ClientCertificateMode.RequireCertificate;
                        https.ClientCertificateValidation = (certificate, _, _) => TestCertificates.ChainsTo(certificate, clientCa);
                    }

                    listen.UseHttps(https);
                }

                // Kestrel's socket transport wraps the descriptor without owning it and calls listen(2) on it.
                if (listenSocket is not null) kestrel.ListenHandle((ulong)listenSocket.Handle, Configure);
                else kestrel.Listen(IPAddress.Loopback, 0, Configure);
            });
            var app = builder.Build();
            app.Run(server.HandleAsync);
            server._app = app;
            await app.StartAsync();
            if (listenSocket?.LocalEndPoint is IPEndPoint bound)
            {
                var host = bound.AddressFamily == AddressFamily.InterNetworkV6 ? $"[{bound.Address}]" : bound.Address.ToString();
                server.BaseUri = new Uri($"{(serverCertificate is null ? "http" : "https")}://{host}:{bound.Port}");
            }
            else
            {
                var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.Single();
                server.BaseUri = new Uri(address);
            }

            return server;
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _stopping.CancelAsync();
        Services.EndOpenWatches();
        EndpointSlices.EndOpenWatches();
        Nodes.EndOpenWatches();
        if (_app is not null)
        {
            await _app.StopAsync();
            await _app.DisposeAsync();
        }

        _listenSocket?.Dispose();
        _stopping.Dispose();
    }

    /// <summary>
    /// The server is gone (a crashed or unreachable kube-apiserver): while set, every connection is reset
    /// before an answer (counted in <see cref="ResetWhileDown"/>, not in <see cref="Requests"/>); setting it
    /// cuts the open watches.
    /// </summary>
    public bool Down
    {
        get => Volatile.Read(ref _down);
        set
        {
            Volatile.Write(ref _down, value);
            if (!value) return;
            Services.CutOpenWatches();
            EndpointSlices.CutOpenWatches();
            Nodes.CutOpenWatches();
        }
    }

    private bool _down;
    private int _resetWhileDown;
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _resetPaths = new();

    /// <summary>Requests whose connection was reset because the server was <see cref="Down"/>.</summary>
    public int ResetWhileDown => Volatile.Read(ref _resetWhileDown);

    /// <summary>Requests to <paramref name="path"/> whose connection was reset because the server was <see cref="Down"/>.</summary>
    public int ResetWhileDownTo(string path) => _resetPaths.Count(p => p == path);

    private async Task HandleAsync(HttpContext context)
    {
        if (Down)
        {
            _resetPaths.Enqueue(context.Request.Path.Value ?? "");
            Interlocked.Increment(ref _resetWhileDown);
            context.Abort();
            return;
        }

        var request = context.Request;
        var query = request.Query.ToDictionary(q => q.Key, q => q.Value.ToString(), StringComparer.Ordinal);
        _requests.Enqueue(new SeenRequest(
            request.Path.Value ?? "", request.QueryString.Value ?? "", query, request.Headers.Authorization.ToString() is { Length: > 0 } a ? a : null,
            request.Headers.UserAgent.ToString(), request.Headers.Accept.ToString(), request.Protocol,
            context.Connection.ClientCertificate?.Subject, TimeProviderTimestamp()));

        if (Authorize is { } authorize && !authorize(request.Headers.Authorization.ToString() is { Length: > 0 } header ? header : null))
        {
            await WriteStatusAsync(context, 401, "Unauthorized", "Unauthorized");
            return;
        }

        IFakeCollection? collection = request.Path.Value switch
        {
            "/api/v1/services" => Services,
            "/apis/discovery.k8s.io/v1/endpointslices" => EndpointSlices,
            "/api/v1/nodes" => Nodes,
            _ => null,
        };
        if (collection is null)
        {
            await WriteStatusAsync(context, 404, "NotFound", $"the server could not find the requested resource ({request.Path})");
            return;
        }

        if (query.TryGetValue("watch", out var watch) && watch is "1" or "true")
            await collection.WatchAsync(context, query);
        else
            await collection.ListAsync(context, query);
    }

    private static long TimeProviderTimestamp() => System.Diagnostics.Stopwatch.GetTimestamp();

    internal static Task WriteStatusAsync(HttpContext context, int code, string reason, string message)
    {
        context.Response.StatusCode = code;
        context.Response.ContentType = "application/json";
        return context.Response.WriteAsync(StatusJson(code, reason, message));
    }

    internal static string StatusJson(int code, string reason, string message) =>
        JsonSerializer.Serialize(
            new ApiStatus { Kind = "Status", ApiVersion = "v1", Status = "Failure", Code = code, Reason = reason, Message = message },
            KubernetesJsonContext.Default.ApiStatus);
}

internal interface IFakeCollection
{
    Task ListAsync(HttpContext context, Dictionary<string, string> query);
    Task WatchAsync(HttpContext context, Dictionary<string, string> query);
}

/// <summary>One collection of the fake server: its objects, its event history, its open watches and its faults.</summary>
public sealed class FakeCollection<T> : IFakeCollection where T : class, IKubernetesObject
{
    private readonly FakeApiServer _server;
    private readonly KubernetesResource<T> _resource;
    private readonly JsonTypeInfo<KubernetesWatchEvent<T>> _eventType;
    private readonly JsonTypeInfo<T> _itemType;
    private readonly JsonTypeInfo<KubernetesList<T>> _listType;
    private readonly Lock _lock = new();
    private readonly SortedDictionary<string, T> _objects = new(StringComparer.Ordinal);
    private readonly List<(long ResourceVersion, T? Object, string Line)> _history = [];
    private readonly List<OpenWatch> _watches = [];
    private readonly Dictionary<string, (List<T> Items, long ResourceVersion)> _snapshots = [];
    private readonly Queue<int> _listStatuses = new();
    private readonly Queue<int> _watchStatuses = new();
    private long _compactedBelow;
    private long _continueExpiredBelow;
    private int _cutNextWatches;
    private int _slowLists;
    private TimeSpan _listDelay;
    private int _nextToken;

    internal FakeCollection(FakeApiServer server, KubernetesResource<T> resource, JsonTypeInfo<KubernetesWatchEvent<T>> eventType)
    {
        _server = server;
        _resource = resource;
        _eventType = eventType;
        _itemType = (JsonTypeInfo<T>)KubernetesJsonContext.Default.GetTypeInfo(typeof(T))!;
        _listType = (JsonTypeInfo<KubernetesList<T>>)KubernetesJsonContext.Default.GetTypeInfo(typeof(KubernetesList<T>))!;
    }

    public GoneMode GoneMode { get; set; } = GoneMode.HttpStatus;

    /// <summary>The message of the ERROR event that refuses a WatchList stream (<see cref="RefuseWatchListStreams"/>).</summary>
    public const string WatchListRefusal = "Internal error occurred: sendInitialEvents needs an etcd that supports progress notifications (3.4.31+ / 3.5.13+)";

    /// <summary>The next continue token handed out is expired by the time it is used (410).</summary>
    public bool ExpireNextContinueToken { get; set; }

    /// <summary>
    /// A watch without a resourceVersion and with allowWatchBookmarks=true is answered as kube-apiserver
    /// ≥ 1.32 on an etcd older than 3.4.31 / 3.5.13 answers it (measured with 1.32 on etcd 3.4.23): the
    /// server turns it into a WatchList stream (sendInitialEvents), the storage refuses, and the client
    /// gets 200 and then an ERROR event. On by default, so a client that ever watches without a
    /// resourceVersion fails its tests here as it would fail on such a cluster.
    /// </summary>
    public bool RefuseWatchListStreams { get; set; } = true;

    /// <summary>Watches ignore timeoutSeconds and send nothing more: a silent, half-open connection.</summary>
    public bool Silent { get; set; }

    /// <summary>Watch responses are written one byte at a time (an event spread over many chunks).</summary>
    public bool Trickle { get; set; }

    public int OpenWatches
    {
        get
        {
            lock (_lock) return _watches.Count;
        }
    }

    // ---- objects and events ----

    public T Add(T obj) => Emit("ADDED", Store(obj));

    public T Modify(T obj) => Emit("MODIFIED", Store(obj));

    public T Delete(string key)
    {
        lock (_lock)
        {
            if (!_objects.Remove(key, out var gone)) throw new InvalidOperationException($"no {_resource.Kind} {key}");
            var copy = Clone(gone);
            return Emit("DELETED", copy);
        }
    }

    /// <summary>Adds objects without events (before the client lists).</summary>
    public void Seed(params T[] objects)
    {
        lock (_lock)
            foreach (var o in objects) Store(o);
    }

    /// <summary>
    /// The client is disconnected while <paramref name="change"/> runs (open watches are cut), and the history
    /// is compacted after it: a watch from any earlier resourceVersion is told 410 Gone.
    /// </summary>
    public void ChangeWhileDisconnected(Action<FakeCollection<T>> change)
    {
        lock (_lock)
        {
            foreach (var w in _watches) w.Lines.Writer.TryWrite(WatchLine.Cut);
            change(this);
            _compactedBelow = _server.CurrentResourceVersion;
            _history.Clear();
            foreach (var s in _snapshots.Keys.ToList()) _snapshots.Remove(s);
        }
    }

    /// <summary>Sends a BOOKMARK to the open watches; returns its resourceVersion.</summary>
    public long Bookmark()
    {
        var rv = _server.NextResourceVersion();
        var obj = JsonSerializer.Deserialize("{}", _itemType)!;
        SetMetadata(obj, new ObjectMeta
        {
            ResourceVersion = rv.ToString(CultureInfo.InvariantCulture),
            Annotations = new() { ["k8s.io/initial-events-end"] = "true" },
        });
        FillTypeMeta(obj);
        SendRaw(Line("BOOKMARK", obj));
        return rv;
    }

    /// <summary>Writes a raw line to every open watch.</summary>
    public void SendRaw(string line)
    {
        lock (_lock)
            foreach (var w in _watches) w.Lines.Writer.TryWrite(new WatchLine(line, WatchLineKind.Text));
    }

    /// <summary>Sends an ERROR event to every open watch, then ends them (as the API server does).</summary>
    public void SendError(int code, string reason, string message)
    {
        lock (_lock)
        {
            foreach (var w in _watches)
            {
                w.Lines.Writer.TryWrite(new WatchLine($"{{\"type\":\"ERROR\",\"object\":{FakeApiServer.StatusJson(code, reason, message)}}}", WatchLineKind.Text));
                w.Lines.Writer.TryWrite(WatchLine.End);
            }
        }
    }

    /// <summary>Ends the open watches cleanly (as when their timeoutSeconds passes).</summary>
    public void EndOpenWatches()
    {
        lock (_lock)
            foreach (var w in _watches) w.Lines.Writer.TryWrite(WatchLine.End);
    }

    /// <summary>Drops the open watches' connections in the middle of an event.</summary>
    public void CutOpenWatches()
    {
        lock (_lock)
            foreach (var w in _watches) w.Lines.Writer.TryWrite(WatchLine.Cut);
    }

    // ---- faults for the next requests ----

    public void FailNextLists(params int[] statuses)
    {
        lock (_lock)
            foreach (var s in statuses) _listStatuses.Enqueue(s);
    }

    public void FailNextWatches(params int[] statuses)
    {
        lock (_lock)
            foreach (var s in statuses) _watchStatuses.Enqueue(s);
    }

    /// <summary>The next <paramref name="count"/> watches are cut in the middle of an event, right after they open.</summary>
    public void CutNextWatches(int count)
    {
        lock (_lock) _cutNextWatches = count;
    }

    /// <summary>The next <paramref name="count"/> lists answer only after <paramref name="delay"/>.</summary>
    public void SlowNextLists(int count, TimeSpan delay)
    {
        lock (_lock)
        {
            _slowLists = count;
            _listDelay = delay;
        }
    }

    /// <summary>Continue tokens handed out so far expire (410 on use), as after an etcd compaction.</summary>
    public void ExpireContinueTokens()
    {
        lock (_lock) _continueExpiredBelow = _server.CurrentResourceVersion + 1;
    }

    // ---- protocol ----

    public async Task ListAsync(HttpContext context, Dictionary<string, string> query)
    {
        int? status;
        TimeSpan delay;
        lock (_lock)
        {
            status = _listStatuses.TryDequeue(out var s) ? s : null;
            delay = _slowLists > 0 ? _listDelay : TimeSpan.Zero;
            if (_slowLists > 0) _slowLists--;
        }

        if (status is { } code)
        {
            await FakeApiServer.WriteStatusAsync(context, code, "InternalError", "injected failure");
            return;
        }

        if (delay > TimeSpan.Zero)
        {
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _server.Stopping);
            try
            {
                await Task.Delay(delay, cts.Token);
            }
            catch (OperationCanceledException)
            {
                return;
            }
        }

        var limit = query.TryGetValue("limit", out var l) ? int.Parse(l, CultureInfo.InvariantCulture) : 0;
        List<T> items = [];
        long rv = 0;
        var offset = 0;
        string? next = null;
        var expired = false;
        lock (_lock)
        {
            if (query.TryGetValue("continue", out var token))
            {
                var parts = token.Split(':');
                if (!_snapshots.TryGetValue(parts[0], out var snapshot) || snapshot.ResourceVersion < _continueExpiredBelow)
                    expired = true;
                else
                    (items, rv, offset) = (snapshot.Items, snapshot.ResourceVersion, int.Parse(parts[1], CultureInfo.InvariantCulture));
            }
            else
            {
                var selector = Selector.Parse(query);
                items = [.. _objects.Values.Where(selector.Matches).Select(Clone)];
                rv = _server.CurrentResourceVersion;
                offset = 0;
            }

            if (!expired && limit > 0 && offset + limit < items.Count)
            {
                var id = (++_nextToken).ToString(CultureInfo.InvariantCulture);
                if (ExpireNextContinueToken) ExpireNextContinueToken = false; // handed out, never honoured
                else _snapshots[id] = (items, rv);
                next = $"{id}:{offset + limit}";
            }
        }

        if (expired)
        {
            await FakeApiServer.WriteStatusAsync(context, 410, "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.");
            return;
        }

        var page = limit > 0 ? items.Skip(offset).Take(limit).ToList() : items.Skip(offset).ToList();
        var list = new KubernetesList<T>
        {
            ApiVersion = _resource.ApiVersion,
            Kind = _resource.Kind + "List",
            Metadata = new ListMeta
            {
                ResourceVersion = rv.ToString(CultureInfo.InvariantCulture),
                Continue = next,
                RemainingItemCount = next is null ? null : items.Count - offset - page.Count,
            },
            Items = page,
        };
        foreach (var item in page) ClearTypeMeta(item); // list items come without apiVersion/kind
        context.Response.ContentType = "application/json";
        await context.Response.WriteAsync(JsonSerializer.Serialize(list, _listType));
    }

    public async Task WatchAsync(HttpContext context, Dictionary<string, string> query)
    {
        var selector = Selector.Parse(query);
        var watchList = string.IsNullOrEmpty(query.GetValueOrDefault("resourceVersion")) && query.GetValueOrDefault("allowWatchBookmarks") == "true";
        if (watchList && RefuseWatchListStreams)
        {
            context.Response.StatusCode = 200;
            context.Response.ContentType = "application/json";
            await WriteAsync(context, $"{{\"type\":\"ERROR\",\"object\":{FakeApiServer.StatusJson(500, "InternalError", WatchListRefusal)}}}\n");
            return;
        }

        var from = long.Parse(query.GetValueOrDefault("resourceVersion") is { Length: > 0 } since ? since : "0", CultureInfo.InvariantCulture);
        var timeout = TimeSpan.FromSeconds(int.Parse(query.GetValueOrDefault("timeoutSeconds", "1800"), CultureInfo.InvariantCulture));
        var watch = new OpenWatch(selector);
        int? status = null;
        var gone = false;
        lock (_lock)
        {
            if (_watchStatuses.TryDequeue(out var s))
            {
                status = s;
            }
            else if (from < _compactedBelow)
            {
                gone = true;
            }
            else
            {
                var cut = _cutNextWatches > 0;
                if (cut) _cutNextWatches--;
                foreach (var (rv, obj, line) in _history)
                    if (rv > from && (obj is null || selector.Matches(obj))) watch.Lines.Writer.TryWrite(new WatchLine(line, WatchLineKind.Text));
                if (cut) watch.Lines.Writer.TryWrite(WatchLine.Cut);
                _watches.Add(watch);
            }
        }

        if (status is { } code)
        {
            await FakeApiServer.WriteStatusAsync(context, code, code == 410 ? "Expired" : "InternalError", "injected failure");
            return;
        }

        var tooOld = $"too old resource version: {from} ({_compactedBelow})";
        if (gone && GoneMode == GoneMode.HttpStatus)
        {
            await FakeApiServer.WriteStatusAsync(context, 410, "Expired", tooOld);
            return;
        }

        context.Response.StatusCode = 200;
        context.Response.ContentType = "application/json";
        await context.Response.StartAsync();
        await context.Response.Body.FlushAsync(); // the headers go out at once, as the API server sends them
        if (gone)
        {
            await WriteAsync(context, $"{{\"type\":\"ERROR\",\"object\":{FakeApiServer.StatusJson(410, "Expired", tooOld)}}}\n");
            return;
        }

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(context.RequestAborted, _server.Stopping);
        if (!Silent) cts.CancelAfter(timeout);
        try
        {
            await foreach (var line in watch.Lines.Reader.ReadAllAsync(cts.Token))
            {
                if (line.Kind == WatchLineKind.End) return;
                if (line.Kind == WatchLineKind.Cut)
                {
                    await WriteAsync(context, "{\"type\":\"MODIFIED\",\"object\":{\"metadata\":{\"name\":\"half-");
                    await Task.Delay(10, CancellationToken.None);
                    context.Abort();
                    return;
                }

                await WriteAsync(context, line.Text + "\n");
            }
        }
        catch (OperationCanceledException)
        {
            // timeoutSeconds passed, the client went away, or the server stops: the stream ends
        }
        catch (IOException)
        {
        }
        finally
        {
            lock (_lock) _watches.Remove(watch);
        }
    }

    private async Task WriteAsync(HttpContext context, string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        if (!Trickle)
        {
            await context.Response.Body.WriteAsync(bytes);
            await context.Response.Body.FlushAsync();
            return;
        }

        for (var i = 0; i < bytes.Length; i++)
        {
            await context.Response.Body.WriteAsync(bytes.AsMemory(i, 1));
            await context.Response.Body.FlushAsync();
            if (i % 16 == 0) await Task.Delay(1);
        }
    }

    private T Store(T obj)
    {
        lock (_lock)
        {
            var copy = Clone(obj);
            copy.Metadata!.ResourceVersion = _server.NextResourceVersion().ToString(CultureInfo.InvariantCulture);
            _objects[Key(copy)] = copy;
            return copy;
        }
    }

    private T Emit(string type, T obj)
    {
        lock (_lock)
        {
            if (type == "DELETED") obj.Metadata!.ResourceVersion = _server.NextResourceVersion().ToString(CultureInfo.InvariantCulture);
            var line = Line(type, obj);
            var rv = long.Parse(obj.Metadata!.ResourceVersion!, CultureInfo.InvariantCulture);
            _history.Add((rv, obj, line));
            foreach (var w in _watches)
                if (w.Selector.Matches(obj)) w.Lines.Writer.TryWrite(new WatchLine(line, WatchLineKind.Text));
            return Clone(obj);
        }
    }

    private string Line(string type, T obj)
    {
        var copy = Clone(obj);
        FillTypeMeta(copy);
        return JsonSerializer.Serialize(new KubernetesWatchEvent<T> { Type = type, Object = copy }, _eventType);
    }

    private T Clone(T obj) => JsonSerializer.Deserialize(JsonSerializer.Serialize(obj, _itemType), _itemType)!;

    private static string Key(T obj) =>
        obj.Metadata?.Namespace is { Length: > 0 } ns ? $"{ns}/{obj.Metadata.Name}" : obj.Metadata?.Name ?? "";

    private void FillTypeMeta(T obj)
    {
        // Watch events carry apiVersion and kind (list items do not).
        switch (obj)
        {
            case Service s: (s.ApiVersion, s.Kind) = (s.ApiVersion ?? _resource.ApiVersion, s.Kind ?? _resource.Kind); break;
            case EndpointSlice e: (e.ApiVersion, e.Kind) = (e.ApiVersion ?? _resource.ApiVersion, e.Kind ?? _resource.Kind); break;
            case Node n: (n.ApiVersion, n.Kind) = (n.ApiVersion ?? _resource.ApiVersion, n.Kind ?? _resource.Kind); break;
        }
    }

    private static void ClearTypeMeta(T obj)
    {
        switch (obj)
        {
            case Service s: s.ApiVersion = s.Kind = null; break;
            case EndpointSlice e: e.ApiVersion = e.Kind = null; break;
            case Node n: n.ApiVersion = n.Kind = null; break;
        }
    }

    private static void SetMetadata(T obj, ObjectMeta meta)
    {
        switch (obj)
        {
            case Service s: s.Metadata = meta; break;
            case EndpointSlice e: e.Metadata = meta; break;
            case Node n: n.Metadata = meta; break;
        }
    }

    private enum WatchLineKind
    {
        Text,
        End,
        Cut,
    }

    private sealed record WatchLine(string? Text, WatchLineKind Kind)
    {
        public static readonly WatchLine End = new(null, WatchLineKind.End);
        public static readonly WatchLine Cut = new(null, WatchLineKind.Cut);
    }

    private sealed class OpenWatch(Selector selector)
    {
        public Selector Selector { get; } = selector;
        public Channel<WatchLine> Lines { get; } = Channel.CreateUnbounded<WatchLine>();
    }
}

/// <summary>The label and field selectors of a request: <c>!key</c>, <c>key</c>, <c>key=value</c>, <c>key!=value</c>; fields <c>metadata.name</c>, <c>metadata.namespace</c>.</summary>
public sealed class Selector
{
    private readonly List<Func<IKubernetesObject, bool>> _terms = [];

    public static Selector Parse(Dictionary<string, string> query)
    {
        var selector = new Selector();
        foreach (var term in Terms(query.GetValueOrDefault("labelSelector")))
        {
            if (term.StartsWith('!'))
            {
                var key = term[1..];
                selector._terms.Add(o => o.Metadata?.Labels?.ContainsKey(key) != true);
            }
            else if (term.Split("!=") is [var k1, var v1])
            {
                selector._terms.Add(o => o.Metadata?.Labels?.GetValueOrDefault(k1) != v1);
            }
            else if (term.Split('=') is [var k2, var v2])
            {
                selector._terms.Add(o => o.Metadata?.Labels?.GetValueOrDefault(k2) == v2);
            }
            else
            {
                selector._terms.Add(o => o.Metadata?.Labels?.ContainsKey(term) == true);
            }
        }

        foreach (var term in Terms(query.GetValueOrDefault("fieldSelector")))
        {
            var (field, value) = term.Split('=') is [var f, var v] ? (f, v) : throw new ArgumentException($"unsupported field selector {term}");
            selector._terms.Add(field switch
            {
                "metadata.name" => o => o.Metadata?.Name == value,
                "metadata.namespace" => o => o.Metadata?.Namespace == value,
                _ => throw new ArgumentException($"unsupported field {field}"),
            });
        }

        return selector;
    }

    public bool Matches(IKubernetesObject obj) => _terms.All(t => t(obj));

    private static IEnumerable<string> Terms(string? text) =>
        string.IsNullOrEmpty(text) ? [] : text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
}
