using System.Buffers;
using System.Globalization;
using System.IO.Pipelines;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Security;
using System.Net.Sockets;
using System.Runtime.CompilerServices;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Model;

namespace ProxyPlanes.Sources.Kubernetes;

public sealed class KubernetesApiClientOptions
{
    /// <summary>Longest a list request (or a watch's response headers) may take.</summary>
    public TimeSpan RequestTimeout { get; init; } = TimeSpan.FromSeconds(60);

    /// <summary>
    /// A watch that receives no bytes for its server-side timeout plus this long is taken as dead
    /// (a half-open connection) and abandoned.
    /// </summary>
    public TimeSpan WatchIdleGrace { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A token file is re-read at most this often (and at once after a 401).</summary>
    public TimeSpan TokenRefreshInterval { get; init; } = TimeSpan.FromMinutes(1);

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;
}

/// <summary>
/// <see cref="IKubernetesApi"/> over HTTP: one <see cref="HttpClient"/> on a <see cref="SocketsHttpHandler"/>
/// that trusts the configured CA (and only it), presents the client certificate, sends the bearer token
/// (re-read as it rotates), <c>Accept: application/json</c> and <c>User-Agent: proxyplanes</c>. HTTP/2 is
/// used when the server offers it over TLS (the watches then share one connection, kept alive with pings),
/// else HTTP/1.1 with TCP keepalive. JSON is read with the source-generated <see cref="KubernetesJsonContext"/>;
/// a watch's chunked stream is split into lines with a <see cref="PipeReader"/> and each event parsed in place.
/// </summary>
public sealed class KubernetesApiClient : IKubernetesApi, IDisposable
{
    private const int MaxEventBytes = 64 * 1024 * 1024;
    private const int MaxErrorBodyBytes = 64 * 1024;

    private readonly HttpClient _http;
    private readonly KubernetesApiClientOptions _options;
    private readonly string _base;

    public KubernetesApiClient(KubernetesClientConfig config, KubernetesApiClientOptions? options = null, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        _options = options ?? new KubernetesApiClientOptions();
        Config = config;
        var log = logger ?? NullLogger.Instance;
        Tokens = new BearerTokenSource(config.Token, config.TokenFile, _options.TokenRefreshInterval, _options.TimeProvider, log);
        var handler = new AuthenticationHandler(Tokens, config.Username, config.Password) { InnerHandler = CreateHandler(config) };
        _http = new HttpClient(handler, disposeHandler: true)
        {
            Timeout = Timeout.InfiniteTimeSpan, // per request: lists time out, watches are long-lived
            DefaultRequestVersion = HttpVersion.Version20,
            DefaultVersionPolicy = HttpVersionPolicy.RequestVersionOrLower,
        };
        _http.DefaultRequestHeaders.Accept.Add(new MediaTypeWithQualityHeaderValue("application/json"));
        _http.DefaultRequestHeaders.UserAgent.Add(new ProductInfoHeaderValue("proxyplanes", null));
        _base = config.Server.GetLeftPart(UriPartial.Authority) + config.Server.AbsolutePath.TrimEnd('/');
    }

    public KubernetesClientConfig Config { get; }

    internal BearerTokenSource Tokens { get; }

    public async Task<KubernetesList<T>> ListAsync<T>(
        KubernetesResource<T> resource, Selectors selectors, string? continueToken, int? limit, CancellationToken cancellationToken)
        where T : class, IKubernetesObject
    {
        ArgumentNullException.ThrowIfNull(resource);
        var url = Url(resource, [
            ("continue", continueToken),
            ("fieldSelector", selectors.Field),
            ("labelSelector", selectors.Label),
            ("limit", limit is > 0 ? limit.Value.ToString(CultureInfo.InvariantCulture) : null),
        ]);
        using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        timeout.CancelAfter(_options.RequestTimeout);
        try
        {
            using var response = await _http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, timeout.Token).ConfigureAwait(false);
            if (!response.IsSuccessStatusCode) throw await ErrorAsync(response, url, timeout.Token).ConfigureAwait(false);
            var stream = await response.Content.ReadAsStreamAsync(timeout.Token).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                var list = await JsonSerializer.DeserializeAsync(stream, resource.ListType, timeout.Token).ConfigureAwait(false)
                    ?? throw new JsonException($"GET {url}: the response is null, not a {resource.Kind}List");
                foreach (var item in list.Items ?? []) FillTypeMeta(item, resource);
                return list;
            }
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"GET {url} took longer than {_options.RequestTimeout.TotalSeconds:0.#} s");
        }
    }

    public async IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(
        KubernetesResource<T> resource, string resourceVersion, Selectors selectors, TimeSpan timeout,
        [EnumeratorCancellation] CancellationToken cancellationToken)
        where T : class, IKubernetesObject
    {
        ArgumentNullException.ThrowIfNull(resource);
        var seconds = Math.Max(1, (long)Math.Ceiling(timeout.TotalSeconds));
        var url = Url(resource, [
            ("allowWatchBookmarks", "true"),
            ("fieldSelector", selectors.Field),
            ("labelSelector", selectors.Label),
            ("resourceVersion", resourceVersion),
            ("timeoutSeconds", seconds.ToString(CultureInfo.InvariantCulture)),
            ("watch", "1"),
        ]);
        var idleLimit = TimeSpan.FromSeconds(seconds) + _options.WatchIdleGrace;
        using var idle = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        idle.CancelAfter(_options.RequestTimeout);
        HttpResponseMessage response;
        try
        {
            response = await _http.GetAsync(url, HttpCompletionOption.ResponseHeadersRead, idle.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"GET {url}: no response within {_options.RequestTimeout.TotalSeconds:0.#} s");
        }

        using (response)
        {
            if (!response.IsSuccessStatusCode) throw await ErrorAsync(response, url, cancellationToken).ConfigureAwait(false);
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            var reader = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 64 * 1024, minimumReadSize: 16 * 1024));
            var events = new List<WatchEvent<T>>();
            try
            {
                while (true)
                {
                    idle.CancelAfter(idleLimit);
                    ReadResult result;
                    try
                    {
                        result = await reader.ReadAsync(idle.Token).ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                    {
                        throw new TimeoutException($"watch of {resource.Plural}: nothing received for {idleLimit.TotalSeconds:0.#} s");
                    }

                    var buffer = result.Buffer;
                    events.Clear();
                    var consumed = WatchStreamParser.ParseLines(buffer, resource, events);
                    var rest = buffer.Slice(consumed);
                    if (result.IsCompleted)
                    {
                        reader.AdvanceTo(consumed, buffer.End);
                        foreach (var e in events) yield return e;
                        if (!WatchStreamParser.IsBlank(rest))
                            throw new IOException($"watch of {resource.Plural}: the stream ended in the middle of an event");
                        yield break;
                    }

                    if (rest.Length > MaxEventBytes)
                        throw new IOException($"watch of {resource.Plural}: an event is larger than {MaxEventBytes} bytes");
                    reader.AdvanceTo(consumed, buffer.End);
                    foreach (var e in events) yield return e;
                }
            }
            finally
            {
                await reader.CompleteAsync().ConfigureAwait(false);
            }
        }
    }

    public void Dispose() => _http.Dispose();

    internal static void FillTypeMeta<T>(T item, KubernetesResource<T> resource) where T : class, IKubernetesObject
    {
        // List items come without apiVersion and kind; the rest of the proxy sees objects as kubectl prints them.
        switch (item)
        {
            case Service s:
                s.ApiVersion ??= resource.ApiVersion;
                s.Kind ??= resource.Kind;
                break;
            case EndpointSlice e:
                e.ApiVersion ??= resource.ApiVersion;
                e.Kind ??= resource.Kind;
                break;
            case Node n:
                n.ApiVersion ??= resource.ApiVersion;
                n.Kind ??= resource.Kind;
                break;
        }
    }

    private string Url<T>(KubernetesResource<T> resource, (string Key, string? Value)[] query) where T : class, IKubernetesObject
    {
        // Keys in alphabetical order, escaped as client-go's url.Values.Encode does.
        var url = new StringBuilder(_base).Append(resource.Path);
        var first = true;
        foreach (var (key, value) in query)
        {
            if (string.IsNullOrEmpty(value)) continue;
            url.Append(first ? '?' : '&').Append(key).Append('=').Append(Uri.EscapeDataString(value));
            first = false;
        }

        return url.ToString();
    }

    private static async Task<KubernetesApiException> ErrorAsync(HttpResponseMessage response, string url, CancellationToken cancellationToken)
    {
        string body;
        try
        {
            var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            await using (stream.ConfigureAwait(false))
            {
                var buffer = new byte[MaxErrorBodyBytes];
                var length = 0;
                int read;
                while (length < buffer.Length && (read = await stream.ReadAsync(buffer.AsMemory(length), cancellationToken).ConfigureAwait(false)) > 0)
                    length += read;
                body = Encoding.UTF8.GetString(buffer, 0, length);
            }
        }
        catch (Exception e) when (e is IOException or HttpRequestException)
        {
            body = "";
        }

        ApiStatus? status = null;
        try
        {
            if (body.TrimStart().StartsWith('{')) status = JsonSerializer.Deserialize(body, KubernetesJsonContext.Default.ApiStatus);
        }
        catch (JsonException)
        {
        }

        var detail = status?.Message is { Length: > 0 } m ? m : body.Trim() is { Length: > 0 } b ? (b.Length > 200 ? b[..200] + "…" : b) : response.ReasonPhrase;
        var code = (int)response.StatusCode;
        return new KubernetesApiException(response.StatusCode, status, $"GET {url}: {code} {response.ReasonPhrase}: {detail}");
    }

    private static SocketsHttpHandler CreateHandler(KubernetesClientConfig config)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectTimeout = TimeSpan.FromSeconds(15),
            AutomaticDecompression = DecompressionMethods.GZip,
            EnableMultipleHttp2Connections = true,
            // HTTP/2: a connection that stops answering pings is dropped (client-go does the same).
            KeepAlivePingDelay = TimeSpan.FromSeconds(30),
            KeepAlivePingTimeout = TimeSpan.FromSeconds(15),
            KeepAlivePingPolicy = HttpKeepAlivePingPolicy.Always,
            ConnectCallback = ConnectWithKeepAliveAsync,
        };
        var ssl = handler.SslOptions;
        if (config.InsecureSkipTlsVerify)
        {
            ssl.RemoteCertificateValidationCallback = static (_, _, _, _) => true;
        }
        else
        {
            if (config.CertificateAuthorities is { Count: > 0 } authorities)
            {
                var policy = new X509ChainPolicy
                {
                    TrustMode = X509ChainTrustMode.CustomRootTrust,
                    RevocationMode = X509RevocationMode.NoCheck, // cluster CAs publish no revocation lists
                    DisableCertificateDownloads = true,
                };
                policy.CustomTrustStore.AddRange(authorities);
                ssl.CertificateChainPolicy = policy;
            }

            if (config.TlsServerName is { } serverName)
            {
                ssl.RemoteCertificateValidationCallback = (_, certificate, _, errors) =>
                    (errors & ~SslPolicyErrors.RemoteCertificateNameMismatch) == SslPolicyErrors.None
                    && certificate is X509Certificate2 c && c.MatchesHostname(serverName);
            }
        }

        if (config.ClientCertificate is { } client)
        {
            ssl.ClientCertificates = [client];
            // Always present it (as client-go does), whatever CA names the server asks for.
            ssl.LocalCertificateSelectionCallback = (_, _, _, _, _) => client;
        }

        return handler;
    }

    private static async ValueTask<Stream> ConnectWithKeepAliveAsync(SocketsHttpConnectionContext context, CancellationToken cancellationToken)
    {
        // TCP keepalive finds a dead peer under an idle HTTP/1.1 watch in about a minute.
        var socket = new Socket(SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
        try
        {
            socket.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.KeepAlive, true);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveTime, 30);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveInterval, 10);
            socket.SetSocketOption(SocketOptionLevel.Tcp, SocketOptionName.TcpKeepAliveRetryCount, 3);
            await socket.ConnectAsync(context.DnsEndPoint, cancellationToken).ConfigureAwait(false);
            return new NetworkStream(socket, ownsSocket: true);
        }
        catch
        {
            socket.Dispose();
            throw;
        }
    }
}

/// <summary>
/// Splits a watch stream into JSON lines and parses each event in place: the event's <c>type</c> decides
/// whether its <c>object</c> is read as the resource's kind or as a <see cref="ApiStatus"/> (ERROR), so the
/// object is deserialized once, with source-generated metadata, whatever the order of the two properties.
/// </summary>
internal static class WatchStreamParser
{
    /// <summary>Parses every complete line of <paramref name="buffer"/>; returns the position after the last one.</summary>
    public static SequencePosition ParseLines<T>(ReadOnlySequence<byte> buffer, KubernetesResource<T> resource, List<WatchEvent<T>> events)
        where T : class, IKubernetesObject
    {
        var reader = new SequenceReader<byte>(buffer);
        while (reader.TryReadTo(out ReadOnlySequence<byte> line, (byte)'\n'))
            if (!IsBlank(line)) events.Add(Parse(line, resource));
        return reader.Position;
    }

    public static bool IsBlank(ReadOnlySequence<byte> bytes)
    {
        foreach (var segment in bytes)
            if (segment.Span.IndexOfAnyExcept(" \t\r\n"u8) >= 0) return false;
        return true;
    }

    public static WatchEvent<T> Parse<T>(ReadOnlySequence<byte> line, KubernetesResource<T> resource) where T : class, IKubernetesObject
    {
        var reader = new Utf8JsonReader(line);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            throw new JsonException($"watch of {resource.Plural}: an event is not a JSON object");
        WatchEventType? type = null;
        string? unknownType = null;
        var objectReader = default(Utf8JsonReader);
        var hasObject = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            if (reader.ValueTextEquals("type"u8))
            {
                reader.Read();
                type = reader.TokenType != JsonTokenType.String ? null
                    : reader.ValueTextEquals("ADDED"u8) ? WatchEventType.Added
                    : reader.ValueTextEquals("MODIFIED"u8) ? WatchEventType.Modified
                    : reader.ValueTextEquals("DELETED"u8) ? WatchEventType.Deleted
                    : reader.ValueTextEquals("BOOKMARK"u8) ? WatchEventType.Bookmark
                    : reader.ValueTextEquals("ERROR"u8) ? WatchEventType.Error
                    : null;
                if (type is null) unknownType = reader.TokenType == JsonTokenType.String ? reader.GetString() : reader.TokenType.ToString();
            }
            else if (reader.ValueTextEquals("object"u8))
            {
                reader.Read();
                objectReader = reader; // a copy: read once the type is known
                hasObject = reader.TokenType == JsonTokenType.StartObject;
                reader.Skip();
            }
            else
            {
                reader.Read();
                reader.Skip();
            }
        }

        if (type is not { } t)
            throw new JsonException($"watch of {resource.Plural}: unknown event type '{unknownType ?? "(none)"}'");
        if (!hasObject) throw new JsonException($"watch of {resource.Plural}: a {t} event has no object");
        if (t == WatchEventType.Error)
            return new WatchEvent<T>(t, null, JsonSerializer.Deserialize(ref objectReader, KubernetesJsonContext.Default.ApiStatus));
        var obj = JsonSerializer.Deserialize(ref objectReader, resource.ItemType)
            ?? throw new JsonException($"watch of {resource.Plural}: a {t} event's object is null");
        KubernetesApiClient.FillTypeMeta(obj, resource);
        return new WatchEvent<T>(t, obj);
    }
}
