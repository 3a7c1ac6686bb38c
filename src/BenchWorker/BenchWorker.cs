using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text.Json;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Console;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;
using ProxyPlanes.Metrics;
using ProxyPlanes.Model;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Bench;

/// <summary>What one worker measures: one mode at one cluster size.</summary>
public sealed record WorkerSettings(
    string Mode, int Services, int Endpoints, int Changes, TimeSpan ChurnDuration, double ChurnRate,
    string NodeName, string ClusterCidr, string ClientNamespace, string[] RealPods, SoakSettings? Soak = null,
    string? BpfFs = null, string? BpfCgroup = null);

/// <summary>
/// The worker (`proxyplanes-bench-worker`, started by `proxyplanes-lab bench` and `soak`): runs inside the sandbox's node namespace with the real controller
/// and backend in-process, so every change is timed exactly from the source event (the sink call)
/// to "the kernel has it" (the backend's sync returned). Prints one JSON result.
/// </summary>
public static class BenchWorker
{
    /// <summary>The worker's executable: its apphost and <c>proxyplanes-bench-worker.dll</c> (JIT), or one native binary (published).</summary>
    public const string Name = "proxyplanes-bench-worker";

    /// <summary>
    /// What this process runs on, as the reports name it: "native AOT" (published) or "JIT" (a build). Asked of the JIT
    /// itself: it has compiled methods by now in a JIT process and none exist in a native one. (Not
    /// <c>RuntimeFeature.IsDynamicCodeSupported</c>: <c>PublishAot</c> turns that off in the JIT build's runtimeconfig too.)
    /// </summary>
    public static string Runtime => System.Runtime.JitInfo.GetCompiledMethodCount() > 0 ? "JIT" : "native AOT";

    private const int PeriodicSyncs = 20;
    private const int ChangeFloorRounds = 10;
    public const string SyncLogVariable = "PROXYPLANES_BENCH_SYNC_LOG";
    private static readonly string[] ChangeKinds = ["endpoint added", "endpoint removed", "endpoint not ready", "service added", "service removed"];

    public static async Task<int> RunAsync(WorkerSettings settings, CancellationToken cancellationToken)
    {
        // Stdout carries the one JSON result; every log line (the eBPF mode warns at start) goes to stderr.
        using var loggers = LoggerFactory.Create(b =>
        {
            // PROXYPLANES_BENCH_SYNC_LOG=1: the controller's "Synced …" lines (plan, render, apply per sync) on stderr too.
            Logging.Configure(b, Environment.GetEnvironmentVariable(SyncLogVariable) == "1" ? 1 : 0);
            b.Services.Configure<ConsoleLoggerOptions>(o => o.LogToStandardErrorThreshold = LogLevel.Trace);
        });
        var logger = loggers.CreateLogger("bench");
        using var metrics = new ProxyMetrics();
        // --mode=ebpf: the sandbox's own bpffs and cgroup (BenchSandbox), never the node defaults.
        var modeOptions = new ProxyModeOptions { BpfFs = settings.BpfFs, BpfCgroup = settings.BpfCgroup };
        var (backend, probe) = await Modes.CreateAsync(settings.Mode, modeOptions, metrics, logger, cancellationToken);
        var options = new ProxyOptions
        {
            HostName = settings.NodeName,
            ClusterCidrs = new EquatableArray<IpPrefix>([IpPrefix.Parse(settings.ClusterCidr)]),
            Sync = new SyncRunnerOptions { MinSyncPeriod = TimeSpan.FromMilliseconds(100), SyncPeriod = TimeSpan.FromHours(1) },
        };
        var controller = new ProxyController(options, backend, metrics, logger);

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: generating the cluster");
        var cluster = new SyntheticCluster(settings.Services, settings.Endpoints, settings.NodeName, settings.RealPods);
        var first = cluster.Names[0];
        var last = cluster.Names[^1];
        cluster.UseRealPods(first);
        cluster.UseRealPods(last);

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: cold sync");
        var stopwatch = Stopwatch.StartNew();
        foreach (var name in cluster.Names)
        {
            controller.OnService(null, cluster.Services[name]);
            controller.OnEndpointSlice(null, cluster.Slices[name]);
        }
        controller.OnInitialStateDelivered();
        await controller.SyncNowAsync(full: true, cancellationToken);
        var cold = stopwatch.Elapsed;
        var changes = new Changes(cluster, controller, first, last);
        if (settings.Soak is { } soak)
        {
            var soakResult = await SoakWorker.RunAsync(settings, soak, controller, probe, cluster, changes, cold, cancellationToken);
            await backend.CleanupAsync(cancellationToken);
            Console.WriteLine(JsonSerializer.Serialize(soakResult, BenchJsonContext.Default.SoakResult));
            return 0;
        }
        var floor = await probe.FloorAsync(cancellationToken);

        stopwatch.Restart();
        await controller.SyncNowAsync(full: true, cancellationToken);
        var fullResync = stopwatch.Elapsed;
        var kernelObjects = await probe.CountKernelObjectsAsync(cancellationToken);

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: {PeriodicSyncs} periodic syncs with nothing changed");
        var periodic = new List<double>();
        for (var i = 0; i < PeriodicSyncs; i++)
        {
            stopwatch.Restart();
            // What --sync-period costs on a quiet cluster: the canary check, then nothing to do.
            if (await controller.SyncNowAsync(new SyncDecision(null, CheckCanary: true), cancellationToken))
                throw new InvalidOperationException($"{settings.Mode}: a periodic sync with nothing changed ran full (the canary check failed)");
            periodic.Add(stopwatch.Elapsed.TotalMilliseconds);
        }

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: data-plane cost (first vs last service)");
        using var client = NetworkNamespace.Attach(settings.ClientNamespace);
        var firstConnect = await MedianConnectAsync(client, SyntheticCluster.ClusterIP(0), cancellationToken);
        var lastConnect = await MedianConnectAsync(client, SyntheticCluster.ClusterIP(cluster.Names.Count - 1), cancellationToken);

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: {settings.Changes} single changes");
        var byKind = ChangeKinds.ToDictionary(k => k, _ => new List<double>());
        for (var i = 0; i < settings.Changes; i++)
        {
            var kind = ChangeKinds[i % ChangeKinds.Length];
            stopwatch.Restart();
            changes.Apply(kind);
            await controller.SyncNowAsync(full: false, cancellationToken);
            byKind[kind].Add(stopwatch.Elapsed.TotalMilliseconds);
        }

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: the kernel tool alone making one change (the per-change floor)");
        var changeFloor = new List<double>();
        for (var i = 0; i < ChangeFloorRounds; i++)
        {
            if (await probe.ChangeFloorAsync(cancellationToken) is not { } samples) break;
            changeFloor.AddRange(samples.Select(s => s.TotalMilliseconds));
        }

        Progress($"{settings.Mode} {settings.Services}×{settings.Endpoints}: churn at {settings.ChurnRate}/s for {settings.ChurnDuration.TotalSeconds}s");
        var churn = await ChurnAsync(controller, changes, settings, cancellationToken);

        using var self = Process.GetCurrentProcess();
        var result = new BenchResult
        {
            Mode = settings.Mode,
            Runtime = Runtime,
            Services = settings.Services,
            EndpointsPerService = settings.Endpoints,
            ColdSyncMs = cold.TotalMilliseconds,
            FullResyncMs = fullResync.TotalMilliseconds,
            FloorMs = floor?.TotalMilliseconds ?? 0,
            PeriodicNoOp = LatencyStats.Of(periodic),
            Incremental = LatencyStats.Of(byKind.Values.SelectMany(v => v).ToList()),
            IncrementalByKind = byKind.ToDictionary(kv => kv.Key, kv => LatencyStats.Of(kv.Value)),
            ChangeFloor = LatencyStats.Of(changeFloor),
            Churn = churn,
            PeakRssMb = ProcessMemory.Read().PeakMib,
            CpuSeconds = self.TotalProcessorTime.TotalSeconds,
            KernelObjects = kernelObjects.ToDictionary(),
            FirstServiceConnectMs = firstConnect,
            LastServiceConnectMs = lastConnect,
        };
        await backend.CleanupAsync(cancellationToken);
        Console.WriteLine(JsonSerializer.Serialize(result, BenchJsonContext.Default.BenchResult));
        return 0;
    }

    /// <summary>Churn: changes at a steady rate through the real SyncRunner, which coalesces them.</summary>
    private static async Task<ChurnResult> ChurnAsync(ProxyController controller, Changes changes, WorkerSettings settings, CancellationToken cancellationToken)
    {
        // Endpoint changes: the common case under churn.
        var run = await PacedChanges.RunAsync(controller, i => changes.Apply(ChangeKinds[i % 3]), settings.ChurnRate, settings.ChurnDuration, null, cancellationToken);
        var latencies = run.Latencies().Where(double.IsFinite).ToList();
        var stats = LatencyStats.Of(latencies);
        // Bounded: no change waited much longer than the coalescing window plus a few syncs.
        var longestSync = run.Syncs.Count == 0 ? 0 : run.Syncs.Max(s => (s.End - s.Start).TotalMilliseconds);
        var bounded = latencies.Count == run.Count && stats.Max <= 100 + 3 * longestSync + 250;
        return new ChurnResult(settings.ChurnRate, run.AchievedPerSecond, run.Syncs.Count, stats, bounded);
    }

    private static async Task<double> MedianConnectAsync(NetworkNamespace client, string ip, CancellationToken cancellationToken)
    {
        var times = new List<double>();
        for (var i = 0; i < 50; i++)
        {
            using var socket = client.CreateSocket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
            using var timeout = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            timeout.CancelAfter(TimeSpan.FromSeconds(2));
            var stopwatch = Stopwatch.StartNew();
            try
            {
                await socket.ConnectAsync(new IPEndPoint(IPAddress.Parse(ip), 80), timeout.Token);
                times.Add(stopwatch.Elapsed.TotalMilliseconds);
            }
            catch (Exception e) when (e is SocketException or OperationCanceledException)
            {
                // An unreachable probe is reported as 0 rather than failing the whole run.
            }
        }
        return times.Count == 0 ? 0 : times.Order().ElementAt(times.Count / 2);
    }

    internal static void Progress(string text) => Console.Error.WriteLine($"  [{DateTime.Now:HH:mm:ss}] {text}");

    /// <summary>The change generators, each a real event pair through the sink.</summary>
    internal sealed class Changes(SyntheticCluster cluster, ProxyController sink, string first, string last)
    {
        private readonly Random _random = new(42);
        private readonly Stack<string> _added = new();

        /// <summary>Makes one change of <paramref name="kind"/>; returns the name of the service it changed.</summary>
        public string Apply(string kind)
        {
            switch (kind)
            {
                case "endpoint added": return EditSlice(eps => eps.Add(cluster.NextEndpoint()));
                case "endpoint removed": return EditSlice(eps => { if (eps.Count > 1) eps.RemoveAt(eps.Count - 1); else eps.Add(cluster.NextEndpoint()); });
                case "endpoint not ready": return EditSlice(eps => eps[0] = cluster.NewEndpoint(eps[0].Addresses![0], ready: eps[0].Conditions?.Ready == false));
                // A pod rolled: one endpoint's address swapped for one never used before. It never
                // cancels out with another change and keeps the cluster's size constant (the soak).
                case "endpoint replaced": return EditSlice(eps => eps[_random.Next(eps.Count)] = cluster.NextEndpoint());
                case "service added":
                    var added = cluster.Add();
                    _added.Push(added);
                    sink.OnService(null, cluster.Services[added]);
                    sink.OnEndpointSlice(null, cluster.Slices[added]);
                    return added;
                case "service removed":
                    var name = _added.Count > 0 ? _added.Pop() : RandomService();
                    sink.OnEndpointSlice(cluster.Slices[name], null);
                    sink.OnService(cluster.Services[name], null);
                    cluster.Services.Remove(name);
                    cluster.Slices.Remove(name);
                    cluster.Names.Remove(name);
                    return name;
                default: throw new ArgumentException($"unknown change kind '{kind}'", nameof(kind));
            }
        }

        private string EditSlice(Action<List<Endpoint>> edit)
        {
            var name = RandomService();
            var previous = cluster.Slices[name];
            var current = SyntheticCluster.Copy(previous);
            edit(current.Endpoints!);
            cluster.Slices[name] = current;
            sink.OnEndpointSlice(previous, current);
            return name;
        }

        private string RandomService()
        {
            while (true)
            {
                var name = cluster.Names[_random.Next(cluster.Names.Count)];
                if (name != first && name != last) return name;
            }
        }
    }
}
