namespace ProxyPlanes.Bench;

/// <summary>What a soak runs and the targets it is held to (issue 15: 100 changes/s for 10 minutes at 5,000 services).</summary>
public sealed record SoakSettings(double Rate, TimeSpan Duration, TimeSpan Warmup, TimeSpan SampleEvery, double LatencyLimitMs, double MaxRssSlopeMibPerMinute)
{
    /// <summary>The share of the target rate the soak must reach to count as run at that rate.</summary>
    public const double MinRateShare = 0.95;
}

/// <summary>The worker's resident memory at one moment of the soak (seconds since the first change).</summary>
public sealed record RssSample(double Seconds, double RssMib, double PeakMib);

/// <summary>Latency of the changes made in one slice of the soak (seconds since the first change, at the slice's start).</summary>
public sealed record LatencySlice(double Seconds, int Changes, double P50Ms, double MaxMs);

/// <summary>Everything one soak measured.</summary>
public sealed record SoakResult
{
    public required string Mode { get; init; }
    /// <summary>The worker that measured it: "native AOT" or "JIT" (<see cref="BenchResult.Runtime"/>).</summary>
    public string Runtime { get; init; } = "";
    public required int Services { get; init; }
    public required int EndpointsPerService { get; init; }
    public required SoakSettings Settings { get; init; }
    public double ColdSyncMs { get; init; }
    public double Seconds { get; init; }
    public double AchievedPerSecond { get; init; }
    public int ChangesSent { get; init; }
    /// <summary>Changes a successful sync carried to the kernel.</summary>
    public int ChangesConfirmed { get; init; }
    /// <summary>The changes no sync carried (at most 50 listed; their count is sent − confirmed).</summary>
    public required List<string> Unconfirmed { get; init; }
    public int Syncs { get; init; }
    public required LatencyStats Latency { get; init; }
    public int AboveLimit { get; init; }
    public required List<LatencySlice> LatencyOverTime { get; init; }
    public required List<RssSample> Rss { get; init; }
    /// <summary>Least-squares slope of VmRSS over the samples after warm-up; null with fewer than two.</summary>
    public double? RssSlopeMibPerMinute { get; init; }
    public int RssSamplesInSlope { get; init; }
    /// <summary>VmHWM at the end: the process's peak, the cold sync included.</summary>
    public double PeakRssMib { get; init; }
    public double CpuSeconds { get; init; }
    /// <summary>The endpoints (address:port) the kernel forwards to after the soak, against the cluster's ready ones.</summary>
    public int KernelEndpointsExpected { get; init; }
    public int KernelEndpointsFound { get; init; }
    public int KernelMissingCount { get; init; }
    public int KernelUnexpectedCount { get; init; }
    /// <summary>At most 20 of each.</summary>
    public required List<string> KernelMissing { get; init; }
    public required List<string> KernelUnexpected { get; init; }
}
