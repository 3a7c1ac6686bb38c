using System.Diagnostics;
using ProxyPlanes.Core.Proxy;

namespace ProxyPlanes.Bench;

/// <summary>
/// Changes made at a steady rate while the real SyncRunner coalesces them, and the syncs that carried
/// them: the benchmark's churn and the soak. A change's latency runs from the moment its sink call
/// returned to the end of the first successful sync that started after it: a sync reads the trackers
/// after it starts, so it carries every change made before (the controller counts a change only once
/// its tracker has it). No kernel polling, so it costs nothing per change at any rate. The arrays are
/// sized up front so that what a soak records does not grow the memory it measures.
/// </summary>
internal sealed class PacedChanges
{
    private static readonly TimeSpan DrainLimit = TimeSpan.FromSeconds(60);
    private readonly long[] _written;
    private readonly List<(DateTimeOffset Start, DateTimeOffset End)> _syncs;

    private PacedChanges(int capacity, int syncCapacity)
    {
        _written = new long[capacity];
        _syncs = new List<(DateTimeOffset, DateTimeOffset)>(syncCapacity);
    }

    /// <summary>The most changes a run of <paramref name="duration"/> at <paramref name="rate"/> makes (the loop's bound).</summary>
    public static int Capacity(double rate, TimeSpan duration) => (int)Math.Ceiling(rate * duration.TotalSeconds) + 1;

    /// <summary>Changes made so far (read while running, it is the progress).</summary>
    public int Count { get; private set; }

    /// <summary>When the first change was made.</summary>
    public DateTimeOffset Began { get; private set; }

    /// <summary>How long making the changes took.</summary>
    public TimeSpan Produced { get; private set; }

    public double AchievedPerSecond => Produced > TimeSpan.Zero ? Count / Produced.TotalSeconds : 0;

    /// <summary>Every successful sync after the runner's first (full) one, in order.</summary>
    public IReadOnlyList<(DateTimeOffset Start, DateTimeOffset End)> Syncs => _syncs;

    /// <summary>When change <paramref name="index"/>'s sink call returned.</summary>
    public DateTimeOffset WrittenAt(int index) => new(_written[index], TimeSpan.Zero);

    /// <summary>
    /// Starts the controller's SyncRunner, lets its first (full) sync pass, makes changes at
    /// <paramref name="rate"/> for <paramref name="duration"/> (at most <see cref="Capacity"/> of
    /// them) by calling <paramref name="change"/> with each one's index, waits (bounded) for a sync
    /// that carries the last one, and stops the runner. <paramref name="started"/> is called as the
    /// first change is about to be made.
    /// </summary>
    public static async Task<PacedChanges> RunAsync(
        ProxyController controller, Action<int> change, double rate, TimeSpan duration, Action<PacedChanges>? started, CancellationToken cancellationToken)
    {
        var run = new PacedChanges(Capacity(rate, duration), (int)(duration + DrainLimit).TotalSeconds * 10 + 64);
        var firstSync = new TaskCompletionSource();
        void OnSynced(SyncReport report)
        {
            lock (run._syncs) run._syncs.Add((report.CompletedAt - report.Duration, report.CompletedAt));
            firstSync.TrySetResult();
        }
        controller.Synced += OnSynced;
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var runner = Task.Run(() => controller.Runner.RunAsync(stop.Token), CancellationToken.None);
        try
        {
            controller.Runner.Trigger(); // the runner's first sync is full; let it pass before measuring
            await firstSync.Task.WaitAsync(TimeSpan.FromMinutes(5), cancellationToken);
            lock (run._syncs) run._syncs.Clear();

            var interval = TimeSpan.FromSeconds(1 / rate);
            run.Began = DateTimeOffset.UtcNow;
            started?.Invoke(run);
            var clock = Stopwatch.StartNew();
            var next = TimeSpan.Zero;
            while (run.Count < run._written.Length && clock.Elapsed < duration)
            {
                if (clock.Elapsed < next) await Task.Delay(next - clock.Elapsed, cancellationToken);
                change(run.Count);
                // Taken after the sink call returned, so a sync that started later surely carries it.
                run._written[run.Count] = DateTimeOffset.UtcNow.UtcTicks;
                run.Count++;
                next += interval;
            }
            run.Produced = clock.Elapsed;

            var deadline = Stopwatch.StartNew();
            while (run.Count > 0 && deadline.Elapsed < DrainLimit)
            {
                lock (run._syncs)
                    if (run._syncs.Count > 0 && run._syncs[^1].Start.UtcTicks > run._written[run.Count - 1]) break;
                await Task.Delay(20, cancellationToken);
            }
        }
        finally
        {
            await stop.CancelAsync();
            await runner;
            controller.Synced -= OnSynced;
        }
        return run;
    }

    /// <summary>Each change's latency in milliseconds, in the order made; NaN for a change no sync carried.</summary>
    public double[] Latencies()
    {
        (DateTimeOffset Start, DateTimeOffset End)[] syncs;
        lock (_syncs) syncs = [.. _syncs];
        var latencies = new double[Count];
        var next = 0;
        // Both are in time order: walk them together.
        for (var i = 0; i < Count; i++)
        {
            while (next < syncs.Length && syncs[next].Start.UtcTicks <= _written[i]) next++;
            latencies[i] = next < syncs.Length ? TimeSpan.FromTicks(syncs[next].End.UtcTicks - _written[i]).TotalMilliseconds : double.NaN;
        }
        return latencies;
    }
}

/// <summary>This process's resident memory now and its peak (VmRSS and VmHWM of /proc/self/status), in MiB.</summary>
internal readonly record struct ProcessMemory(double RssMib, double PeakMib)
{
    public static ProcessMemory Read()
    {
        double rss = 0, peak = 0;
        foreach (var line in File.ReadLines("/proc/self/status"))
            if (line.StartsWith("VmRSS:", StringComparison.Ordinal)) rss = Kib(line) / 1024;
            else if (line.StartsWith("VmHWM:", StringComparison.Ordinal)) peak = Kib(line) / 1024;
        return new ProcessMemory(rss, peak);
    }

    private static double Kib(string line) =>
        long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], System.Globalization.CultureInfo.InvariantCulture);
}
