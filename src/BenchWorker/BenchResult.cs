using System.Text.Json.Serialization;

namespace ProxyPlanes.Bench;

/// <summary>Percentiles of a set of latencies, in milliseconds.</summary>
public sealed record LatencyStats(int Count, double P50, double P90, double P99, double Max)
{
    public static LatencyStats Of(IReadOnlyCollection<double> milliseconds)
    {
        if (milliseconds.Count == 0) return new LatencyStats(0, 0, 0, 0, 0);
        var sorted = milliseconds.Order().ToArray();
        double At(double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
        return new LatencyStats(sorted.Length, At(0.50), At(0.90), At(0.99), sorted[^1]);
    }
}

/// <summary>Sustained changes: what was offered, what the proxy absorbed, and the latency it kept.</summary>
public sealed record ChurnResult(double OfferedPerSecond, double AchievedPerSecond, int Syncs, LatencyStats Latency, bool Bounded);

/// <summary>Everything one mode measured at one cluster size.</summary>
public sealed record BenchResult
{
    public required string Mode { get; init; }
    /// <summary>The worker that measured it: "native AOT" (the published worker, as the daemon ships) or "JIT" (a build).</summary>
    public string Runtime { get; init; } = "";
    public required int Services { get; init; }
    public required int EndpointsPerService { get; init; }
    /// <summary>Whole cluster present → kernel fully programmed.</summary>
    public double ColdSyncMs { get; init; }
    /// <summary>A full sync of the same cluster (start, failure, flush, node change; no longer periodic).</summary>
    public double FullResyncMs { get; init; }
    /// <summary>A periodic sync (--sync-period) on a quiet cluster: the canary check and nothing else.</summary>
    public LatencyStats PeriodicNoOp { get; init; } = LatencyStats.Of([]);
    /// <summary>The kernel tool alone loading what the cold sync sent (the floor).</summary>
    public double FloorMs { get; init; }
    public required LatencyStats Incremental { get; init; }
    public required Dictionary<string, LatencyStats> IncrementalByKind { get; init; }
    /// <summary>
    /// The kernel interface alone making the smallest change at this size (a rule or element added to a scratch
    /// object, then removed; <c>IKernelProbe.ChangeFloorAsync</c>): what a single change cannot go below. Count 0
    /// when the mode does not measure it.
    /// </summary>
    public LatencyStats ChangeFloor { get; init; } = LatencyStats.Of([]);
    public required ChurnResult Churn { get; init; }
    public double PeakRssMb { get; init; }
    public double CpuSeconds { get; init; }
    public required Dictionary<string, long> KernelObjects { get; init; }
    /// <summary>Median TCP connect time through the first and the last service (rule walk cost).</summary>
    public double FirstServiceConnectMs { get; init; }
    public double LastServiceConnectMs { get; init; }

    /// <summary>How much slower the proxy's cold sync is than the kernel tool alone loading the same rules.</summary>
    public double OverheadRatio => FloorMs > 0 ? ColdSyncMs / FloorMs : 0;
}

[JsonSourceGenerationOptions(WriteIndented = true, PropertyNamingPolicy = JsonKnownNamingPolicy.CamelCase)]
[JsonSerializable(typeof(BenchResult))]
[JsonSerializable(typeof(List<BenchResult>))]
[JsonSerializable(typeof(WorkerSettings))]
[JsonSerializable(typeof(SoakResult))]
public sealed partial class BenchJsonContext : JsonSerializerContext;
