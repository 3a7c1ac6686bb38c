using ProxyPlanes.Model;

namespace ProxyPlanes.Model;

/// <summary>
/// Receives the objects a source watches. Each call is an (old, new) pair: an add has no old
/// object, a delete no new one. A source calls one method at a time.
/// </summary>
public interface IObjectSink
{
    void OnService(Service? previous, Service? current);
    void OnEndpointSlice(EndpointSlice? previous, EndpointSlice? current);
    void OnNode(Node? previous, Node? current);

    /// <summary>The source has delivered its whole initial state (a first list, or the first read of the manifests).</summary>
    void OnInitialStateDelivered();
}

/// <summary>
/// Turns the outside world (the Kubernetes API, manifest files) into object events.
/// Sources know nothing of backends.
/// </summary>
public interface IObjectSource
{
    /// <summary>Delivers events to <paramref name="sink"/> until cancelled.</summary>
    Task RunAsync(IObjectSink sink, CancellationToken cancellationToken);
}
