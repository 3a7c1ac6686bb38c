using System.Globalization;
using Prometheus;

namespace ProxyPlanes.Metrics;

/// <summary>
/// Process metrics: prometheus-net's own (<see cref="DotNetStats"/>: <c>process_start_time_seconds</c>,
/// <c>process_cpu_seconds_total</c>, <c>process_virtual_memory_bytes</c>, threads, handles and GC counts)
/// plus the three that client_golang's process collector — what kube-proxy exposes — has and
/// prometheus-net lacks: <c>process_resident_memory_bytes</c>, <c>process_open_fds</c>, <c>process_max_fds</c>.
/// All are refreshed just before each scrape.
/// </summary>
internal static class ProcessMetrics
{
    public static void Register(CollectorRegistry registry)
    {
        DotNetStats.Register(registry);

        var factory = Prometheus.Metrics.WithCustomRegistry(registry);
        // Same names and help texts as client_golang.
        var residentMemory = factory.CreateGauge("process_resident_memory_bytes", "Resident memory size in bytes.");
        if (!OperatingSystem.IsLinux())
        {
            registry.AddBeforeCollectCallback(() => residentMemory.Set(Environment.WorkingSet));
            return;
        }

        var openFds = factory.CreateGauge("process_open_fds", "Number of open file descriptors.");
        var maxFds = factory.CreateGauge("process_max_fds", "Maximum number of open file descriptors.");
        registry.AddBeforeCollectCallback(() =>
        {
            // Environment.WorkingSet is the resident set size (VmRSS) on Linux.
            residentMemory.Set(Environment.WorkingSet);
            try
            {
                openFds.Set(Directory.GetFileSystemEntries("/proc/self/fd").Length);
                maxFds.Set(ReadMaxOpenFiles());
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // /proc not mounted or not readable: the gauges keep their last values.
            }
        });
    }

    /// <summary>The soft limit on open files from <c>/proc/self/limits</c> (+Inf when unlimited).</summary>
    private static double ReadMaxOpenFiles()
    {
        const string prefix = "Max open files";
        foreach (var line in File.ReadLines("/proc/self/limits"))
        {
            if (!line.StartsWith(prefix, StringComparison.Ordinal))
            {
                continue;
            }

            var soft = line[prefix.Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries).FirstOrDefault() ?? "";
            if (soft == "unlimited")
            {
                return double.PositiveInfinity;
            }

            if (double.TryParse(soft, NumberStyles.Integer, CultureInfo.InvariantCulture, out var limit))
            {
                return limit;
            }
        }

        return 0;
    }
}
