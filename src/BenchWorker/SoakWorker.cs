using System.Diagnostics;
using ProxyPlanes.Core.Proxy;
using ProxyPlanes.DataPlane;

namespace ProxyPlanes.Bench;

/// <summary>
/// The soak, inside the bench worker (the proxy's controller and backend in-process, after the cold
/// sync): a rolling pod every 1/rate seconds for the whole duration through the real SyncRunner,
/// while this process's VmRSS is sampled. Each change swaps one endpoint for an address never used
/// before, so no two changes cancel out, the cluster keeps its size (memory should stay flat), and
/// each change leaves a mark the kernel shows: at the end the endpoints the kernel forwards to must be
/// exactly the cluster's.
/// </summary>
internal static class SoakWorker
{
    private const int Listed = 50;
    private static readonly TimeSpan ProgressEvery = TimeSpan.FromSeconds(30);

    public static async Task<SoakResult> RunAsync(
        WorkerSettings settings, SoakSettings soak, ProxyController controller, IKernelProbe probe, SyntheticCluster cluster, BenchWorker.Changes changes, TimeSpan cold,
        CancellationToken cancellationToken)
    {
        var label = $"{settings.Mode} {settings.Services}×{settings.Endpoints}";
        BenchWorker.Progress($"{label}: soak, {soak.Rate:0.#} changes/s for {soak.Duration.TotalSeconds:0.#} s");
        var changed = new string[PacedChanges.Capacity(soak.Rate, soak.Duration)];
        var sampler = new RssSampler(soak, label);
        using var stopSampling = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var sampling = Task.CompletedTask;
        PacedChanges run;
        try
        {
            run = await PacedChanges.RunAsync(controller, i => changed[i] = changes.Apply("endpoint replaced"), soak.Rate, soak.Duration,
                started => sampling = sampler.RunAsync(started, stopSampling.Token), cancellationToken);
        }
        finally
        {
            await stopSampling.CancelAsync();
            await sampling;
        }

        var latencies = run.Latencies();
        var carried = latencies.Where(double.IsFinite).ToArray();
        var stats = LatencyStats.Of(carried);
        var unconfirmed = Enumerable.Range(0, run.Count).Where(i => !double.IsFinite(latencies[i]))
            .Take(Listed).Select(i => $"#{i} at +{(run.WrittenAt(i) - run.Began).TotalSeconds:0.000} s: {changed[i]}").ToList();

        // What every change left, read back from the kernel: the ready endpoints of the cluster as it is now.
        BenchWorker.Progress($"{label}: reading the kernel's endpoints back");
        var expected = cluster.Slices.Values.SelectMany(s => s.Endpoints!)
            .Where(e => e.Conditions?.Ready != false).Select(e => $"{e.Addresses![0]}:{SyntheticCluster.PodPort}").ToHashSet();
        var found = await probe.EndpointsInKernelAsync(cancellationToken);
        var missing = expected.Where(e => !found.Contains(e)).Order().ToList();
        var unexpected = found.Where(e => !expected.Contains(e)).Order().ToList();

        var samples = sampler.Samples;
        var inSlope = samples.Where(s => s.Seconds >= soak.Warmup.TotalSeconds && s.Seconds <= run.Produced.TotalSeconds).ToArray();
        using var self = Process.GetCurrentProcess();
        return new SoakResult
        {
            Mode = settings.Mode,
            Runtime = BenchWorker.Runtime,
            Services = settings.Services,
            EndpointsPerService = settings.Endpoints,
            Settings = soak,
            ColdSyncMs = cold.TotalMilliseconds,
            Seconds = run.Produced.TotalSeconds,
            AchievedPerSecond = run.AchievedPerSecond,
            ChangesSent = run.Count,
            ChangesConfirmed = carried.Length,
            Unconfirmed = unconfirmed,
            Syncs = run.Syncs.Count,
            Latency = stats,
            AboveLimit = carried.Count(ms => ms > soak.LatencyLimitMs),
            LatencyOverTime = Slices(run, latencies, soak.Duration),
            Rss = samples,
            RssSlopeMibPerMinute = inSlope.Length >= 2 ? Slope(inSlope) : null,
            RssSamplesInSlope = inSlope.Length,
            // VmHWM at the end, or a sample's RSS if higher: the kernel's high-water mark is only brought up to date on
            // some unmaps, so memory the GC gave back (madvise) can leave it below an RSS sampled earlier (CI, 2026-12-08).
            PeakRssMib = Math.Max(ProcessMemory.Read().PeakMib, samples.Count > 0 ? samples.Max(s => Math.Max(s.RssMib, s.PeakMib)) : 0),
            CpuSeconds = self.TotalProcessorTime.TotalSeconds,
            KernelEndpointsExpected = expected.Count,
            KernelEndpointsFound = found.Count,
            KernelMissingCount = missing.Count,
            KernelUnexpectedCount = unexpected.Count,
            KernelMissing = [.. missing.Take(20)],
            KernelUnexpected = [.. unexpected.Take(20)],
        };
    }

    /// <summary>Latency over time in about 300 slices (at least a second each): p50 and max of the changes made in each.</summary>
    private static List<LatencySlice> Slices(PacedChanges run, double[] latencies, TimeSpan duration)
    {
        var width = Math.Max(1, Math.Ceiling(duration.TotalSeconds / 300));
        return Enumerable.Range(0, run.Count).Where(i => double.IsFinite(latencies[i]))
            .GroupBy(i => Math.Floor((run.WrittenAt(i) - run.Began).TotalSeconds / width))
            .OrderBy(g => g.Key)
            .Select(g =>
            {
                var stats = LatencyStats.Of([.. g.Select(i => latencies[i])]);
                return new LatencySlice(g.Key * width, stats.Count, stats.P50, stats.Max);
            }).ToList();
    }

    /// <summary>Least-squares slope of RSS against time, in MiB per minute.</summary>
    internal static double Slope(IReadOnlyList<RssSample> samples)
    {
        var meanT = samples.Average(s => s.Seconds);
        var meanR = samples.Average(s => s.RssMib);
        var covariance = samples.Sum(s => (s.Seconds - meanT) * (s.RssMib - meanR));
        var variance = samples.Sum(s => (s.Seconds - meanT) * (s.Seconds - meanT));
        return variance == 0 ? 0 : covariance / variance * 60;
    }

    /// <summary>Samples VmRSS / VmHWM every <see cref="SoakSettings.SampleEvery"/> into an array sized up front, and prints progress.</summary>
    private sealed class RssSampler(SoakSettings soak, string label)
    {
        private readonly RssSample[] _samples = new RssSample[(int)((soak.Duration + TimeSpan.FromSeconds(90)) / soak.SampleEvery) + 2];
        private int _count;

        public List<RssSample> Samples => [.. _samples.Take(Volatile.Read(ref _count))];

        public async Task RunAsync(PacedChanges run, CancellationToken cancellationToken)
        {
            using var timer = new PeriodicTimer(soak.SampleEvery);
            var lastProgress = TimeSpan.Zero;
            try
            {
                do
                {
                    var memory = ProcessMemory.Read();
                    var elapsed = DateTimeOffset.UtcNow - run.Began;
                    if (_count < _samples.Length)
                    {
                        _samples[_count] = new RssSample(elapsed.TotalSeconds, memory.RssMib, memory.PeakMib);
                        Volatile.Write(ref _count, _count + 1);
                    }
                    if (elapsed - lastProgress >= ProgressEvery)
                    {
                        lastProgress = elapsed;
                        BenchWorker.Progress($"{label}: soak at {elapsed.TotalSeconds:0} s, {run.Count} changes, RSS {memory.RssMib:0} MiB");
                    }
                }
                while (await timer.WaitForNextTickAsync(cancellationToken));
            }
            catch (OperationCanceledException)
            {
                // The soak is over.
            }
        }
    }
}
