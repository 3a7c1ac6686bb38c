// Core alone: intake (OnService + OnEndpointSlice), the cold full sync (BuildAll) over a backend that does
// nothing, single-slice partial syncs, and what Core keeps (GC heap after a full collection, minus the objects).
using System.Diagnostics;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Model;

var services = args.Length > 0 ? int.Parse(args[0]) : 10000;
var eps = args.Length > 1 ? int.Parse(args[1]) : 10;
var rounds = args.Length > 2 ? int.Parse(args[2]) : 3;
var (svcs, slices) = Generate(services, eps);
var keep = new List<object>();
for (var r = 0; r < rounds; r++)
{
    keep.Clear();
    var heap0 = GC.GetTotalMemory(true);
    var options = new ProxyOptions
    {
        HostName = "node-a",
        ClusterCidrs = new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.0.0/16")]),
        Sync = new SyncRunnerOptions { MinSyncPeriod = TimeSpan.FromMilliseconds(100), SyncPeriod = TimeSpan.FromHours(1) },
    };
    var controller = new ProxyController(options, new NullBackend(), new NullMetrics(), NullLogger.Instance) { LocalAddresses = () => [] };
    var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc0 = GC.GetTotalAllocatedBytes(true);
    for (var i = 0; i < services; i++)
    {
        controller.OnService(null, svcs[i]);
        controller.OnEndpointSlice(null, slices[i]);
    }
    var cpu1 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc1 = GC.GetTotalAllocatedBytes(true);
    controller.OnInitialStateDelivered();
    await controller.SyncNowAsync(full: true);
    var cpu2 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc2 = GC.GetTotalAllocatedBytes(true);
    var heap1 = GC.GetTotalMemory(true);
    // partial: one slice loses an endpoint and gets it back, 1000 syncs
    var cpu3 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc3 = GC.GetTotalAllocatedBytes(true);
    for (var i = 0; i < 500; i++)
    {
        var slice = slices[i * 37 % services];
        var less = Copy(slice);
        less.Endpoints!.RemoveAt(less.Endpoints.Count - 1);
        controller.OnEndpointSlice(slice, less);
        await controller.SyncNowAsync(full: false);
        controller.OnEndpointSlice(less, slice);
        await controller.SyncNowAsync(full: false);
    }
    var cpu4 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc4 = GC.GetTotalAllocatedBytes(true);
    // the resync: a second full sync over the same state
    await controller.SyncNowAsync(full: true);
    var cpu5 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc5 = GC.GetTotalAllocatedBytes(true);
    keep.Add(controller);
    Console.WriteLine(
        $"round {r}: intake cpu {(cpu1 - cpu0).TotalMilliseconds:0} ms alloc {(alloc1 - alloc0) / 1e6:0.0} MB; " +
        $"cold sync cpu {(cpu2 - cpu1).TotalMilliseconds:0} ms alloc {(alloc2 - alloc1) / 1e6:0.0} MB; " +
        $"retained {(heap1 - heap0) / 1048576.0:0.0} MiB; " +
        $"partial {(cpu4 - cpu3).TotalMilliseconds / 1000:0.000} ms/sync {(alloc4 - alloc3) / 1000 / 1e3:0.0} KB/sync; " +
        $"resync cpu {(cpu5 - cpu4).TotalMilliseconds:0} ms alloc {(alloc5 - alloc4) / 1e6:0.0} MB");
    GC.KeepAlive(controller);
}

static (Service[], EndpointSlice[]) Generate(int services, int eps)
{
    var svcs = new Service[services];
    var slices = new EndpointSlice[services];
    var n = 0;
    for (var i = 0; i < services; i++)
    {
        var name = $"svc-{i:D6}";
        var ip = 0x0A600000 + i + 1;
        svcs[i] = new Service
        {
            ApiVersion = "v1", Kind = "Service",
            Metadata = new ObjectMeta { Name = name, Namespace = "bench" },
            Spec = new ServiceSpec
            {
                ClusterIP = $"{ip >> 24 & 255}.{ip >> 16 & 255}.{ip >> 8 & 255}.{ip & 255}",
                Ports = [new ServicePort { Name = "http", Port = 80, TargetPort = IntOrString.FromName("http") }],
            },
        };
        var endpoints = new List<Endpoint>();
        for (var e = 0; e < eps; e++, n++)
            endpoints.Add(new Endpoint
            {
                Addresses = [$"10.{245 + n / 65536}.{n / 256 % 256}.{n % 256}"],
                Conditions = new EndpointConditions { Ready = true, Serving = true, Terminating = false },
                NodeName = "node-a",
            });
        slices[i] = new EndpointSlice
        {
            ApiVersion = "discovery.k8s.io/v1", Kind = "EndpointSlice",
            Metadata = new ObjectMeta { Name = name + "-1", Namespace = "bench", Labels = new() { ["kubernetes.io/service-name"] = name } },
            AddressType = "IPv4",
            Ports = [new EndpointPort { Name = "http", Protocol = "TCP", Port = 8080 }],
            Endpoints = endpoints,
        };
    }
    return (svcs, slices);
}

static EndpointSlice Copy(EndpointSlice s) => new()
{
    ApiVersion = s.ApiVersion, Kind = s.Kind, Metadata = s.Metadata, AddressType = s.AddressType, Ports = s.Ports,
    Endpoints = [.. s.Endpoints!],
};

sealed class NullBackend : IProxyBackend
{
    public string Mode => "null";
    public IReadOnlyList<IpFamily> Families { get; } = [IpFamily.IPv4];
    public Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken) => Task.FromResult(default(SyncTimings));
    public Task<bool> CanaryIntactAsync(CancellationToken cancellationToken) => Task.FromResult(true);
    public Task CleanupAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}

sealed class NullMetrics : ISyncMetrics
{
    public void AddChanges(int services, int endpoints) { }
    public void SetPendingChanges(int services, int endpoints) { }
    public void SetLastQueuedTimestamp(DateTimeOffset time) { }
    public void SetLastSyncTimestamp(DateTimeOffset time) { }
    public void SetChangesApplied(long changes) { }
    public void FullSyncStarted(string reason) { }
    public void CanaryChecked(string result) { }
    public void SyncFailed(string mode) { }
    public void RecordSync(TimeSpan duration, bool full, string mode) { }
    public void RecordPhase(string phase, string mode, TimeSpan duration) { }
    public void RecordNetworkProgramming(TimeSpan latency) { }
    public void SetNoLocalEndpoints(IpFamily family, string trafficPolicy, int count) { }
    public void UseFamilies(IReadOnlyList<IpFamily> families) { }
}
