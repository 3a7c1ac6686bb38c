using System.Threading.Channels;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.NodeTools.Conntrack;
using ProxyPlanes.TestKit;
using static ProxyPlanes.Core.Tests.Metrics.MetricsTestHelpers;
using static ProxyPlanes.Core.Tests.Proxy.TestObjects;

namespace ProxyPlanes.Core.Tests.Proxy;

/// <summary>Records every request; fails them while <see cref="Failing"/> is set, or only <see cref="FailingFamily"/>'s part.</summary>
internal sealed class RecordingBackend : IProxyBackend
{
    private readonly Channel<SyncRequest> _requests = Channel.CreateUnbounded<SyncRequest>();
    private int _count;

    public string Mode => "fake";
    public IReadOnlyList<IpFamily> Families { get; init; } = [IpFamily.IPv4];
    public int Count => Volatile.Read(ref _count);

    private bool _failing;

    public bool Failing
    {
        get => Volatile.Read(ref _failing);
        set => Volatile.Write(ref _failing, value);
    }

    /// <summary>A family whose part of every sync fails while the others' are applied (as ip6tables-restore alone refusing).</summary>
    public IpFamily? FailingFamily { get; set; }

    public async Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _count);
        if (request.Full) CanaryGone = false; // a full sync writes the canary again
        var fail = Failing;
        var failingFamily = FailingFamily;
        _requests.Writer.TryWrite(request);
        DuringSync?.Invoke();
        if (fail) throw new BackendSyncException("the kernel refused the rules");
        // The real backends' per-family rule: each family's part on its own.
        await BackendSyncException.ForEachFamilyAsync(Families, family => family, family =>
            family == failingFamily ? Task.FromException(new BackendSyncException($"the kernel refused the {family} rules")) : Task.CompletedTask);
        return new SyncTimings(TimeSpan.Zero, TimeSpan.Zero, TimeSpan.Zero);
    }

    /// <summary>Run inside every sync, on the sync's async flow (what a real backend does there, e.g. defer work).</summary>
    public Action? DuringSync { get; set; }

    private bool _canaryGone;

    /// <summary>Whether the canary check reports a flush (until the next full sync).</summary>
    public bool CanaryGone
    {
        get => Volatile.Read(ref _canaryGone);
        set => Volatile.Write(ref _canaryGone, value);
    }

    /// <summary>How often the controller checked the canary.</summary>
    public int CanaryChecks => Volatile.Read(ref _canaryChecks);

    private int _canaryChecks;

    public Task<bool> CanaryIntactAsync(CancellationToken cancellationToken)
    {
        Interlocked.Increment(ref _canaryChecks);
        return Task.FromResult(!CanaryGone);
    }

    public Task CleanupAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task<SyncRequest> NextAsync(TimeSpan timeout)
    {
        using var cts = new CancellationTokenSource(timeout);
        try
        {
            return await _requests.Reader.ReadAsync(cts.Token);
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"no sync request within {timeout}");
        }
    }
}

public sealed class ProxyControllerTests : IAsyncDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(5);

    private readonly RecordingBackend _backend = new();
    private readonly ProxyMetrics _metrics = new();
    private readonly ProxyController _controller;
    private readonly Channel<SyncReport> _reports = Channel.CreateUnbounded<SyncReport>();
    private readonly CancellationTokenSource _cts = new();
    private Task? _run;

    public ProxyControllerTests()
    {
        var options = new ProxyOptions
        {
            HostName = Host,
            Sync = new SyncRunnerOptions
            {
                MinSyncPeriod = TimeSpan.FromMilliseconds(10),
                SyncPeriod = TimeSpan.FromMinutes(1),
                RetryDelay = TimeSpan.FromMilliseconds(20),
                MaxRetryDelay = TimeSpan.FromMilliseconds(100),
            },
        };
        _controller = new ProxyController(options, _backend, _metrics, NullLogger.Instance);
        _controller.Synced += report => _reports.Writer.TryWrite(report);
    }

    public async ValueTask DisposeAsync()
    {
        await _cts.CancelAsync();
        if (_run is not null) await _run.WaitAsync(Deadline);
        _cts.Dispose();
        _metrics.Dispose();
    }

    private void StartRunner() => _run = Task.Run(() => _controller.Runner.RunAsync(_cts.Token));

    private async Task<SyncReport> NextReportAsync()
    {
        using var cts = new CancellationTokenSource(Deadline);
        return await _reports.Reader.ReadAsync(cts.Token);
    }

    private static Service Web() => Service("web", ports: [Port("http", 80), Port("metrics", 9100)]);
    private static Service Api() => Service("api", clusterIP: "10.96.0.11", ports: [Port("grpc", 9000)]);

    private static EndpointSlice WebSlice(params Endpoint[] endpoints) =>
        Slice("web-1", "web", [SlicePort("http", 8080), SlicePort("metrics", 9100)], endpoints);

    private static EndpointSlice ApiSlice(params Endpoint[] endpoints) =>
        Slice("api-1", "api", [SlicePort("grpc", 9000)], endpoints);

    /// <summary>Delivers web and api with endpoints and waits for the first (full) sync.</summary>
    private async Task<SyncRequest> InitialSyncAsync()
    {
        StartRunner();
        _controller.OnService(null, Web());
        _controller.OnService(null, Api());
        _controller.OnEndpointSlice(null, WebSlice(Ep("10.244.0.1", node: Host), Ep("10.244.1.1", node: "node-b"), Ep("10.244.1.2", ready: false, serving: false)));
        _controller.OnEndpointSlice(null, ApiSlice(Ep("10.244.2.1")));
        _controller.OnInitialStateDelivered();
        var request = await _backend.NextAsync(Deadline);
        await NextReportAsync();
        return request;
    }

    [Fact]
    public async Task SyncNow_PartialWithNothingChanged_DoesNotCallBackend()
    {
        var backend = new RecordingBackend();
        using var metrics = new ProxyMetrics();
        var controller = new ProxyController(new ProxyOptions { HostName = Host }, backend, metrics, NullLogger.Instance);
        controller.OnService(null, Web());
        controller.OnInitialStateDelivered();
        await controller.SyncNowAsync(full: true);

        // A second trigger for changes the first sync already took: nothing to send to the kernel.
        await controller.SyncNowAsync(full: false);

        Assert.Equal(1, backend.Count);
        Assert.True(controller.Health.Status().Healthy);
    }

    private static (ProxyController Controller, RecordingBackend Backend, List<SyncReport> Reports) SyncedController(ProxyMetrics metrics)
    {
        var backend = new RecordingBackend();
        var controller = new ProxyController(new ProxyOptions { HostName = Host }, backend, metrics, NullLogger.Instance);
        var reports = new List<SyncReport>();
        controller.Synced += reports.Add;
        controller.OnService(null, Web());
        controller.OnInitialStateDelivered();
        return (controller, backend, reports);
    }

    [Fact]
    public async Task SyncNow_WorkTheBackendDefers_RunsOnceAfterTheSyncIsReported_EvenWhenTheSyncFails()
    {
        using var metrics = new ProxyMetrics();
        var (controller, backend, _) = SyncedController(metrics);
        var order = new List<string>();
        controller.Synced += _ => order.Add("reported");
        var deferredInside = new List<bool>();
        backend.DuringSync = () =>
        {
            order.Add("synced");
            // Twice under one key (one collection however many syncs of a plan asked for), once under another.
            deferredInside.Add(AfterSyncWork.TryDefer("collect", () => order.Add("first request")));
            deferredInside.Add(AfterSyncWork.TryDefer("collect", () => order.Add("collect")));
            deferredInside.Add(AfterSyncWork.TryDefer("other", () => order.Add("other")));
        };

        await controller.SyncNowAsync(full: true);

        Assert.Equal([true, true, true], deferredInside);
        Assert.Equal(["synced", "reported", "collect", "other"], order);

        // A sync the kernel refuses: the work still runs, after the failure.
        order.Clear();
        backend.Failing = true;
        await Assert.ThrowsAsync<BackendSyncException>(() => controller.SyncNowAsync(full: true));
        Assert.Equal(["synced", "collect", "other"], order);

        // Positive control: outside a controller's sync nothing is deferred, so the caller runs its work at once.
        Assert.False(AfterSyncWork.TryDefer("collect", () => order.Add("never")));
        Assert.DoesNotContain("never", order);
    }

    [Fact]
    public async Task SyncNow_FullSyncCollection_LogsAfterTheSyncedLine_AndAtOnceOutsideAController()
    {
        using var metrics = new ProxyMetrics();
        var logger = new ListLogger();
        var backend = new RecordingBackend { DuringSync = () => FullSyncCollection.AfterSync(logger, "After the fake sync") };
        var controller = new ProxyController(new ProxyOptions { HostName = Host }, backend, metrics, logger);
        controller.OnService(null, Web());
        controller.OnInitialStateDelivered();

        await controller.SyncNowAsync(full: true);

        var messages = logger.Entries.Select(e => e.Message).ToList();
        var synced = messages.FindIndex(m => m.StartsWith("Synced full", StringComparison.Ordinal));
        var collected = messages.FindIndex(m => m.StartsWith("After the fake sync: heap ", StringComparison.Ordinal));
        Assert.True(synced >= 0 && collected > synced, string.Join('\n', messages));
        Assert.Single(messages, m => m.StartsWith("After the fake sync", StringComparison.Ordinal));

        // Called directly (a backend's own tests, the cleanup): the collection runs inside the call.
        FullSyncCollection.AfterSync(logger, "After a direct call");
        Assert.Contains(logger.Entries, e => e.Message.StartsWith("After a direct call: heap ", StringComparison.Ordinal));
    }

    [Fact]
    public async Task SyncNow_PeriodicWithCanaryIntact_NothingChanged_NoBackendSync_TimestampAdvances()
    {
        using var metrics = new ProxyMetrics();
        var time = new ManualTimeProvider(DateTimeOffset.FromUnixTimeSeconds(1_000_000));
        var backend = new RecordingBackend();
        var controller = new ProxyController(new ProxyOptions { HostName = Host }, backend, metrics, NullLogger.Instance, time);
        controller.OnService(null, Web());
        controller.OnInitialStateDelivered();
        Assert.True(await controller.SyncNowAsync(new SyncDecision(FullSyncReason.Start, false)));
        Assert.Equal(1_000_000, Sample(await metrics.ExportTextAsync(), "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"));
        time.Advance(TimeSpan.FromSeconds(30));

        var full = await controller.SyncNowAsync(new SyncDecision(null, CheckCanary: true));

        Assert.False(full);
        Assert.Equal(1, backend.CanaryChecks);
        Assert.Equal(1, backend.Count);
        // A quiet cluster is not a stuck proxy: the periodic no-op sync moves the timestamp.
        Assert.Equal(1_000_030, Sample(await metrics.ExportTextAsync(), "kubeproxy_sync_proxy_rules_last_timestamp_seconds{ip_family=\"IPv4\"}"));
    }

    [Fact]
    public async Task SyncNow_PeriodicWithCanaryGone_FullSyncForFlush()
    {
        using var metrics = new ProxyMetrics();
        var (controller, backend, reports) = SyncedController(metrics);
        await controller.SyncNowAsync(new SyncDecision(FullSyncReason.Start, false));
        backend.CanaryGone = true;

        var full = await controller.SyncNowAsync(new SyncDecision(null, CheckCanary: true));

        Assert.True(full);
        Assert.Equal(2, backend.Count);
        Assert.Equal(FullSyncReason.Flush, reports[^1].FullReason);
        // The full sync wrote the canary again: the next check finds it and nothing is sent.
        Assert.False(await controller.SyncNowAsync(new SyncDecision(null, CheckCanary: true)));
        Assert.Equal(2, backend.Count);
    }

    [Fact]
    public async Task SyncNow_ChangeWithoutCanaryCheck_PartialEvenIfCanaryGone()
    {
        using var metrics = new ProxyMetrics();
        var (controller, backend, reports) = SyncedController(metrics);
        await controller.SyncNowAsync(new SyncDecision(FullSyncReason.Start, false));
        backend.CanaryGone = true;
        controller.OnService(null, Api());

        Assert.False(await controller.SyncNowAsync(SyncDecision.Partial));

        Assert.Equal(0, backend.CanaryChecks);
        Assert.Null(reports[^1].FullReason);
    }

    [Fact]
    public async Task SyncNow_NodeZoneChanged_FullSyncForNodeChange()
    {
        using var metrics = new ProxyMetrics();
        var (controller, backend, reports) = SyncedController(metrics);
        await controller.SyncNowAsync(new SyncDecision(FullSyncReason.Start, false));
        Assert.Equal(FullSyncReason.Start, reports[^1].FullReason);

        controller.OnNode(null, new Node { Metadata = new ObjectMeta { Name = Host, Labels = new() { [WellKnownLabels.TopologyZone] = "zone-b" } } });

        Assert.True(await controller.SyncNowAsync(SyncDecision.Partial));
        Assert.Equal(2, backend.Count);
        Assert.Equal(FullSyncReason.NodeChanged, reports[^1].FullReason);
    }

    [Fact]
    public async Task OnService_BeforeInitialStateDelivered_NoSync()
    {
        StartRunner();

        _controller.OnService(null, Web());
        _controller.OnEndpointSlice(null, WebSlice(Ep("10.244.0.1")));
        await Task.Delay(150);

        Assert.Equal(0, _backend.Count);
        Assert.Same(DesiredState.Empty, _controller.Applied);
    }

    [Fact]
    public async Task OnInitialStateDelivered_FirstSync_FullWithServicePortsAndCategorizedEndpoints()
    {
        var request = await InitialSyncAsync();

        Assert.True(request.Full);
        Assert.Equal(
            [PortName("api", "grpc"), PortName("web", "http"), PortName("web", "metrics")],
            request.State.ServicePorts.Keys);
        var http = request.State.ServicePorts[PortName("web", "http")];
        Assert.Equal(80, http.Info.Port);
        Assert.Equal(["10.244.0.1:8080", "10.244.1.1:8080"], http.Endpoints.Cluster.Select(e => e.Endpoint));
        Assert.Equal(["10.244.0.1:8080", "10.244.1.1:8080"], http.Endpoints.AllReachable.Select(e => e.Endpoint));
        Assert.True(http.Endpoints.HasAnyEndpoints);
        Assert.Equal(["10.244.0.1:9100", "10.244.1.1:9100"], request.State.ServicePorts[PortName("web", "metrics")].Endpoints.Cluster.Select(e => e.Endpoint));
        Assert.Equal(Host, request.State.Network.NodeName);
        Assert.Same(request.State, _controller.Applied);
    }

    [Fact]
    public async Task OnEndpointSlice_AfterFirstSync_PartialSyncWithExactlyTheChangedPort()
    {
        var first = await InitialSyncAsync();

        _controller.OnEndpointSlice(ApiSlice(Ep("10.244.2.1")), ApiSlice(Ep("10.244.2.1"), Ep("10.244.2.2")));
        var request = await _backend.NextAsync(Deadline);

        Assert.False(request.Full);
        Assert.Equal([PortName("api", "grpc")], request.ChangedPorts);
        Assert.Equal(["10.244.2.1:9000", "10.244.2.2:9000"], request.State.ServicePorts[PortName("api", "grpc")].Endpoints.Cluster.Select(e => e.Endpoint));
        // Unchanged ports are carried over as they were.
        Assert.Same(first.State.ServicePorts[PortName("web", "http")], request.State.ServicePorts[PortName("web", "http")]);
        var report = await NextReportAsync();
        Assert.False(report.Full);
        Assert.Equal(1, report.ChangedServicePorts);
        Assert.Equal(3, report.TotalServicePorts);
    }

    [Fact]
    public async Task OnService_PortRemoved_PartialSyncDropsIt()
    {
        await InitialSyncAsync();

        _controller.OnService(Web(), Service("web", ports: [Port("http", 80)]));
        var request = await _backend.NextAsync(Deadline);

        Assert.False(request.Full);
        Assert.Equal([PortName("web", "metrics")], request.ChangedPorts);
        Assert.False(request.State.ServicePorts.ContainsKey(PortName("web", "metrics")));
        Assert.True(request.State.ServicePorts.ContainsKey(PortName("web", "http")));
    }

    [Fact]
    public async Task OnService_UpdateThatChangesNothing_NoSync()
    {
        await InitialSyncAsync();

        _controller.OnService(Web(), Web());
        await Task.Delay(100);

        Assert.Equal(1, _backend.Count);
    }

    [Fact]
    public async Task SyncAsync_BackendThrows_AppliedUnchangedAndNextSyncFull()
    {
        var first = await InitialSyncAsync();
        _backend.Failing = true;

        _controller.OnEndpointSlice(ApiSlice(Ep("10.244.2.1")), ApiSlice(Ep("10.244.2.9")));
        var failed = await _backend.NextAsync(Deadline);
        var failedRetry = await _backend.NextAsync(Deadline);

        Assert.False(failed.Full);
        Assert.True(failedRetry.Full); // retries are full syncs
        Assert.Same(first.State, _controller.Applied);

        _backend.Failing = false;
        var report = await NextReportAsync();

        Assert.True(report.Full);
        Assert.Equal(["10.244.2.9:9000"], _controller.Applied.ServicePorts[PortName("api", "grpc")].Endpoints.Cluster.Select(e => e.Endpoint));
    }

    [Fact]
    public async Task Health_BeforeAndAfterFirstSync_UnhealthyThenHealthy()
    {
        Assert.False(_controller.Health.Status().Healthy);
        Assert.Null(_controller.Health.Status().LastUpdated);

        await InitialSyncAsync();

        var status = _controller.Health.Status();
        Assert.True(status.Healthy);
        Assert.NotNull(status.LastUpdated);
        Assert.Equal(TimeSpan.FromMinutes(2), _controller.Health.HealthTimeout);
    }

    [Fact]
    public async Task Health_FirstSyncFails_StaysUnhealthy()
    {
        StartRunner();
        _backend.Failing = true;
        _controller.OnService(null, Web());
        _controller.OnInitialStateDelivered();

        var failed = await _backend.NextAsync(Deadline);
        Assert.True(failed.Full);
        Assert.False(_controller.Health.Status().Healthy);

        _backend.Failing = false;
        await NextReportAsync(); // a retry succeeds
        Assert.True(_controller.Health.Status().Healthy);
    }

    // Without the runner: SyncNowAsync drives the controller step by step.

    [Fact]
    public async Task SyncNowAsync_NodeZoneChanges_FullSyncUsesTopologyHints()
    {
        _controller.OnService(null, Web());
        _controller.OnEndpointSlice(null, WebSlice(Ep("10.244.0.1", hints: ["zone-a"]), Ep("10.244.1.1", hints: ["zone-b"])));
        await _controller.SyncNowAsync(full: true);
        Assert.Equal(2, _controller.Applied.ServicePorts[PortName("web", "http")].Endpoints.Cluster.Count);

        _controller.OnNode(null, new Node { Metadata = new ObjectMeta { Name = Host, Labels = new() { [WellKnownLabels.TopologyZone] = "zone-a" } } });
        await _controller.SyncNowAsync(full: false);
        var request = await LastRequestAsync();

        Assert.True(request.Full); // the node network changed, so everything is rebuilt
        Assert.Equal("zone-a", request.State.Network.Zone);
        Assert.Equal(["10.244.0.1:8080"], request.State.ServicePorts[PortName("web", "http")].Endpoints.Cluster.Select(e => e.Endpoint));
    }

    [Fact]
    public async Task SyncNowAsync_EndpointsHintedForNodes_OnlyThoseHintedForTheHostName()
    {
        // The node hints name nodes as the proxy's --hostname-override does; no Node object (and so no zone) is needed.
        _controller.OnService(null, Web());
        _controller.OnEndpointSlice(null, WebSlice(
            Ep("10.244.0.1", node: Host, nodeHints: [Host]),
            Ep("10.244.1.1", node: "node-b", nodeHints: ["node-b"])));
        await _controller.SyncNowAsync(full: true);

        Assert.Equal(["10.244.0.1:8080"], _controller.Applied.ServicePorts[PortName("web", "http")].Endpoints.Cluster.Select(e => e.Endpoint));
    }

    [Fact]
    public void OnNode_BeingDeletedOrTaintedForDeletion_NotEligible_LivenessUnchanged()
    {
        Node Self(string? deletion = null, params string[] taints) => new()
        {
            Metadata = new ObjectMeta { Name = Host, DeletionTimestamp = deletion },
            Spec = new NodeSpec { Taints = [.. taints.Select(t => new Taint { Key = t, Effect = "NoSchedule" })] },
        };
        Assert.True(_controller.Health.Status().NodeEligible); // no Node seen: eligible, as kube-proxy starts

        _controller.OnNode(null, Self(taints: ["node.kubernetes.io/unschedulable"]));
        Assert.True(_controller.Health.Status().NodeEligible); // another taint does not drain
        _controller.OnNode(null, Self(taints: [WellKnownLabels.ToBeDeletedByClusterAutoscaler]));
        Assert.False(_controller.Health.Status().NodeEligible);
        _controller.OnNode(null, Self());
        Assert.True(_controller.Health.Status().NodeEligible);
        _controller.OnNode(null, Self(deletion: "2026-12-05T12:00:00Z"));
        Assert.False(_controller.Health.Status().NodeEligible);
        _controller.OnNode(Self(), null); // deleted
        Assert.False(_controller.Health.Status().NodeEligible);
        // Another node's object says nothing about this one.
        _controller.OnNode(null, new Node { Metadata = new ObjectMeta { Name = "node-b" } });
        Assert.False(_controller.Health.Status().NodeEligible);
        _controller.OnNode(null, Self());
        Assert.True(_controller.Health.Status().NodeEligible);
    }

    [Fact]
    public async Task OnNode_OtherNode_Ignored()
    {
        _controller.OnNode(null, new Node { Metadata = new ObjectMeta { Name = "node-b", Labels = new() { [WellKnownLabels.TopologyZone] = "zone-b" } } });
        await _controller.SyncNowAsync(full: true);

        Assert.Null(_controller.Applied.Network.Zone);
    }

    [Fact]
    public async Task SyncNowAsync_ExternalPolicyLocal_LocalEndpointsOnly()
    {
        var service = Service("web", type: "NodePort", ports: [Port("http", 80, nodePort: 30080)]);
        service.Spec!.ExternalTrafficPolicy = "Local";
        _controller.OnService(null, service);
        _controller.OnEndpointSlice(null, Slice("web-1", "web", [SlicePort("http", 8080)], [Ep("10.244.0.1", node: Host), Ep("10.244.1.1", node: "node-b")]));

        await _controller.SyncNowAsync(full: true);

        var endpoints = _controller.Applied.ServicePorts[PortName("web", "http")].Endpoints;
        Assert.Equal(["10.244.0.1:8080", "10.244.1.1:8080"], endpoints.Cluster.Select(e => e.Endpoint));
        Assert.Equal(["10.244.0.1:8080"], endpoints.Local.Select(e => e.Endpoint));
    }

    [Fact]
    public async Task SyncNowAsync_ServiceDeleted_PortsRemovedFromState()
    {
        _controller.OnService(null, Web());
        await _controller.SyncNowAsync(full: true);

        _controller.OnService(Web(), null);
        await _controller.SyncNowAsync(full: false);
        var request = await LastRequestAsync();

        Assert.False(request.Full);
        Assert.Equal([PortName("web", "http"), PortName("web", "metrics")], request.ChangedPorts);
        Assert.Empty(request.State.ServicePorts);
        Assert.Empty(_controller.Applied.ServicePorts);
    }

    [Fact]
    public async Task SyncNowAsync_EndpointsArriveBeforeService_ServiceGetsThem()
    {
        _controller.OnEndpointSlice(null, WebSlice(Ep("10.244.0.1")));
        await _controller.SyncNowAsync(full: true);
        Assert.Empty(_controller.Applied.ServicePorts);

        _controller.OnService(null, Web());
        await _controller.SyncNowAsync(full: false);

        Assert.Equal(["10.244.0.1:8080"], _controller.Applied.ServicePorts[PortName("web", "http")].Endpoints.Cluster.Select(e => e.Endpoint));
    }

    private static readonly System.Net.IPAddress[] NodeLocalAddresses =
        [.. new[] { "127.0.0.1", "10.0.0.5", "192.168.1.10", "::1", "fd00::5", "fe80::1" }.Select(System.Net.IPAddress.Parse)];

    private static Node NodeWith(params (string Type, string Address)[] addresses) => new()
    {
        Metadata = new ObjectMeta { Name = Host },
        Status = new NodeStatus { Addresses = [.. addresses.Select(a => new NodeAddress { Type = a.Type, Address = a.Address })] },
    };

    private static ProxyController PrimaryController(RecordingBackend backend, ProxyMetrics metrics, List<SyncReport> reports)
    {
        var controller = new ProxyController(new ProxyOptions { HostName = Host, NodePortAddresses = NodePortAddressSetting.PrimaryIPs }, backend, metrics, NullLogger.Instance)
        {
            LocalAddresses = () => NodeLocalAddresses,
        };
        controller.Synced += reports.Add;
        controller.OnService(null, Web());
        controller.OnInitialStateDelivered();
        return controller;
    }

    [Fact]
    public async Task SyncNow_NodePortAddressesPrimary_ResolvedFromTheNodeObject_FullSyncWhenThePrimaryIPChanges()
    {
        using var metrics = new ProxyMetrics();
        var backend = new RecordingBackend();
        var reports = new List<SyncReport>();
        var controller = PrimaryController(backend, metrics, reports);
        controller.OnNode(null, NodeWith(("InternalIP", "10.0.0.5"), ("InternalIP", "192.168.1.10")));

        await controller.SyncNowAsync(new SyncDecision(FullSyncReason.Start, false));
        // Only the first InternalIP: the other local address does not accept node ports. IPv6 has no
        // primary IP on this Node, so that family keeps every address but loopback and link-local.
        Assert.Equal([System.Net.IPAddress.Parse("10.0.0.5"), System.Net.IPAddress.Parse("fd00::5")], controller.Applied.Network.NodePortAddresses!.Value);

        // Another InternalIP first: a node-level change, so everything is rendered again.
        controller.OnNode(null, NodeWith(("InternalIP", "192.168.1.10"), ("InternalIP", "fd00::5")));
        Assert.True(await controller.SyncNowAsync(SyncDecision.Partial));
        Assert.Equal(FullSyncReason.NodeChanged, reports[^1].FullReason);
        Assert.Equal([System.Net.IPAddress.Parse("192.168.1.10"), System.Net.IPAddress.Parse("fd00::5")], controller.Applied.Network.NodePortAddresses!.Value);

        // A change of the Node that keeps its primary IPs changes nothing.
        controller.OnNode(null, NodeWith(("InternalIP", "192.168.1.10"), ("InternalIP", "fd00::5"), ("ExternalIP", "10.0.0.5")));
        Assert.False(await controller.SyncNowAsync(SyncDecision.Partial));
        Assert.Equal(2, backend.Count);
    }

    [Fact]
    public async Task SyncNow_NodePortAddressesPrimary_NoNodeYet_EveryAddressAsKubeProxy()
    {
        using var metrics = new ProxyMetrics();
        var reports = new List<SyncReport>();
        var controller = PrimaryController(new RecordingBackend(), metrics, reports);

        await controller.SyncNowAsync(new SyncDecision(FullSyncReason.Start, false));
        Assert.Null(controller.Applied.Network.NodePortAddresses);

        controller.OnNode(null, NodeWith(("InternalIP", "10.0.0.5")));
        Assert.True(await controller.SyncNowAsync(SyncDecision.Partial));
        Assert.Equal(FullSyncReason.NodeChanged, reports[^1].FullReason);
        Assert.Equal([System.Net.IPAddress.Parse("10.0.0.5"), System.Net.IPAddress.Parse("fd00::5")], controller.Applied.Network.NodePortAddresses!.Value);
    }

    [Fact]
    public async Task SyncNow_NodePortAddressesCidrs_IgnoreTheNodesPrimaryIP()
    {
        using var metrics = new ProxyMetrics();
        var controller = new ProxyController(
            new ProxyOptions { HostName = Host, NodePortAddresses = NodePortAddressSetting.InCidrs(new EquatableArray<IpPrefix>(new[] { IpPrefix.Parse("192.168.0.0/16") })) },
            new RecordingBackend(), metrics, NullLogger.Instance) { LocalAddresses = () => NodeLocalAddresses };
        controller.OnNode(null, NodeWith(("InternalIP", "10.0.0.5")));
        controller.OnInitialStateDelivered();

        await controller.SyncNowAsync(full: true);

        Assert.Equal([System.Net.IPAddress.Parse("192.168.1.10")], controller.Applied.Network.NodePortAddresses!.Value);
    }

    private async Task<SyncRequest> LastRequestAsync()
    {
        SyncRequest? last = null;
        while (_backend.Count > 0 && await TryReadAsync() is { } request) last = request;
        return last ?? throw new InvalidOperationException("no request");

        async Task<SyncRequest?> TryReadAsync()
        {
            try
            {
                return await _backend.NextAsync(TimeSpan.FromMilliseconds(20));
            }
            catch (TimeoutException)
            {
                return null;
            }
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task SyncNow_RandomPartialSyncs_NoLocalEndpointsGaugesEqualACountOfEveryPort(int seed)
    {
        // The gauges are changed by each partial sync's ports only: they must stay what counting every port gives.
        using var metrics = new ProxyMetrics();
        var backend = new RecordingBackend();
        var controller = new ProxyController(new ProxyOptions { HostName = Host }, backend, metrics, NullLogger.Instance);
        var random = new Random(seed);
        var services = new Dictionary<string, Service>();
        var slices = new Dictionary<string, EndpointSlice>();
        Service NewService(string name, int index)
        {
            var service = Service(name, clusterIP: $"10.96.1.{index}", type: "NodePort", ports: [Port("http", 80)]);
            service.Spec!.ExternalTrafficPolicy = random.Next(2) == 0 ? "Local" : "Cluster";
            service.Spec.InternalTrafficPolicy = random.Next(2) == 0 ? "Local" : "Cluster";
            return service;
        }
        EndpointSlice NewSlice(string name, int index) => Slice($"{name}-1", name, [SlicePort("http", 8080)],
            [.. Enumerable.Range(0, random.Next(3)).Select(e => Ep($"10.244.{index}.{e + 1}", node: random.Next(2) == 0 ? Host : "node-b"))]);
        for (var i = 0; i < 12; i++)
        {
            var name = $"svc{i}";
            controller.OnService(null, services[name] = NewService(name, i));
            controller.OnEndpointSlice(null, slices[name] = NewSlice(name, i));
        }
        controller.OnInitialStateDelivered();
        await controller.SyncNowAsync(full: true);
        var positives = 0;
        for (var step = 0; step < 40; step++)
        {
            for (var change = 0; change < 1 + random.Next(3); change++)
            {
                var index = random.Next(12);
                var name = $"svc{index}";
                if (random.Next(2) == 0) controller.OnService(services[name], services[name] = NewService(name, index));
                else controller.OnEndpointSlice(slices[name], slices[name] = NewSlice(name, index));
            }
            await controller.SyncNowAsync(full: step % 13 == 12);

            var text = await metrics.ExportTextAsync();
            var ports = controller.Applied.ServicePorts.Values;
            var expectedInternal = ports.Count(p => p.Info.InternalPolicyLocal && p.Endpoints.HasAnyEndpoints && p.Endpoints.Local.IsEmpty);
            var expectedExternal = ports.Count(p => p.Info.ExternalPolicyLocal && p.Endpoints.HasAnyEndpoints && p.Endpoints.Local.IsEmpty);
            Assert.Equal(expectedInternal, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"internal\"}"));
            Assert.Equal(expectedExternal, Sample(text, "kubeproxy_sync_proxy_rules_no_local_endpoints_total{ip_family=\"IPv4\",traffic_policy=\"external\"}"));
            positives += expectedInternal + expectedExternal;
        }
        Assert.True(positives > 0, "the random cluster never had a Local port without local endpoints");
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task SyncNow_RandomSyncsAndFailures_AfterSyncGetsChangedPortsOnlyWhenTheyAreTheWholeDifference(int seed)
    {
        // After-sync work (the conntrack cleanup) plans only the changed ports when it is given them: every other port must
        // be the same in both states. After a failed sync the next partial one is built on the failed state, not on the
        // applied one, so its changed ports are not the whole difference: it must get null.
        using var metrics = new ProxyMetrics();
        var backend = new RecordingBackend();
        var controller = new ProxyController(new ProxyOptions { HostName = Host }, backend, metrics, NullLogger.Instance);
        var calls = new List<(DesiredState Previous, DesiredState State, IReadOnlySet<ServicePortName>? Changed)>();
        controller.AfterSync("record", (previous, state, changed, _) =>
        {
            calls.Add((previous, state, changed?.ToHashSet()));
            return Task.CompletedTask;
        });
        var random = new Random(seed);
        var slices = new Dictionary<string, EndpointSlice>();
        EndpointSlice NewSlice(string name, int index) => Slice($"{name}-1", name, [SlicePort("dns", 8053, "UDP")],
            [.. Enumerable.Range(0, random.Next(3)).Select(e => Ep($"10.244.{index}.{random.Next(4) + 1}"))]);
        for (var i = 0; i < 10; i++)
        {
            var name = $"dns{i}";
            controller.OnService(null, Service(name, clusterIP: $"10.96.2.{i}", ports: [Port("dns", 53, "UDP")]));
            controller.OnEndpointSlice(null, slices[name] = NewSlice(name, i));
        }
        controller.OnInitialStateDelivered();
        await controller.SyncNowAsync(full: true);
        Assert.Null(Assert.Single(calls).Changed);

        var (withChanged, nullAfterFailure, deletions, failedBefore) = (0, 0, 0, false);
        for (var step = 0; step < 60; step++)
        {
            for (var change = 0; change < 1 + random.Next(3); change++)
            {
                var index = random.Next(10);
                var name = $"dns{index}";
                controller.OnEndpointSlice(slices[name], slices[name] = NewSlice(name, index));
            }
            var fail = random.Next(5) == 0;
            backend.Failing = fail;
            var before = calls.Count;
            if (fail)
            {
                var requests = backend.Count;
                try
                {
                    await controller.SyncNowAsync(full: false);
                    Assert.Equal(requests, backend.Count); // only when the changes cancelled out: nothing to sync
                }
                catch (BackendSyncException)
                {
                    failedBefore = true;
                }
                continue;
            }
            await controller.SyncNowAsync(full: false);
            if (calls.Count == before) continue; // the changes cancelled out: no sync
            var (previous, state, changed) = calls[^1];
            if (changed is null)
            {
                Assert.True(failedBefore, $"step {step}: a partial sync right after a successful one got no changed ports");
                nullAfterFailure++;
            }
            else
            {
                Assert.False(failedBefore, $"step {step}: a partial sync after a failed one got changed ports relative to the failed state");
                foreach (var name in previous.ServicePorts.Keys.Union(state.ServicePorts.Keys).Where(n => !changed.Contains(n)))
                    Assert.Same(previous.ServicePorts.GetValueOrDefault(name), state.ServicePorts.GetValueOrDefault(name));
                var plan = StaleConntrackPlanner.Plan(previous, state, changed);
                Assert.Equal(StaleConntrackPlanner.Plan(previous, state), plan);
                deletions += plan.Count;
                withChanged++;
            }
            failedBefore = false;
        }
        Assert.True(withChanged > 10 && nullAfterFailure > 0 && deletions > 0, $"{withChanged} partial syncs with changed ports, {nullAfterFailure} after a failure, {deletions} deletions");
    }
}
