using System.Collections.Immutable;
using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;

namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// The shared control loop: receives object events, keeps them in the change trackers, and on
/// each sync turns what changed into a new <see cref="DesiredState"/> for the backend. Policy is
/// applied here, once, for every data plane.
/// </summary>
public sealed class ProxyController : IObjectSink
{
    private readonly ProxyOptions _options;
    private readonly IProxyBackend _backend;
    private readonly ISyncMetrics _metrics;
    private readonly ILogger _logger;
    private readonly TimeProvider _time;
    private readonly ServiceChangeTracker _services = new();
    private readonly EndpointsChangeTracker _endpoints;
    private readonly Dictionary<ServicePortName, ServicePortInfo> _servicePorts = [];
    private readonly object _nodeLock = new();
    private string? _nodeZone;
    private EquatableArray<IpPrefix> _nodePodCidrs = EquatableArray<IpPrefix>.Empty;
    private EquatableArray<System.Net.IPAddress> _nodeIPs = EquatableArray<System.Net.IPAddress>.Empty;
    private EquatableArray<System.Net.IPAddress> _nodePrimaryIPs = EquatableArray<System.Net.IPAddress>.Empty;
    private volatile bool _initialStateDelivered;
    private bool _nodePortAddressesLogged;
    private DesiredState _built = DesiredState.Empty;
    private int _successfulSyncs;
    private long _changesSeen;

    public ProxyController(ProxyOptions options, IProxyBackend backend, ISyncMetrics metrics, ILogger logger, TimeProvider? time = null)
    {
        _options = options;
        _backend = backend;
        _metrics = metrics;
        _metrics.UseFamilies(backend.Families);
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _endpoints = new EndpointsChangeTracker(options.HostName);
        _services.InvalidService += message => _logger.LogWarning("Ignoring invalid field: {Problem}", message);
        Health = new ProxyHealth(_time, 2 * options.Sync.SyncPeriod, backend.Families);
        Runner = new SyncRunner(SyncAsync, options.Sync, _time, logger) { EndpointCount = CountEndpoints };
    }

    public SyncRunner Runner { get; }

    /// <summary>
    /// Reads this node's local addresses, for --nodeport-addresses (CIDRs and <c>primary</c> both pick
    /// among them at every sync); tests give fixed addresses.
    /// </summary>
    public Func<IEnumerable<System.Net.IPAddress>> LocalAddresses { get; init; } = NodeAddresses.ReadLocalAddresses;
    public ProxyHealth Health { get; }

    /// <summary>The state the kernel was last programmed with successfully.</summary>
    public DesiredState Applied { get; private set; } = DesiredState.Empty;

    private volatile AppliedSync? _lastApplied;

    /// <summary>
    /// <see cref="Applied"/> with the number and time of the sync that programmed it (what /debug/state
    /// serves); null until the first successful sync.
    /// </summary>
    public AppliedSync? LastApplied => _lastApplied;

    /// <summary>Raised after every successful sync (tests, the demo and the benchmark wait on it).</summary>
    public event Action<SyncReport>? Synced;

    private readonly List<(string Name, Func<DesiredState, DesiredState, IReadOnlySet<ServicePortName>?, CancellationToken, Task> Action)> _afterSync = [];

    /// <summary>
    /// Work that follows every successful sync, given the previous and the new applied state:
    /// conntrack cleanup, the health-check node port servers. A failure is logged; the kernel
    /// already has the rules, so it never fails the sync.
    /// </summary>
    public void AfterSync(string name, Func<DesiredState, DesiredState, CancellationToken, Task> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        _afterSync.Add((name, (previous, state, _, token) => action(previous, state, token)));
    }

    /// <summary>
    /// As <see cref="AfterSync(string, Func{DesiredState, DesiredState, CancellationToken, Task})"/>, also given the
    /// service ports that may differ between the two states (every other port is the same object in both), or null
    /// when any may (a full sync, or a partial one after a failed sync): work that needs only the changes can skip
    /// the 10,000 ports that did not change.
    /// </summary>
    public void AfterSync(string name, Func<DesiredState, DesiredState, IReadOnlySet<ServicePortName>?, CancellationToken, Task> action) =>
        _afterSync.Add((name, action));

    public void OnService(Service? previous, Service? current)
    {
        if (_services.Update(previous, current))
        {
            Interlocked.Increment(ref _changesSeen);
            _metrics.AddChanges(services: 1, endpoints: 0);
            Queue();
        }
    }

    public void OnEndpointSlice(EndpointSlice? previous, EndpointSlice? current)
    {
        if (_endpoints.Update(previous, current))
        {
            Interlocked.Increment(ref _changesSeen);
            _metrics.AddChanges(services: 0, endpoints: 1);
            Queue();
        }
    }

    public void OnNode(Node? previous, Node? current)
    {
        var node = current ?? previous;
        if (node?.Metadata?.Name != _options.HostName) return;
        Health.NodeEligible(current is not null && current.Metadata?.DeletionTimestamp is null &&
            !(current.Spec?.Taints ?? []).Any(t => t.Key == WellKnownLabels.ToBeDeletedByClusterAutoscaler));
        var zone = current?.Metadata?.Labels?.GetValueOrDefault(WellKnownLabels.TopologyZone);
        var podCidrs = new EquatableArray<IpPrefix>(
            (current?.Spec?.PodCIDRs is { Count: > 0 } cidrs ? cidrs : current?.Spec?.PodCIDR is { } one ? [one] : [])
            .Select(c => IpPrefix.TryParse(c, out var prefix) ? prefix : (IpPrefix?)null).OfType<IpPrefix>());
        var nodeIPs = new EquatableArray<System.Net.IPAddress>(
            (current?.Status?.Addresses ?? []).Where(a => a.Type == "InternalIP")
            .Select(a => IpPrefix.TryParseAddress(a.Address ?? "", out var ip) ? ip : null).OfType<System.Net.IPAddress>());
        var primaryIPs = NodeAddresses.PrimaryIPs(current?.Status?.Addresses);
        lock (_nodeLock)
        {
            if (zone == _nodeZone && podCidrs == _nodePodCidrs && nodeIPs == _nodeIPs && primaryIPs == _nodePrimaryIPs) return;
            (_nodeZone, _nodePodCidrs, _nodeIPs, _nodePrimaryIPs) = (zone, podCidrs, nodeIPs, primaryIPs);
        }
        Queue();
    }

    public void OnInitialStateDelivered()
    {
        _initialStateDelivered = true;
        Queue();
    }

    private void Queue()
    {
        _metrics.SetPendingChanges(_services.PendingCount, _endpoints.PendingCount);
        if (!_initialStateDelivered) return; // the first sync waits for the whole initial state
        _metrics.SetLastQueuedTimestamp(_time.GetUtcNow());
        Health.Queued();
        Runner.Trigger();
    }

    /// <summary>
    /// Runs one sync now, outside the <see cref="Runner"/>'s schedule: for callers that drive syncs
    /// themselves (golden tests, the benchmark). Never call it while the runner is running.
    /// </summary>
    public Task SyncNowAsync(bool full, CancellationToken cancellationToken = default) =>
        SyncAsync(full ? new SyncDecision(FullSyncReason.Start, false) : SyncDecision.Partial, cancellationToken);

    /// <inheritdoc cref="SyncNowAsync(bool, CancellationToken)"/>
    public Task<bool> SyncNowAsync(SyncDecision decision, CancellationToken cancellationToken = default) => SyncAsync(decision, cancellationToken);

    /// <summary>Endpoints over all service ports, as kube-proxy counts them for its large-cluster rule.</summary>
    private int CountEndpoints() => _servicePorts.Keys.Sum(name => _endpoints.EndpointsOf(name).Count);

    /// <summary>One sync; returns whether it was full (the runner schedules the hourly resync from it).</summary>
    private async Task<bool> SyncAsync(SyncDecision decision, CancellationToken cancellationToken)
    {
        var start = _time.GetUtcNow();
        var fullReason = decision.FullReason;
        if (fullReason is null && decision.CheckCanary && _successfulSyncs > 0 && !await CanaryIntactAsync(cancellationToken).ConfigureAwait(false))
            fullReason = FullSyncReason.Flush;
        var stopwatch = Stopwatch.StartNew();
        // Every change counted so far is already in the trackers (a tracker is updated before the
        // change is counted), so the checkout below includes it.
        var changesIncluded = Interlocked.Read(ref _changesSeen);

        var changed = new SortedSet<ServicePortName>();
        foreach (var (name, info) in _services.Checkout())
        {
            changed.Add(name);
            if (info is null) _servicePorts.Remove(name);
            else _servicePorts[name] = info;
        }
        var (endpointChanges, triggerTimes) = _endpoints.Checkout();
        changed.UnionWith(endpointChanges);
        _metrics.SetPendingChanges(_services.PendingCount, _endpoints.PendingCount);

        var network = BuildNetwork(out var primaryIPs);
        if (fullReason is null && network != _built.Network) fullReason = _successfulSyncs > 0 ? FullSyncReason.NodeChanged : FullSyncReason.Start;
        if (!_nodePortAddressesLogged || network.NodePortAddresses != _built.Network.NodePortAddresses) LogNodePortAddresses(network, primaryIPs);
        var rebuildAll = fullReason is not null;
        if (!rebuildAll && changed.Count == 0 && _successfulSyncs > 0)
        {
            // Events that cancelled out, a burst already synced, or a periodic sync with nothing
            // to do: the kernel has it all. It still counts as a successful sync for the
            // last-sync timestamp, as kube-proxy's, so alerts on a stale timestamp mean a stuck
            // proxy, not a quiet cluster.
            _metrics.SetChangesApplied(changesIncluded);
            _metrics.SetLastSyncTimestamp(_time.GetUtcNow());
            Health.Updated(start);
            return false;
        }
        if (fullReason is { } reason)
        {
            _metrics.FullSyncStarted(reason.Label());
            if (reason != FullSyncReason.Start) _logger.LogInformation("Full sync: {Reason}", Describe(reason));
        }
        var builtFrom = _built;
        var state = rebuildAll ? BuildAll(network) : Rebuild(_built, changed);
        _built = state;

        var policyTime = stopwatch.Elapsed;
        // Work a backend defers (the compacting collection after a large full sync) runs when this scope ends: after
        // the sync is reported, or has failed; not inside its time (AfterSyncWork).
        using var afterSync = AfterSyncWork.Open();
        SyncTimings timings;
        try
        {
            timings = await _backend.SyncAsync(new SyncRequest(state, rebuildAll, changed), cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            _metrics.SyncFailed(_backend.Mode);
            // As kube-proxy's proxier per family: a family the backend did program is up to date
            // though another failed (the retry, a full sync, rewrites it unchanged).
            if (e is BackendSyncException { AppliedFamilies: var applied })
                foreach (var family in applied) Health.Updated(family, start);
            throw;
        }
        var elapsed = stopwatch.Elapsed;
        var end = _time.GetUtcNow();

        var previous = Applied;
        Applied = state;
        // The changed ports are relative to the state this one was built from: the previous applied one unless a sync failed in between.
        var changedSincePrevious = !rebuildAll && ReferenceEquals(builtFrom, previous) ? changed : null;
        foreach (var (name, action) in _afterSync)
        {
            try
            {
                await action(previous, state, changedSincePrevious, cancellationToken).ConfigureAwait(false);
            }
            catch (Exception e) when (e is not OperationCanceledException)
            {
                _logger.LogWarning("After the sync, {Action} failed: {Error}", name, e.Message);
            }
        }
        _metrics.RecordSync(elapsed, rebuildAll, _backend.Mode);
        _metrics.RecordPhase("plan", _backend.Mode, policyTime + timings.Plan);
        _metrics.RecordPhase("render", _backend.Mode, timings.Render);
        _metrics.RecordPhase("apply", _backend.Mode, timings.Apply);
        _metrics.SetLastSyncTimestamp(end);
        // Only after the first sync: before it, trigger times measure how long the proxy was down.
        if (_successfulSyncs++ > 0)
            foreach (var trigger in triggerTimes)
                if (end > trigger) _metrics.RecordNetworkProgramming(end - trigger);
        _lastApplied = new AppliedSync(state, _successfulSyncs, end, _backend.Mode, _backend.Families);
        UpdateNoLocalEndpoints(previous, state, rebuildAll ? null : changed);

        _metrics.SetChangesApplied(changesIncluded);
        // Healthy only once everything about this sync is published, after-sync work included: the
        // health-check ports are open and stale flows are gone when a readiness probe sees 200.
        Health.Updated(start);

        var report = new SyncReport(rebuildAll, changed.Count, state.ServicePorts.Count, elapsed, timings, end) { FullReason = fullReason };
        _logger.LogInformation(
            "Synced {Kind}: {Changed} service ports changed, {Total} in total, {Elapsed:F1} ms (plan {Plan:F1} ms, render {Render:F1} ms, apply {Apply:F1} ms)",
            rebuildAll ? $"full ({fullReason!.Value.Label()})" : "partial", changed.Count, state.ServicePorts.Count, elapsed.TotalMilliseconds,
            (policyTime + timings.Plan).TotalMilliseconds, timings.Render.TotalMilliseconds, timings.Apply.TotalMilliseconds);
        Synced?.Invoke(report);
        return rebuildAll;
    }

    private static string Describe(FullSyncReason reason) => reason switch
    {
        FullSyncReason.Failure => "the previous sync failed, so the kernel is read and repaired",
        FullSyncReason.Flush => "the data plane's canary is gone: its rules were changed or flushed behind our back",
        FullSyncReason.NodeChanged => "a node-level setting changed (node IPs, zone, pod CIDRs, local-traffic detection or node port addresses)",
        FullSyncReason.Hourly => "the hourly resync",
        _ => "start",
    };

    /// <summary>
    /// The periodic check that what the data plane installed is still there. A check that cannot
    /// run counts as a missing canary: a full sync then reads the kernel and says what is wrong.
    /// </summary>
    private async Task<bool> CanaryIntactAsync(CancellationToken cancellationToken)
    {
        try
        {
            if (await _backend.CanaryIntactAsync(cancellationToken).ConfigureAwait(false))
            {
                _metrics.CanaryChecked("intact");
                return true;
            }
            _metrics.CanaryChecked("gone");
            _logger.LogWarning("The {Mode} canary is gone: the proxy's rules were flushed or changed from outside; running a full sync", _backend.Mode);
        }
        catch (Exception e) when (e is not OperationCanceledException)
        {
            _metrics.CanaryChecked("error");
            _logger.LogWarning("Could not check the {Mode} canary ({Error}); running a full sync", _backend.Mode, e.Message);
        }
        return false;
    }

    /// <summary>
    /// Says where node ports are accepted whenever that changes: with <c>primary</c> it follows the Node
    /// object, and an operator must be able to tell why a node port stopped answering on an address.
    /// </summary>
    private void LogNodePortAddresses(NodeNetwork network, EquatableArray<System.Net.IPAddress> primaryIPs)
    {
        _nodePortAddressesLogged = true;
        if (_options.NodePortAddresses == NodePortAddressSetting.All) return; // always every local address: nothing to tell
        var where = network.NodePortAddresses is { } addresses
            ? addresses.IsEmpty ? "no address" : string.Join(", ", addresses)
            : "every local address";
        if (_options.NodePortAddresses.Primary && primaryIPs.IsEmpty)
            _logger.LogWarning("--nodeport-addresses=primary: node {Node} lists no InternalIP or ExternalIP yet, so node ports are accepted on {Addresses}, as kube-proxy does", _options.HostName, where);
        else
            _logger.LogInformation("Node ports are accepted on {Addresses} (--nodeport-addresses={Setting})", where, _options.NodePortAddresses);
    }

    private NodeNetwork BuildNetwork(out EquatableArray<System.Net.IPAddress> primaryIPs)
    {
        string? zone;
        EquatableArray<IpPrefix> nodePodCidrs;
        EquatableArray<System.Net.IPAddress> nodeIPs;
        lock (_nodeLock) (zone, nodePodCidrs, nodeIPs, primaryIPs) = (_nodeZone, _nodePodCidrs, _nodeIPs, _nodePrimaryIPs);
        var detector = _options.DetectLocalMode switch
        {
            LocalDetectMode.ClusterCidr when !_options.ClusterCidrs.IsEmpty => new LocalTrafficDetector(LocalDetectMode.ClusterCidr, _options.ClusterCidrs),
            LocalDetectMode.NodeCidr => new LocalTrafficDetector(LocalDetectMode.NodeCidr, nodePodCidrs),
            LocalDetectMode.InterfaceNamePrefix or LocalDetectMode.BridgeInterface => new LocalTrafficDetector(_options.DetectLocalMode, EquatableArray<IpPrefix>.Empty, _options.PodInterface),
            _ => LocalTrafficDetector.None,
        };
        return new NodeNetwork
        {
            NodeName = _options.HostName,
            Zone = zone,
            LocalDetector = detector,
            NodeIPs = nodeIPs,
            MasqueradeAll = _options.MasqueradeAll,
            // "primary" is resolved here, against the Node as last seen, so every data plane renders plain
            // addresses; a new primary IP changes the network, hence a full sync.
            NodePortAddresses = _options.NodePortAddresses.Primary
                ? NodeAddresses.SelectPrimary(primaryIPs, LocalAddresses)
                : NodeAddresses.Select(_options.NodePortAddresses.Cidrs, LocalAddresses),
        };
    }

    private DesiredState BuildAll(NodeNetwork network)
    {
        var ports = ImmutableSortedDictionary.CreateBuilder<ServicePortName, ServicePortState>();
        foreach (var (name, info) in _servicePorts)
            ports[name] = EndpointCategorizer.CategorizeByFamily(info, _endpoints.EndpointsOf(name).AsImmutableArray(), network.Zone, network);
        return new DesiredState(ports.ToImmutable(), network);
    }

    private DesiredState Rebuild(DesiredState previous, IEnumerable<ServicePortName> changed)
    {
        var ports = previous.ServicePorts.ToBuilder();
        foreach (var name in changed)
        {
            if (_servicePorts.TryGetValue(name, out var info))
                ports[name] = EndpointCategorizer.CategorizeByFamily(info, _endpoints.EndpointsOf(name).AsImmutableArray(), previous.Network.Zone, previous.Network);
            else
                ports.Remove(name);
        }
        return previous with { ServicePorts = ports.ToImmutable() };
    }

    /// <summary>A Local-policy port "has no local endpoints" (kube-proxy's metric) when it has endpoints, none of them here.</summary>
    private static bool NoLocal(EndpointSet endpoints) => endpoints.HasAnyEndpoints && endpoints.Local.IsEmpty;

    // The no-local-endpoints gauges, per family and policy, and the state they were counted for: a partial
    // sync changes them by its changed ports only (counting every port cost milliseconds per sync at 10,000).
    private readonly Dictionary<(IpFamily Family, bool External), int> _noLocalCounts = [];
    private DesiredState? _noLocalCountedFor;

    private void UpdateNoLocalEndpoints(DesiredState previous, DesiredState state, IReadOnlyCollection<ServicePortName>? changed)
    {
        void Count(ServicePortState? port, int sign)
        {
            if (port is null) return;
            foreach (var family in _backend.Families)
            {
                if (!NoLocal(port.EndpointsFor(family))) continue;
                if (port.Info.InternalPolicyLocal) _noLocalCounts[(family, false)] = _noLocalCounts.GetValueOrDefault((family, false)) + sign;
                if (port.Info.ExternalPolicyLocal) _noLocalCounts[(family, true)] = _noLocalCounts.GetValueOrDefault((family, true)) + sign;
            }
        }
        if (changed is null || !ReferenceEquals(_noLocalCountedFor, previous))
        {
            _noLocalCounts.Clear();
            foreach (var port in state.ServicePorts.Values) Count(port, +1);
        }
        else
            foreach (var name in changed)
            {
                Count(previous.ServicePorts.GetValueOrDefault(name), -1);
                Count(state.ServicePorts.GetValueOrDefault(name), +1);
            }
        _noLocalCountedFor = state;
        foreach (var family in _backend.Families)
        {
            _metrics.SetNoLocalEndpoints(family, "internal", _noLocalCounts.GetValueOrDefault((family, false)));
            _metrics.SetNoLocalEndpoints(family, "external", _noLocalCounts.GetValueOrDefault((family, true)));
        }
    }
}

/// <summary>What one successful sync did.</summary>
public sealed record SyncReport(bool Full, int ChangedServicePorts, int TotalServicePorts, TimeSpan Duration, SyncTimings Timings, DateTimeOffset CompletedAt)
{
    /// <summary>Why the sync was full (null for a partial sync).</summary>
    public FullSyncReason? FullReason { get; init; }
}
