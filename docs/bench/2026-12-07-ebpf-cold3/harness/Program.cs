using System.Diagnostics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using ProxyPlanes.Backends.Ebpf;
using ProxyPlanes.Bench;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;

var services = args.Length > 0 ? int.Parse(args[0]) : 10000;
var eps = args.Length > 1 ? int.Parse(args[1]) : 10;
var rounds = args.Length > 2 ? int.Parse(args[2]) : 3;
for (var r = 0; r < rounds; r++)
{
    using var metrics = new ProxyMetrics();
    var maps = new FakeMaps();
    var backend = new EbpfBackend(maps, metrics, NullLogger.Instance);
    var options = new ProxyOptions
    {
        HostName = "node-a",
        ClusterCidrs = new EquatableArray<IpPrefix>([IpPrefix.Parse("10.244.0.0/16")]),
        Sync = new SyncRunnerOptions { MinSyncPeriod = TimeSpan.FromMilliseconds(100), SyncPeriod = TimeSpan.FromHours(1) },
    };
    var controller = new ProxyController(options, backend, metrics, NullLogger.Instance) { LocalAddresses = () => [] };
    SyncReport? report = null;
    controller.Synced += s => report = s;
    var cluster = new SyntheticCluster(services, eps, "node-a", []);
    GC.Collect();
    var cpu0 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc0 = GC.GetTotalAllocatedBytes(true);
    var sw = Stopwatch.StartNew();
    foreach (var name in cluster.Names)
    {
        controller.OnService(null, cluster.Services[name]);
        controller.OnEndpointSlice(null, cluster.Slices[name]);
    }
    var intake = sw.Elapsed;
    var cpuIntake = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc1 = GC.GetTotalAllocatedBytes(true);
    controller.OnInitialStateDelivered();
    await controller.SyncNowAsync(full: true);
    var total = sw.Elapsed;
    var cpu1 = Process.GetCurrentProcess().TotalProcessorTime;
    var alloc2 = GC.GetTotalAllocatedBytes(true);
    Console.WriteLine($"round {r}: total {total.TotalMilliseconds:0} ms cpu {(cpu1 - cpu0).TotalMilliseconds:0} ms (sync {(cpu1 - cpuIntake).TotalMilliseconds:0} ms); intake {intake.TotalMilliseconds:0} ms {(alloc1 - alloc0) / 1e6:0} MB; sync {(total - intake).TotalMilliseconds:0} ms {(alloc2 - alloc1) / 1e6:0} MB; plan {report!.Timings.Plan.TotalMilliseconds:0} render {report.Timings.Render.TotalMilliseconds:0} apply {report.Timings.Apply.TotalMilliseconds:0}; writes {backend.LastPlan!.Writes.Length}");
    // partial changes
    var psw = Stopwatch.StartNew();
    var n = 0;
    for (var i = 0; i < 50; i++)
    {
        var name = cluster.Names[i * 37 % cluster.Names.Count];
        var slice = cluster.Slices[name];
        var less = SyntheticCluster.Copy(slice);
        less.Endpoints!.RemoveAt(less.Endpoints.Count - 1);
        controller.OnEndpointSlice(slice, less);
        await controller.SyncNowAsync(full: false);
        controller.OnEndpointSlice(less, slice);
        await controller.SyncNowAsync(full: false);
        n += 2;
    }
    Console.WriteLine($"  partial: {psw.Elapsed.TotalMilliseconds / n:0.000} ms per sync");
}

sealed class FakeMaps : IEbpfMaps
{
    public EbpfMapContents Read() => EbpfMapContents.Empty;
    public void Write(MapWrite write) { }
    public int Write(ReadOnlySpan<MapWrite> writes, out BpfException? refused) { refused = null; return writes.Length; }
    public bool Intact() => true;
}
