using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Globalization;
using System.Runtime.CompilerServices;

namespace ProxyPlanes.Core.Metrics;

/// <summary>
/// Aggregates <see cref="System.Diagnostics.Metrics"/> instruments of selected meters and renders them in
/// the Prometheus text exposition format 0.0.4.
/// </summary>
/// <remarks>
/// <list type="bullet">
/// <item>Counter / ObservableCounter → <c>counter</c>; UpDownCounter / ObservableUpDownCounter / ObservableGauge /
/// Gauge → <c>gauge</c>; Histogram → <c>histogram</c> (buckets from
/// <see cref="InstrumentAdvice{T}.HistogramBucketBoundaries"/>, else the Prometheus defaults).</item>
/// <item>Names are used as given (invalid characters become <c>_</c>); the unit is not appended.</item>
/// <item>Meter and instrument tags become labels on every series; measurement tags override them.</item>
/// <item>A synchronous counter/gauge that has never been recorded prints one zero sample without labels
/// (the exporter cannot know label names in advance); histograms print zero buckets.</item>
/// <item>If two instruments share a name, the first one published wins and the other is not rendered.</item>
/// </list>
/// Recording is lock-free for tag sets that were seen before; scrapes are serialized.
/// </remarks>
public sealed class PrometheusExporter : IDisposable
{
    /// <summary>HTTP Content-Type of <see cref="Scrape"/> output.</summary>
    public const string ContentType = "text/plain; version=0.0.4; charset=utf-8";

    private readonly Func<Meter, bool> meterFilter;
    private readonly bool includeProcessMetrics;
    private readonly double processStartTimeSeconds;
    private readonly MeterListener listener;
    private readonly Lock registryLock = new();
    private readonly List<InstrumentState> instruments = [];
    private readonly Lock scrapeLock = new();
    private volatile bool disposed;

    /// <summary>Exports instruments of every meter whose name is <paramref name="meterName"/>.</summary>
    public PrometheusExporter(string meterName, bool includeProcessMetrics = true)
        : this([meterName], includeProcessMetrics)
    {
    }

    /// <summary>Exports instruments of every meter whose name is in <paramref name="meterNames"/> (ordinal).</summary>
    public PrometheusExporter(IEnumerable<string> meterNames, bool includeProcessMetrics = true)
        : this(CreateNameFilter(meterNames), includeProcessMetrics)
    {
    }

    /// <summary>Exports instruments of exactly these meter objects (plus process metrics).</summary>
    public PrometheusExporter(params Meter[] meters)
        : this((IEnumerable<Meter>)meters)
    {
    }

    /// <summary>Exports instruments of exactly these meter objects.</summary>
    public PrometheusExporter(IEnumerable<Meter> meters, bool includeProcessMetrics = true)
        : this(CreateMeterFilter(meters), includeProcessMetrics)
    {
    }

    private PrometheusExporter(Func<Meter, bool> meterFilter, bool includeProcessMetrics)
    {
        this.meterFilter = meterFilter;
        this.includeProcessMetrics = includeProcessMetrics;
        if (includeProcessMetrics)
        {
            using var process = Process.GetCurrentProcess();
            processStartTimeSeconds = new DateTimeOffset(process.StartTime.ToUniversalTime()).ToUnixTimeMilliseconds() / 1000d;
        }

        listener = new MeterListener
        {
            InstrumentPublished = OnInstrumentPublished,
            MeasurementsCompleted = OnMeasurementsCompleted,
        };
        listener.SetMeasurementEventCallback<byte>(OnMeasurement);
        listener.SetMeasurementEventCallback<short>(OnMeasurement);
        listener.SetMeasurementEventCallback<int>(OnMeasurement);
        listener.SetMeasurementEventCallback<long>(OnMeasurement);
        listener.SetMeasurementEventCallback<float>(OnMeasurement);
        listener.SetMeasurementEventCallback<double>(OnMeasurement);
        listener.SetMeasurementEventCallback<decimal>(OnMeasurement);
        listener.Start(); // also publishes instruments that already exist
    }

    /// <summary>Writes the current state of all exported metrics in text format 0.0.4.</summary>
    public void WriteTo(TextWriter writer)
    {
        ArgumentNullException.ThrowIfNull(writer);
        ObjectDisposedException.ThrowIf(disposed, this);

        lock (scrapeLock)
        {
            InstrumentState[] states;
            lock (registryLock)
            {
                states = [.. instruments];
            }

            foreach (InstrumentState state in states)
            {
                state.BeginCollect();
            }

            try
            {
                listener.RecordObservableInstruments();
            }
            catch (Exception)
            {
                // A throwing observable callback must not break the whole scrape; the
                // measurements of the healthy callbacks have been delivered already.
            }

            var families = new List<MetricFamily>(states.Length + 6);
            families.AddRange(states); // publish order: on duplicate names the first one wins
            if (includeProcessMetrics)
            {
                AddProcessFamilies(families);
            }

            // Stable sort by name; duplicates keep their relative (priority) order.
            MetricFamily[] ordered = [.. families.OrderBy(f => f.Name, StringComparer.Ordinal)];
            string? previous = null;
            foreach (MetricFamily family in ordered)
            {
                if (family.Name == previous)
                {
                    continue;
                }

                previous = family.Name;
                family.Write(writer);
            }
        }
    }

    /// <summary>Returns the current exposition text.</summary>
    public string Scrape()
    {
        using var writer = new StringWriter(CultureInfo.InvariantCulture);
        WriteTo(writer);
        return writer.ToString();
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (disposed)
        {
            return;
        }

        disposed = true;
        listener.Dispose();
        lock (registryLock)
        {
            instruments.Clear();
        }
    }

    private void OnInstrumentPublished(Instrument instrument, MeterListener meterListener)
    {
        if (disposed || !meterFilter(instrument.Meter))
        {
            return;
        }

        InstrumentState? state = InstrumentState.TryCreate(instrument);
        if (state is null)
        {
            return;
        }

        lock (registryLock)
        {
            instruments.Add(state);
        }

        meterListener.EnableMeasurementEvents(instrument, state);
    }

    private void OnMeasurementsCompleted(Instrument instrument, object? state)
    {
        if (state is InstrumentState instrumentState)
        {
            lock (registryLock)
            {
                instruments.Remove(instrumentState);
            }
        }
    }

    private static void OnMeasurement<T>(Instrument instrument, T measurement, ReadOnlySpan<KeyValuePair<string, object?>> tags, object? state)
        where T : struct
    {
        if (state is InstrumentState instrumentState)
        {
            instrumentState.Record(ToDouble(measurement), tags);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static double ToDouble<T>(T value)
        where T : struct
    {
        // The JIT specializes per value type and removes the dead branches.
        if (typeof(T) == typeof(double))
        {
            return Unsafe.As<T, double>(ref value);
        }

        if (typeof(T) == typeof(long))
        {
            return Unsafe.As<T, long>(ref value);
        }

        if (typeof(T) == typeof(int))
        {
            return Unsafe.As<T, int>(ref value);
        }

        if (typeof(T) == typeof(float))
        {
            return Unsafe.As<T, float>(ref value);
        }

        if (typeof(T) == typeof(short))
        {
            return Unsafe.As<T, short>(ref value);
        }

        if (typeof(T) == typeof(byte))
        {
            return Unsafe.As<T, byte>(ref value);
        }

        if (typeof(T) == typeof(decimal))
        {
            return (double)Unsafe.As<T, decimal>(ref value);
        }

        return double.NaN;
    }

    private static Func<Meter, bool> CreateNameFilter(IEnumerable<string> meterNames)
    {
        ArgumentNullException.ThrowIfNull(meterNames);
        var names = new HashSet<string>(meterNames, StringComparer.Ordinal);
        return meter => names.Contains(meter.Name);
    }

    private static Func<Meter, bool> CreateMeterFilter(IEnumerable<Meter> meters)
    {
        ArgumentNullException.ThrowIfNull(meters);
        var set = new HashSet<Meter>(meters, ReferenceEqualityComparer.Instance);
        return set.Contains;
    }

    private void AddProcessFamilies(List<MetricFamily> families)
    {
        // Same names and help texts as client_golang's process collector (what kube-proxy exposes).
        families.Add(new SimpleFamily(
            "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", processStartTimeSeconds));
        families.Add(new SimpleFamily(
            "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", Environment.CpuUsage.TotalTime.TotalSeconds));

        try
        {
            using var process = Process.GetCurrentProcess();
            families.Add(new SimpleFamily(
                "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", process.WorkingSet64));
            families.Add(new SimpleFamily(
                "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", process.VirtualMemorySize64));
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
            // Process information unavailable on this platform.
        }

        if (OperatingSystem.IsLinux())
        {
            try
            {
                families.Add(new SimpleFamily(
                    "process_open_fds", "Number of open file descriptors.", "gauge", Directory.GetFileSystemEntries("/proc/self/fd").Length));
                if (TryReadMaxOpenFiles(out double maxFds))
                {
                    families.Add(new SimpleFamily("process_max_fds", "Maximum number of open file descriptors.", "gauge", maxFds));
                }
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // /proc not mounted or not readable.
            }
        }
    }

    private static bool TryReadMaxOpenFiles(out double maxFds)
    {
        foreach (string line in File.ReadLines("/proc/self/limits"))
        {
            if (!line.StartsWith("Max open files", StringComparison.Ordinal))
            {
                continue;
            }

            string[] fields = line["Max open files".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (fields.Length > 0)
            {
                if (fields[0] == "unlimited")
                {
                    maxFds = double.PositiveInfinity;
                    return true;
                }

                if (double.TryParse(fields[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out maxFds))
                {
                    return true;
                }
            }
        }

        maxFds = 0;
        return false;
    }
}
