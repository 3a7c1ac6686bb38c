using System.Collections.Immutable;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// Keeps, per service, the ports applied at the last sync and the ports now wanted. A change
/// that returns a service to what was applied cancels out and is dropped, so the pending count
/// and the partial sync both see only real changes.
/// </summary>
public sealed class ServiceChangeTracker
{
    private readonly object _lock = new();
    private readonly Dictionary<NamespacedName, ImmutableDictionary<ServicePortName, ServicePortInfo>> _applied = [];
    private readonly Dictionary<NamespacedName, ImmutableDictionary<ServicePortName, ServicePortInfo>> _pending = [];

    /// <summary>Validation problems met while reading services, for the caller to log.</summary>
    public event Action<string>? InvalidService;

    public int PendingCount { get { lock (_lock) return _pending.Count; } }

    /// <summary>Records an add (no previous), update or delete (no current). True if a change is now pending.</summary>
    public bool Update(Service? previous, Service? current)
    {
        var obj = (IKubernetesObject?)current ?? previous;
        if (obj is null) return false;
        var name = ServiceConversion.NameOf(obj);
        var errors = new List<string>();
        var ports = current is null ? ImmutableDictionary<ServicePortName, ServicePortInfo>.Empty : ServiceConversion.ToServicePorts(current, errors);
        foreach (var error in errors) InvalidService?.Invoke(error);
        lock (_lock)
        {
            var applied = _applied.GetValueOrDefault(name) ?? ImmutableDictionary<ServicePortName, ServicePortInfo>.Empty;
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
                var applied = _applied.GetValueOrDefault(name) ?? ImmutableDictionary<ServicePortName, ServicePortInfo>.Empty;
                foreach (var (port, info) in current)
                    if (!applied.TryGetValue(port, out var old) || !old.Equals(info)) changed.Add((port, info));
                foreach (var port in applied.Keys)
                    if (!current.ContainsKey(port)) changed.Add((port, null));
                if (current.IsEmpty) _applied.Remove(name);
                else _applied[name] = current;
            }
            _pending.Clear();
            return changed;
        }
    }

    private static bool SamePorts(ImmutableDictionary<ServicePortName, ServicePortInfo> a, ImmutableDictionary<ServicePortName, ServicePortInfo> b) =>
        a.Count == b.Count && a.All(kv => b.TryGetValue(kv.Key, out var other) && other.Equals(kv.Value));
}

/// <summary>
/// Keeps every EndpointSlice by service, and per service the endpoints applied at the last sync.
/// Slices of one service are merged (an endpoint listed twice counts once). Changes that leave a
/// service's endpoints as applied are dropped; the earliest trigger time of each pending service
/// is kept for the network-programming latency.
/// </summary>
public sealed class EndpointsChangeTracker(string hostName)
{
    private readonly object _lock = new();
    private readonly Dictionary<NamespacedName, SortedDictionary<string, EndpointSlice>> _slices = [];
    private readonly Dictionary<NamespacedName, EndpointsByPort> _applied = [];
    private readonly Dictionary<NamespacedName, EndpointsByPort> _pending = [];
    private readonly Dictionary<NamespacedName, DateTimeOffset> _triggerTimes = [];

    public int PendingCount { get { lock (_lock) return _pending.Count; } }

    public bool Update(EndpointSlice? previous, EndpointSlice? current)
    {
        var slice = current ?? previous;
        if (slice?.Metadata?.Labels?.TryGetValue(WellKnownLabels.ServiceName, out var serviceName) != true || string.IsNullOrEmpty(serviceName))
            return false;
        var service = new NamespacedName(ServiceConversion.NameOf(slice).Namespace, serviceName);
        var sliceName = slice.Metadata!.Name ?? "";
        lock (_lock)
        {
            if (!_slices.TryGetValue(service, out var slices)) _slices[service] = slices = new(StringComparer.Ordinal);
            if (current is null) slices.Remove(sliceName);
            else slices[sliceName] = current;
            if (slices.Count == 0) _slices.Remove(service);

            var endpoints = Merge(slices.Values);
            var applied = _applied.GetValueOrDefault(service) ?? EndpointsByPort.Empty;
            if (applied.Equals(endpoints))
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
                var applied = _applied.GetValueOrDefault(service) ?? EndpointsByPort.Empty;
                foreach (var (port, endpoints) in current.Ports)
                    if (!applied.Ports.TryGetValue(port, out var old) || old != endpoints) changed.Add(port);
                foreach (var port in applied.Ports.Keys)
                    if (!current.Ports.ContainsKey(port)) changed.Add(port);
                if (current.Ports.IsEmpty) _applied.Remove(service);
                else _applied[service] = current;
            }
            _pending.Clear();
            var triggers = _triggerTimes.Values.ToList();
            _triggerTimes.Clear();
            return (changed, triggers);
        }
    }

    /// <summary>The applied endpoints of one service port (empty when it has none).</summary>
    public EquatableArray<EndpointInfo> EndpointsOf(ServicePortName port)
    {
        lock (_lock)
            return _applied.TryGetValue(port.Service, out var byPort) && byPort.Ports.TryGetValue(port, out var endpoints)
                ? endpoints
                : EquatableArray<EndpointInfo>.Empty;
    }

    private EndpointsByPort Merge(IEnumerable<EndpointSlice> slices)
    {
        var byPort = new Dictionary<ServicePortName, SortedDictionary<EndpointInfo, EndpointInfo>>();
        foreach (var slice in slices)
        foreach (var (port, endpoint) in ServiceConversion.ToEndpoints(slice, hostName))
        {
            if (!byPort.TryGetValue(port, out var set)) byPort[port] = set = [];
            set.TryAdd(endpoint, endpoint); // keyed by address:port; the first slice listing it wins
        }
        return new EndpointsByPort(byPort.ToImmutableDictionary(kv => kv.Key, kv => new EquatableArray<EndpointInfo>(kv.Value.Values)));
    }

    private sealed record EndpointsByPort(ImmutableDictionary<ServicePortName, EquatableArray<EndpointInfo>> Ports)
    {
        public static EndpointsByPort Empty { get; } = new(ImmutableDictionary<ServicePortName, EquatableArray<EndpointInfo>>.Empty);

        public bool Equals(EndpointsByPort? other) =>
            other is not null && Ports.Count == other.Ports.Count &&
            Ports.All(kv => other.Ports.TryGetValue(kv.Key, out var endpoints) && endpoints == kv.Value);

        public override int GetHashCode() => Ports.Count;
    }
}
