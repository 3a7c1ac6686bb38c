using System.Collections.Immutable;
using System.Runtime.InteropServices;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// Keeps, per service, the ports applied at the last sync and the ports now wanted. A change
/// that returns a service to what was applied cancels out and is dropped, so the pending count
/// and the partial sync both see only real changes.
/// </summary>
public sealed class ServiceChangeTracker
{
    // Per service its ports sorted by name: an array, not a dictionary (most services have one or two ports).
    private readonly object _lock = new();
    private readonly Dictionary<NamespacedName, ServicePortInfo[]> _applied = [];
    private readonly Dictionary<NamespacedName, ServicePortInfo[]> _pending = [];

    /// <summary>Validation problems met while reading services, for the caller to log.</summary>
    public event Action<string>? InvalidService;

    public int PendingCount { get { lock (_lock) return _pending.Count; } }

    /// <summary>How many pending services the tracker has room for (tests: a cold start's burst is not kept).</summary>
    internal int PendingCapacity { get { lock (_lock) return _pending.EnsureCapacity(0); } }

    /// <summary>Records an add (no previous), update or delete (no current). True if a change is now pending.</summary>
    public bool Update(Service? previous, Service? current)
    {
        var obj = (IKubernetesObject?)current ?? previous;
        if (obj is null) return false;
        var name = ServiceConversion.NameOf(obj);
        List<string>? errors = InvalidService is null ? null : [];
        var ports = current is null ? [] : ServiceConversion.ToServicePortArray(current, errors);
        if (ports.Length > 1) Array.Sort(ports, static (x, y) => x.Name.CompareTo(y.Name));
        foreach (var error in errors ?? []) InvalidService?.Invoke(error);
        lock (_lock)
        {
            var applied = _applied.GetValueOrDefault(name) ?? [];
            if (SamePorts(applied, ports)) return _pending.Remove(name) && false;
            _pending[name] = ports;
            return true;
        }
    }

    /// <summary>Applies the pending changes and returns the service ports that were added, removed or changed.</summary>
    public IReadOnlyCollection<(ServicePortName Name, ServicePortInfo? Info)> Checkout()
    {
        lock (_lock)
        {
            var changed = new List<(ServicePortName, ServicePortInfo?)>();
            foreach (var (name, current) in _pending)
            {
                var applied = _applied.GetValueOrDefault(name) ?? [];
                foreach (var info in current)
                    if (Find(applied, info.Name) is not { } old || !old.Equals(info)) changed.Add((info.Name, info));
                foreach (var old in applied)
                    if (Find(current, old.Name) is null) changed.Add((old.Name, null));
                if (current.Length == 0) _applied.Remove(name);
                else _applied[name] = current;
            }
            ChangeTracking.Empty(_pending);
            return changed;
        }
    }

    private static ServicePortInfo? Find(ServicePortInfo[] ports, ServicePortName name)
    {
        foreach (var port in ports)
            if (port.Name == name) return port;
        return null;
    }

    /// <summary>Both sorted by name: equal when the same ports are equal.</summary>
    private static bool SamePorts(ServicePortInfo[] a, ServicePortInfo[] b)
    {
        if (a.Length != b.Length) return false;
        for (var i = 0; i < a.Length; i++)
            if (!a[i].Equals(b[i])) return false;
        return true;
    }
}

/// <summary>
/// Keeps every EndpointSlice by service, and per service the endpoints applied at the last sync.
/// Slices of one service are merged (an endpoint listed twice counts once). Changes that leave a
/// service's endpoints as applied are dropped; the earliest trigger time of each pending service
/// is kept for the network-programming latency.
/// </summary>
/// <remarks>
/// Sized for the cold start (10,000s of services, one slice each): per service a small array of its slices
/// (sorted by name) and one of its ports' endpoints (<see cref="PortEndpoints"/>, sorted by port), no
/// dictionaries. The endpoint arrays are the ones <see cref="EndpointsOf"/> hands out, and the categorizer
/// passes them on unchanged when every endpoint qualifies, so the verdicts share them.
/// </remarks>
public sealed class EndpointsChangeTracker(string hostName)
{
    private readonly object _lock = new();
    private readonly Dictionary<NamespacedName, (string Name, EndpointSlice Slice)[]> _slices = [];
    private readonly Dictionary<NamespacedName, PortEndpoints[]> _applied = [];
    private readonly Dictionary<NamespacedName, PortEndpoints[]> _pending = [];
    private readonly Dictionary<NamespacedName, DateTimeOffset> _triggerTimes = [];

    public int PendingCount { get { lock (_lock) return _pending.Count; } }

    /// <summary>How many pending services and trigger times the tracker has room for (tests: a cold start's burst is not kept).</summary>
    internal (int Pending, int TriggerTimes) PendingCapacity { get { lock (_lock) return (_pending.EnsureCapacity(0), _triggerTimes.EnsureCapacity(0)); } }

    public bool Update(EndpointSlice? previous, EndpointSlice? current)
    {
        var slice = current ?? previous;
        if (slice?.Metadata?.Labels?.TryGetValue(WellKnownLabels.ServiceName, out var serviceName) != true || string.IsNullOrEmpty(serviceName))
            return false;
        var service = new NamespacedName(ServiceConversion.NameOf(slice).Namespace, serviceName);
        var sliceName = slice.Metadata!.Name ?? "";
        lock (_lock)
        {
            var slices = WithSlice(_slices.GetValueOrDefault(service) ?? [], sliceName, current);
            if (slices.Length == 0) _slices.Remove(service);
            else _slices[service] = slices;

            var endpoints = Merge(slices, hostName);
            var applied = _applied.GetValueOrDefault(service) ?? [];
            if (SameEndpoints(applied, endpoints))
            {
                _triggerTimes.Remove(service);
                return _pending.Remove(service) && false;
            }
            _pending[service] = endpoints;
            if (current is not null && ServiceConversion.LastChangeTriggerTime(current) is { } trigger &&
                (!_triggerTimes.TryGetValue(service, out var earliest) || trigger < earliest))
                _triggerTimes[service] = trigger;
            return true;
        }
    }

    /// <summary>Applies pending changes: the service ports whose endpoints changed, and the trigger times consumed.</summary>
    public (IReadOnlyCollection<ServicePortName> Changed, IReadOnlyCollection<DateTimeOffset> TriggerTimes) Checkout()
    {
        lock (_lock)
        {
            var changed = new List<ServicePortName>();
            foreach (var (service, current) in _pending)
            {
                var applied = _applied.GetValueOrDefault(service) ?? [];
                foreach (var (port, endpoints) in current)
                    if (Find(applied, port) is not { } old || old != endpoints) changed.Add(port);
                foreach (var (port, _) in applied)
                    if (Find(current, port) is null) changed.Add(port);
                if (current.Length == 0) _applied.Remove(service);
                else _applied[service] = current;
            }
            ChangeTracking.Empty(_pending);
            var triggers = _triggerTimes.Values.ToList();
            ChangeTracking.Empty(_triggerTimes);
            return (changed, triggers);
        }
    }

    /// <summary>The applied endpoints of one service port (empty when it has none), sorted by address and port.</summary>
    public EquatableArray<EndpointInfo> EndpointsOf(ServicePortName port)
    {
        lock (_lock)
            return _applied.TryGetValue(port.Service, out var byPort) && Find(byPort, port) is { } endpoints
                ? endpoints
                : EquatableArray<EndpointInfo>.Empty;
    }

    /// <summary>The endpoints of one service port: what the tracker keeps per port.</summary>
    internal readonly record struct PortEndpoints(ServicePortName Port, EquatableArray<EndpointInfo> Endpoints);

    private static EquatableArray<EndpointInfo>? Find(PortEndpoints[] ports, ServicePortName port)
    {
        foreach (var entry in ports)
            if (entry.Port == port) return entry.Endpoints;
        return null;
    }

    /// <summary>Both sorted by port: equal when the same ports have the same endpoints.</summary>
    private static bool SameEndpoints(PortEndpoints[] a, PortEndpoints[] b)
    {
        if (a.Length != b.Length) return false;
        for (var i = 0; i < a.Length; i++)
            if (a[i].Port != b[i].Port || a[i].Endpoints != b[i].Endpoints) return false;
        return true;
    }

    /// <summary>A service's slices (sorted by name) with one set to <paramref name="slice"/>, or removed when it is null; a new array.</summary>
    internal static (string Name, EndpointSlice Slice)[] WithSlice((string Name, EndpointSlice Slice)[] slices, string name, EndpointSlice? slice)
    {
        var index = 0;
        while (index < slices.Length && string.CompareOrdinal(slices[index].Name, name) < 0) index++;
        var found = index < slices.Length && slices[index].Name == name;
        if (slice is null)
            return found ? [.. slices.AsSpan(0, index), .. slices.AsSpan(index + 1)] : slices;
        if (found)
        {
            var copy = (((string, EndpointSlice)[])slices.Clone());
            copy[index] = (name, slice);
            return copy;
        }
        return [.. slices.AsSpan(0, index), (name, slice), .. slices.AsSpan(index)];
    }

    /// <summary>
    /// The endpoints a service's slices (sorted by name) give each of its ports, sorted by port, each port's
    /// sorted by address and port; an endpoint listed twice counts once, as the first slice (by name) lists it.
    /// </summary>
    internal static PortEndpoints[] Merge((string Name, EndpointSlice Slice)[] slices, string hostName)
    {
        List<(ServicePortName Port, List<EndpointInfo> Endpoints)>? byPort = null;
        foreach (var (_, slice) in slices)
        {
            if (ServiceConversion.ServiceOf(slice) is not { } service) continue;
            foreach (var port in slice.Ports ?? [])
            {
                if (!ServiceConversion.TryPortName(service, port, out var portName)) continue;
                byPort ??= new(1);
                List<EndpointInfo>? endpoints = null;
                foreach (var (known, list) in byPort)
                    if (known == portName) endpoints = list;
                if (endpoints is null) byPort.Add((portName, endpoints = new List<EndpointInfo>(slice.Endpoints?.Count ?? 0)));
                foreach (var endpoint in slice.Endpoints ?? [])
                    if (ServiceConversion.ToEndpoint(endpoint, port.Port!.Value, hostName) is { } info)
                        endpoints.Add(info);
            }
        }
        if (byPort is null) return [];
        var result = new PortEndpoints[byPort.Count];
        for (var i = 0; i < result.Length; i++) result[i] = new PortEndpoints(byPort[i].Port, SortedDistinct(byPort[i].Endpoints));
        if (result.Length > 1) Array.Sort(result, static (x, y) => x.Port.CompareTo(y.Port));
        return result;
    }

    /// <summary>The endpoints sorted by address and port; of equal ones (same address and port) the first listed stays.</summary>
    internal static EquatableArray<EndpointInfo> SortedDistinct(List<EndpointInfo> endpoints)
    {
        var ascending = true;
        for (var i = 1; i < endpoints.Count && ascending; i++) ascending = endpoints[i - 1].CompareTo(endpoints[i]) < 0;
        if (ascending) return new EquatableArray<EndpointInfo>(ImmutableCollectionsMarshal.AsImmutableArray(endpoints.ToArray()));
        // Sorted with the listing order as the tie-break, so the first of equal endpoints comes first.
        var ordered = new (EndpointInfo Endpoint, int Order)[endpoints.Count];
        for (var i = 0; i < ordered.Length; i++) ordered[i] = (endpoints[i], i);
        Array.Sort(ordered, static (x, y) => x.Endpoint.CompareTo(y.Endpoint) is var c and not 0 ? c : x.Order.CompareTo(y.Order));
        var distinct = new List<EndpointInfo>(ordered.Length);
        foreach (var (endpoint, _) in ordered)
            if (distinct.Count == 0 || distinct[^1].CompareTo(endpoint) != 0) distinct.Add(endpoint);
        return new EquatableArray<EndpointInfo>(ImmutableCollectionsMarshal.AsImmutableArray(distinct.ToArray()));
    }
}

internal static class ChangeTracking
{
    /// <summary>Above this many entries, a checked-out pending map gives its room back.</summary>
    internal const int KeptCapacity = 1024;

    /// <summary>
    /// Empties a pending map. After a cold start's burst (every service pending once) it would keep room for all of
    /// them for good (~2 MB at 50,000 services per map); a map that grew past <see cref="KeptCapacity"/> shrinks.
    /// </summary>
    internal static void Empty<TKey, TValue>(Dictionary<TKey, TValue> pending) where TKey : notnull
    {
        var large = pending.EnsureCapacity(0) > KeptCapacity;
        pending.Clear();
        if (large) pending.TrimExcess();
    }
}
