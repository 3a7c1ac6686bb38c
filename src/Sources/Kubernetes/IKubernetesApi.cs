using System.Net;
using System.Text.Json.Serialization.Metadata;
using ProxyPlanes.Model;

namespace ProxyPlanes.Sources.Kubernetes;

/// <summary>
/// The two calls the proxy makes to the Kubernetes API: list a collection one page at a time, and
/// watch it from a resourceVersion. <see cref="KubernetesApiClient"/> implements it over HTTP; a
/// different client (e.g. the KubernetesClient package) can replace it by converting to the model types.
/// </summary>
/// <remarks>
/// Failures are thrown: an HTTP error status as <see cref="KubernetesApiException"/> (410 Gone when a
/// resourceVersion or continue token has expired), transport problems as <see cref="HttpRequestException"/>,
/// <see cref="IOException"/> or <see cref="TimeoutException"/>, a malformed body as
/// <see cref="System.Text.Json.JsonException"/>.
/// </remarks>
public interface IKubernetesApi
{
    /// <summary>
    /// One page of a collection (<c>GET path?limit=N&amp;continue=TOKEN</c>). The list's
    /// <see cref="ListMeta.Continue"/> names the next page (empty on the last one) and its
    /// <see cref="ListMeta.ResourceVersion"/> is the snapshot to watch from.
    /// </summary>
    Task<KubernetesList<T>> ListAsync<T>(
        KubernetesResource<T> resource, Selectors selectors, string? continueToken, int? limit, CancellationToken cancellationToken)
        where T : class, IKubernetesObject;

    /// <summary>
    /// The changes after <paramref name="resourceVersion"/>, as they happen
    /// (<c>GET path?watch=1&amp;resourceVersion=RV&amp;allowWatchBookmarks=true&amp;timeoutSeconds=N</c>).
    /// The stream ends when the server closes it (after <paramref name="timeout"/>); an <c>ERROR</c>
    /// event is yielded, not thrown, so the caller can tell an expired resourceVersion (410) apart.
    /// </summary>
    IAsyncEnumerable<WatchEvent<T>> WatchAsync<T>(
        KubernetesResource<T> resource, string resourceVersion, Selectors selectors, TimeSpan timeout, CancellationToken cancellationToken)
        where T : class, IKubernetesObject;
}

/// <summary>A label selector and a field selector, in the API's query syntax; null or empty selects everything.</summary>
public readonly record struct Selectors(string? Label = null, string? Field = null)
{
    public static Selectors None => default;

    public override string ToString() =>
        (Label, Field) switch
        {
            ({ Length: > 0 } l, { Length: > 0 } f) => $"labels {l}, fields {f}",
            ({ Length: > 0 } l, _) => $"labels {l}",
            (_, { Length: > 0 } f) => $"fields {f}",
            _ => "everything",
        };
}

/// <summary>What a watch event says happened.</summary>
public enum WatchEventType
{
    Added,
    Modified,
    Deleted,

    /// <summary>Nothing changed; the object carries only a newer resourceVersion to resume from.</summary>
    Bookmark,

    /// <summary>The watch failed; <see cref="WatchEvent{T}.Status"/> says why (code 410: the resourceVersion expired).</summary>
    Error,
}

/// <summary>One event of a watch: the object (added, modified, deleted, or a bookmark) or, for an error, the status.</summary>
public readonly record struct WatchEvent<T>(WatchEventType Type, T? Object, ApiStatus? Status = null)
    where T : class, IKubernetesObject;

/// <summary>
/// A collection of the API: its path and kind, and (for <see cref="KubernetesApiClient"/>) how its JSON is read.
/// </summary>
public sealed class KubernetesResource<T> where T : class, IKubernetesObject
{
    internal KubernetesResource(string path, string apiVersion, string kind, string plural, JsonTypeInfo<T> itemType, JsonTypeInfo<KubernetesList<T>> listType)
    {
        Path = path;
        ApiVersion = apiVersion;
        Kind = kind;
        Plural = plural;
        ItemType = itemType;
        ListType = listType;
    }

    /// <summary>The collection's path below the server's base URL, e.g. <c>/api/v1/services</c>.</summary>
    public string Path { get; }

    public string ApiVersion { get; }
    public string Kind { get; }

    /// <summary>The resource name, for messages: <c>services</c>.</summary>
    public string Plural { get; }

    internal JsonTypeInfo<T> ItemType { get; }
    internal JsonTypeInfo<KubernetesList<T>> ListType { get; }

    public override string ToString() => Plural;
}

/// <summary>The collections the proxy reads, across all namespaces.</summary>
public static class KubernetesResources
{
    public static KubernetesResource<Service> Services { get; } = new(
        "/api/v1/services", "v1", "Service", "services",
        KubernetesJsonContext.Default.Service, KubernetesJsonContext.Default.ServiceList);

    public static KubernetesResource<EndpointSlice> EndpointSlices { get; } = new(
        "/apis/discovery.k8s.io/v1/endpointslices", "discovery.k8s.io/v1", "EndpointSlice", "endpointslices",
        KubernetesJsonContext.Default.EndpointSlice, KubernetesJsonContext.Default.EndpointSliceList);

    public static KubernetesResource<Node> Nodes { get; } = new(
        "/api/v1/nodes", "v1", "Node", "nodes",
        KubernetesJsonContext.Default.Node, KubernetesJsonContext.Default.NodeList);
}

/// <summary>The API server answered a request with an error status.</summary>
public sealed class KubernetesApiException : Exception
{
    public KubernetesApiException(HttpStatusCode statusCode, ApiStatus? status, string message, Exception? innerException = null)
        : base(message, innerException)
    {
        StatusCode = statusCode;
        Status = status;
    }

    /// <summary>The HTTP status (for a watch ERROR event: the status object's code).</summary>
    public HttpStatusCode StatusCode { get; }

    /// <summary>The <c>Status</c> object the server sent, when it sent one.</summary>
    public ApiStatus? Status { get; }

    /// <summary>
    /// The error came as an ERROR event inside an open watch, not as the answer's HTTP status. The
    /// server ended that watch for a reason of its own (an expired resourceVersion, a WatchList stream
    /// its storage refuses, ...); resuming from the same resourceVersion can meet the same refusal.
    /// </summary>
    public bool IsWatchErrorEvent { get; init; }

    /// <summary>410 Gone: the resourceVersion or continue token is too old; list again.</summary>
    public bool IsGone => StatusCode == HttpStatusCode.Gone || Status?.Code == 410;
}
