using System.Diagnostics;
using System.Net;
using System.Runtime.ExceptionServices;
using System.Text.Json;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Model;

namespace ProxyPlanes.Sources.Kubernetes;

public sealed class KubernetesSourceOptions
{
    /// <summary>Items per list page (<c>limit</c>); the rest follows with <c>continue</c> tokens.</summary>
    public int PageSize { get; init; } = 500;

    /// <summary>
    /// Each watch asks the server to end it after a random time between this and twice this
    /// (<c>timeoutSeconds</c>), as client-go's reflector does, so reconnections spread out.
    /// </summary>
    public TimeSpan MinWatchTimeout { get; init; } = TimeSpan.FromMinutes(5);

    /// <summary>First wait after a failure; doubles on each further failure up to <see cref="MaxBackoff"/>, ±20 % jitter.</summary>
    public TimeSpan InitialBackoff { get; init; } = TimeSpan.FromMilliseconds(500);

    public TimeSpan MaxBackoff { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A watch that stayed open this long was healthy: the backoff starts over at its end.</summary>
    public TimeSpan HealthyWatch { get; init; } = TimeSpan.FromSeconds(30);

    /// <summary>A watch the server ends cleanly sooner than this without any event counts as a failure (waits a backoff).</summary>
    public TimeSpan ShortWatch { get; init; } = TimeSpan.FromSeconds(1);

    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>For the backoff jitter and the watch timeouts; tests may fix the seed.</summary>
    public Random? Random { get; init; }
}

/// <summary>
/// The Kubernetes API as an <see cref="IObjectSource"/>: lists and watches v1 Services,
/// discovery.k8s.io/v1 EndpointSlices and this node's v1 Node, as kube-proxy's informers do.
/// </summary>
/// <remarks>
/// <para>Each resource is listed one page at a time (<c>limit</c> + <c>continue</c>), then watched from the
/// list's resourceVersion (<c>watch=1&amp;allowWatchBookmarks=true&amp;timeoutSeconds=…</c>). A cache per resource
/// (by namespace/name, with the resourceVersion) turns events into (previous, current) pairs; a list after a
/// reconnection is diffed against it, so objects deleted meanwhile are reported deleted.</para>
/// <para>410 Gone as an HTTP status, and an ERROR event of any code, → list again (as client-go's reflector
/// does: an ERROR event ends its ListAndWatch). An ERROR event is the server refusing the watch itself, e.g.
/// kube-apiserver ≥ 1.32 on an etcd older than 3.4.31 / 3.5.13 refuses a WatchList stream that way, so
/// resuming from the same resourceVersion could meet it again. Every watch starts from a list's (or a
/// bookmark's or event's) resourceVersion, never without one: a watch without a resourceVersion and with
/// bookmarks is what such a server turns into a WatchList stream. Any other failure (a dropped connection,
/// an error status, a malformed event) → watch again from the last resourceVersion after a backoff (0.5 s
/// doubling to 30 s, jittered, starting over after a healthy watch). BOOKMARK events only move the
/// resourceVersion on.</para>
/// <para>Selectors are kube-proxy's (cmd/kube-proxy/app/server.go): one informer factory with the label selector
/// <see cref="ProxyLabelSelector"/> for both Services and EndpointSlices (services handled by another proxy, and
/// the slices of headless services, are not even sent), and <c>metadata.name=NODE</c> for the Node.</para>
/// <para><see cref="IObjectSink.OnInitialStateDelivered"/> is called once, after all three resources' first lists
/// were delivered. Sink calls are made one at a time. An exception from the sink ends <see cref="RunAsync"/>.</para>
/// </remarks>
public sealed class KubernetesSource : IObjectSource, IDisposable
{
    /// <summary>
    /// kube-proxy's label selector for Services and EndpointSlices: <c>labels.Selector.String()</c> of the
    /// requirements "service-proxy-name does not exist" and "headless does not exist", which sorts them by key.
    /// </summary>
    public const string ProxyLabelSelector =
        "!" + WellKnownLabels.Headless + ",!" + WellKnownLabels.ServiceProxyName;

    private readonly IKubernetesApi _api;
    private readonly bool _ownsApi;
    private readonly ILogger _logger;
    private readonly KubernetesSourceOptions _options;
    private readonly Random _random;
    private readonly Lock _sinkLock = new();
    private int _running;

    /// <param name="api">the API to list and watch (not disposed by the source).</param>
    /// <param name="nodeName">this node's name (<c>--hostname-override</c>): only this Node is watched.</param>
    public KubernetesSource(IKubernetesApi api, string nodeName, ILogger? logger = null, KubernetesSourceOptions? options = null)
        : this(api, ownsApi: false, nodeName, logger, options)
    {
    }

    private KubernetesSource(IKubernetesApi api, bool ownsApi, string nodeName, ILogger? logger, KubernetesSourceOptions? options)
    {
        ArgumentNullException.ThrowIfNull(api);
        ArgumentException.ThrowIfNullOrEmpty(nodeName);
        _api = api;
        _ownsApi = ownsApi;
        NodeName = nodeName;
        _logger = logger ?? NullLogger.Instance;
        _options = options ?? new KubernetesSourceOptions();
        _random = _options.Random ?? Random.Shared;
        if (_options.PageSize < 1) throw new ArgumentOutOfRangeException(nameof(options), "PageSize must be at least 1");
    }

    /// <summary>
    /// The daemon's way in: the API named by <paramref name="kubeconfigPath"/>, or the pod's service account
    /// when it is null or empty (<see cref="KubernetesClientConfig.Load"/>). The source owns that client and
    /// disposes it with itself.
    /// </summary>
    /// <exception cref="KubernetesConfigException">the kubeconfig or in-cluster configuration is wrong (the message names the file and field).</exception>
    public static KubernetesSource Create(
        string? kubeconfigPath, string nodeName, ILogger? logger = null, KubernetesSourceOptions? options = null, KubernetesApiClientOptions? clientOptions = null)
        => Create(KubernetesClientConfig.Load(kubeconfigPath), nodeName, logger, options, clientOptions);

    /// <summary>A source on its own <see cref="KubernetesApiClient"/> for <paramref name="config"/>, disposed with the source.</summary>
    public static KubernetesSource Create(
        KubernetesClientConfig config, string nodeName, ILogger? logger = null, KubernetesSourceOptions? options = null, KubernetesApiClientOptions? clientOptions = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        var client = new KubernetesApiClient(config, clientOptions, logger);
        (logger ?? NullLogger.Instance).LogInformation("Kubernetes API {Server} ({Origin})", config.Server, config.Origin);
        return new KubernetesSource(client, ownsApi: true, nodeName, logger, options);
    }

    public string NodeName { get; }

    public static Selectors ServiceSelectors => new(ProxyLabelSelector);
    public static Selectors EndpointSliceSelectors => new(ProxyLabelSelector);
    public static Selectors NodeSelectors(string nodeName) => new(Field: "metadata.name=" + nodeName);

    public async Task RunAsync(IObjectSink sink, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(sink);
        if (Interlocked.Exchange(ref _running, 1) == 1) throw new InvalidOperationException("the Kubernetes source is already running");
        try
        {
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var pending = 3;
            void Listed()
            {
                if (Interlocked.Decrement(ref pending) != 0) return;
                Deliver(sink.OnInitialStateDelivered);
                _logger.LogInformation("Initial state delivered: Services, EndpointSlices and Node {Node} listed", NodeName);
            }

            Task[] informers =
            [
                Task.Run(() => new Informer<Service>(this, KubernetesResources.Services, ServiceSelectors,
                    (p, c) => Deliver(() => sink.OnService(p, c))).RunAsync(Listed, stop.Token), stop.Token),
                Task.Run(() => new Informer<EndpointSlice>(this, KubernetesResources.EndpointSlices, EndpointSliceSelectors,
                    (p, c) => Deliver(() => sink.OnEndpointSlice(p, c))).RunAsync(Listed, stop.Token), stop.Token),
                Task.Run(() => new Informer<Node>(this, KubernetesResources.Nodes, NodeSelectors(NodeName),
                    (p, c) => Deliver(() => sink.OnNode(p, c))).RunAsync(Listed, stop.Token), stop.Token),
            ];

            // Informers only stop when cancelled or on a failure that retrying cannot fix (the sink threw).
            var first = await Task.WhenAny(informers).ConfigureAwait(false);
            await stop.CancelAsync().ConfigureAwait(false);
            try
            {
                await Task.WhenAll(informers).ConfigureAwait(false);
            }
            catch
            {
                // the first to stop says why
            }

            if (cancellationToken.IsCancellationRequested) return;
            var failure = first.Exception?.InnerException;
            if (failure is SinkFailureException sinkFailure) ExceptionDispatchInfo.Throw(sinkFailure.InnerException!);
            if (failure is not null) ExceptionDispatchInfo.Throw(failure);
        }
        finally
        {
            Volatile.Write(ref _running, 0);
        }
    }

    public void Dispose()
    {
        if (_ownsApi) (_api as IDisposable)?.Dispose();
    }

    private void Deliver(Action call)
    {
        lock (_sinkLock)
        {
            try
            {
                call();
            }
            catch (Exception e)
            {
                throw new SinkFailureException(e);
            }
        }
    }

    private static bool IsRetryable(Exception e, CancellationToken cancellationToken) =>
        !cancellationToken.IsCancellationRequested && e is HttpRequestException or IOException or TimeoutException or JsonException
            or KubernetesApiException or OperationCanceledException or InvalidDataException;

    private static string Describe(Exception e) => e switch
    {
        HttpRequestException { InnerException: { } inner } h when inner.Message != h.Message => $"{h.Message} ({inner.Message})",
        _ => e.Message,
    };

    private sealed class SinkFailureException(Exception inner) : Exception("the sink failed", inner);

    /// <summary>List, then watch, one resource; keeps what the sink was told, per namespace/name.</summary>
    private sealed class Informer<T>(KubernetesSource owner, KubernetesResource<T> resource, Selectors selectors, Action<T?, T?> emit)
        where T : class, IKubernetesObject
    {
        private readonly Dictionary<string, T> _cache = new(StringComparer.Ordinal);
        private readonly ExponentialBackoff _backoff = new(owner._options.InitialBackoff, owner._options.MaxBackoff, owner._random);
        private readonly ILogger _logger = owner._logger;
        private readonly TimeProvider _time = owner._options.TimeProvider;

        public async Task RunAsync(Action firstListDelivered, CancellationToken cancellationToken)
        {
            string? resourceVersion = null; // null: list (again)
            var listed = false;
            var fromList = false; // the watch about to start is the first from a (re)list's resourceVersion
            while (true)
            {
                cancellationToken.ThrowIfCancellationRequested();
                if (resourceVersion is null)
                {
                    try
                    {
                        resourceVersion = await ListAndDeliverAsync(listed, cancellationToken).ConfigureAwait(false);
                        fromList = true;
                    }
                    catch (Exception e) when (IsRetryable(e, cancellationToken))
                    {
                        await WaitAsync($"Listing {resource.Plural} ({selectors}) failed", e, cancellationToken).ConfigureAwait(false);
                        continue;
                    }

                    if (!listed)
                    {
                        listed = true;
                        firstListDelivered();
                    }
                }

                var started = _time.GetTimestamp();
                var events = 0;
                var watchFromList = fromList;
                fromList = false;
                try
                {
                    var timeout = owner._options.MinWatchTimeout * (1 + NextDouble());
                    await foreach (var e in owner._api.WatchAsync(resource, resourceVersion, selectors, timeout, cancellationToken).ConfigureAwait(false))
                    {
                        events++;
                        resourceVersion = Apply(e) ?? resourceVersion;
                    }

                    if (events > 0 || _time.GetElapsedTime(started) >= owner._options.ShortWatch)
                    {
                        _backoff.Reset();
                        _logger.LogDebug("Watch of {Resource} ended after {Seconds:F0} s and {Events} events; watching again from {ResourceVersion}",
                            resource.Plural, _time.GetElapsedTime(started).TotalSeconds, events, resourceVersion);
                        continue;
                    }

                    await WaitAsync($"Watch of {resource.Plural} ended at once without events", null, cancellationToken).ConfigureAwait(false);
                }
                catch (KubernetesApiException e) when (e.IsGone)
                {
                    // A 410 is the server answering: whatever backoff an outage built up is over, and the relist runs
                    // at once (after a minute's outage the backoff is ~30 s; waiting it out again here delayed the
                    // changes made meanwhile by that much). Only a 410 straight after a list waits, growing again.
                    var goneRightAfterList = watchFromList && _time.GetElapsedTime(started) < owner._options.ShortWatch;
                    if (!goneRightAfterList) _backoff.Reset();
                    var delay = goneRightAfterList ? _backoff.Next() : TimeSpan.Zero;
                    _logger.LogInformation("Watch of {Resource}: resourceVersion {ResourceVersion} has expired ({Message}); listing again{After}",
                        resource.Plural, resourceVersion, e.Status?.Message ?? e.Message,
                        goneRightAfterList ? $" in {delay.TotalSeconds:F1} s (expired right after a list)" : "");
                    resourceVersion = null;
                    await DelayAsync(delay, cancellationToken).ConfigureAwait(false);
                }
                catch (KubernetesApiException e) when (e.IsWatchErrorEvent && !cancellationToken.IsCancellationRequested)
                {
                    ResetIfHealthy(started);
                    var delay = _backoff.Next();
                    _logger.LogWarning("Watch of {Resource} from resourceVersion {ResourceVersion} ended with an ERROR event: {Message}; listing again in {Delay:F1} s",
                        resource.Plural, resourceVersion, e.Message, delay.TotalSeconds);
                    resourceVersion = null;
                    await DelayAsync(delay, cancellationToken).ConfigureAwait(false);
                }
                catch (Exception e) when (IsRetryable(e, cancellationToken))
                {
                    ResetIfHealthy(started);
                    await WaitAsync($"Watch of {resource.Plural} failed after {_time.GetElapsedTime(started).TotalSeconds:F1} s and {events} events",
                        e, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        /// <summary>Applies one watch event to the cache and the sink; returns the resourceVersion it carries.</summary>
        private string? Apply(WatchEvent<T> e)
        {
            switch (e.Type)
            {
                case WatchEventType.Error:
                    var status = e.Status;
                    var code = status?.Code ?? 500;
                    throw new KubernetesApiException((HttpStatusCode)code, status,
                        $"watch of {resource.Plural}: ERROR event: {code} {status?.Reason}: {status?.Message}") { IsWatchErrorEvent = true };
                case WatchEventType.Bookmark:
                    return e.Object?.Metadata?.ResourceVersion;
                case WatchEventType.Added or WatchEventType.Modified:
                {
                    var current = e.Object!;
                    var key = Key(current);
                    _cache.TryGetValue(key, out var previous);
                    if (previous is not null && SameVersion(previous, current)) return current.Metadata?.ResourceVersion;
                    _cache[key] = current;
                    emit(previous, current);
                    return current.Metadata?.ResourceVersion;
                }
                case WatchEventType.Deleted:
                {
                    var gone = e.Object!;
                    if (_cache.Remove(Key(gone), out var previous)) emit(previous, null);
                    return gone.Metadata?.ResourceVersion;
                }
                default:
                    return null;
            }
        }

        /// <summary>Lists every page, delivers the difference from the cache, returns the list's resourceVersion.</summary>
        private async Task<string> ListAndDeliverAsync(bool relist, CancellationToken cancellationToken)
        {
            var started = Stopwatch.GetTimestamp();
            var items = new List<T>();
            string? continueToken = null;
            int? limit = owner._options.PageSize;
            var pages = 0;
            string? resourceVersion;
            while (true)
            {
                KubernetesList<T> page;
                try
                {
                    page = await owner._api.ListAsync(resource, selectors, continueToken, limit, cancellationToken).ConfigureAwait(false);
                }
                catch (KubernetesApiException e) when (e.IsGone && continueToken is not null)
                {
                    // The snapshot behind the continue token was compacted: one unpaginated list (as client-go's pager).
                    _logger.LogInformation("Listing {Resource}: the continue token expired after {Pages} page(s); listing all at once",
                        resource.Plural, pages);
                    items.Clear();
                    continueToken = null;
                    limit = null;
                    pages = 0;
                    continue;
                }

                pages++;
                if (page.Items is { } pageItems) items.AddRange(pageItems);
                continueToken = page.Metadata?.Continue;
                if (string.IsNullOrEmpty(continueToken))
                {
                    resourceVersion = page.Metadata?.ResourceVersion;
                    break;
                }
            }

            if (string.IsNullOrEmpty(resourceVersion))
                throw new JsonException($"the {resource.Kind}List has no metadata.resourceVersion to watch from");

            int added = 0, updated = 0, deleted = 0;
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var item in items)
            {
                var key = Key(item);
                if (!seen.Add(key)) continue;
                if (_cache.TryGetValue(key, out var previous))
                {
                    if (SameVersion(previous, item)) continue;
                    _cache[key] = item;
                    emit(previous, item);
                    updated++;
                }
                else
                {
                    _cache[key] = item;
                    emit(null, item);
                    added++;
                }
            }

            foreach (var key in _cache.Keys.Where(k => !seen.Contains(k)).ToList())
            {
                _cache.Remove(key, out var previous);
                emit(previous, null);
                deleted++;
            }

            var elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds;
            if (relist)
            {
                _logger.LogInformation(
                    "Listed {Count} {Resource} again at resourceVersion {ResourceVersion} ({Pages} page(s), {Elapsed:F0} ms): {Added} added, {Updated} updated, {Deleted} deleted",
                    items.Count, resource.Plural, resourceVersion, pages, elapsed, added, updated, deleted);
            }
            else
            {
                _logger.LogInformation("Listed {Count} {Resource} ({Selectors}) at resourceVersion {ResourceVersion} ({Pages} page(s), {Elapsed:F0} ms)",
                    items.Count, resource.Plural, selectors, resourceVersion, pages, elapsed);
            }

            return resourceVersion;
        }

        private void ResetIfHealthy(long started)
        {
            if (_time.GetElapsedTime(started) >= owner._options.HealthyWatch) _backoff.Reset();
        }

        private async Task WaitAsync(string what, Exception? e, CancellationToken cancellationToken)
        {
            var delay = _backoff.Next();
            if (e is not null)
                _logger.LogWarning("{What}: {Error}; retrying in {Delay:F1} s", what, Describe(e), delay.TotalSeconds);
            else
                _logger.LogWarning("{What}; retrying in {Delay:F1} s", what, delay.TotalSeconds);
            await DelayAsync(delay, cancellationToken).ConfigureAwait(false);
        }

        private Task DelayAsync(TimeSpan delay, CancellationToken cancellationToken) =>
            delay <= TimeSpan.Zero ? Task.CompletedTask : Task.Delay(delay, _time, cancellationToken);

        private double NextDouble()
        {
            lock (owner._random) return owner._random.NextDouble();
        }

        private static string Key(T obj) =>
            obj.Metadata?.Namespace is { Length: > 0 } ns ? ns + "/" + obj.Metadata.Name : obj.Metadata?.Name ?? "";

        private static bool SameVersion(T a, T b) =>
            a.Metadata?.ResourceVersion is { Length: > 0 } v && v == b.Metadata?.ResourceVersion;
    }
}
