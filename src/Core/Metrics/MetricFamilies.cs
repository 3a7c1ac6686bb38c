using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Globalization;

namespace ProxyPlanes.Core.Metrics;

/// <summary>One Prometheus metric family (HELP/TYPE block plus its samples).</summary>
internal abstract class MetricFamily
{
    public abstract string Name { get; }

    public abstract void Write(TextWriter writer);

    protected static void WriteHeader(TextWriter writer, string name, string? help, string type)
    {
        if (!string.IsNullOrEmpty(help))
        {
            writer.Write("# HELP ");
            writer.Write(name);
            writer.Write(' ');
            writer.Write(PrometheusText.EscapeHelp(help));
            writer.Write('\n');
        }

        writer.Write("# TYPE ");
        writer.Write(name);
        writer.Write(' ');
        writer.Write(type);
        writer.Write('\n');
    }

    protected static void WriteSample(TextWriter writer, string name, string labelText, double value)
    {
        WriteSampleName(writer, name, labelText);
        writer.Write(PrometheusText.FormatDouble(value));
        writer.Write('\n');
    }

    protected static void WriteSample(TextWriter writer, string name, string labelText, long value)
    {
        WriteSampleName(writer, name, labelText);
        writer.Write(value.ToString(CultureInfo.InvariantCulture));
        writer.Write('\n');
    }

    private static void WriteSampleName(TextWriter writer, string name, string labelText)
    {
        writer.Write(name);
        if (labelText.Length > 0)
        {
            writer.Write('{');
            writer.Write(labelText);
            writer.Write('}');
        }

        writer.Write(' ');
    }
}

/// <summary>A family with a single unlabeled sample computed at scrape time (process metrics).</summary>
internal sealed class SimpleFamily(string name, string help, string type, double value) : MetricFamily
{
    public override string Name => name;

    public override void Write(TextWriter writer)
    {
        WriteHeader(writer, name, help, type);
        WriteSample(writer, name, string.Empty, value);
    }
}

internal enum MetricKind
{
    Counter,
    Gauge,
    Histogram,
}

/// <summary>Labels of one series, normalized (sanitized names, string values, sorted by name).</summary>
internal class Series(KeyValuePair<string, string>[] labels, string labelText)
{
    public KeyValuePair<string, string>[] Labels { get; } = labels;

    /// <summary>Rendered labels without braces, e.g. <c>a="x",b="y"</c>.</summary>
    public string LabelText { get; } = labelText;

    public static int Compare(Series x, Series y) => PrometheusText.CompareLabels(x.Labels, y.Labels);
}

internal sealed class ValueSeries(KeyValuePair<string, string>[] labels, string labelText) : Series(labels, labelText)
{
    public double Value;
}

internal sealed class HistogramSeries(KeyValuePair<string, string>[] labels, string labelText, int bucketCount)
    : Series(labels, labelText)
{
    /// <summary>Non-cumulative counts; the last slot is the +Inf overflow bucket.</summary>
    public readonly long[] Counts = new long[bucketCount + 1];

    public double Sum;
}

/// <summary>Aggregation state for one <see cref="Instrument"/>; passed as MeterListener state.</summary>
internal abstract class InstrumentState : MetricFamily
{
    private readonly string name;

    protected InstrumentState(Instrument instrument, MetricKind kind)
    {
        Instrument = instrument;
        Kind = kind;
        name = PrometheusText.SanitizeMetricName(instrument.Name);
        Help = instrument.Description;
        ConstantLabels = BuildConstantLabels(instrument, kind);
        ConstantLabelText = PrometheusText.RenderLabels(ConstantLabels);
    }

    public Instrument Instrument { get; }

    public MetricKind Kind { get; }

    public override string Name => name;

    public string? Help { get; }

    /// <summary>Labels derived from meter and instrument tags, applied to every series.</summary>
    protected KeyValuePair<string, string>[] ConstantLabels { get; }

    protected string ConstantLabelText { get; }

    protected string TypeName => Kind switch
    {
        MetricKind.Counter => "counter",
        MetricKind.Histogram => "histogram",
        _ => "gauge",
    };

    /// <summary>Hot path: one measurement from the MeterListener.</summary>
    public abstract void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags);

    /// <summary>Called under the scrape lock before observable instruments are collected.</summary>
    public virtual void BeginCollect()
    {
    }

    public static InstrumentState? TryCreate(Instrument instrument)
    {
        Type type = instrument.GetType();
        if (!type.IsGenericType)
        {
            return null;
        }

        Type definition = type.GetGenericTypeDefinition();
        if (definition == typeof(Counter<>))
        {
            return new SumState(instrument, MetricKind.Counter);
        }

        if (definition == typeof(UpDownCounter<>))
        {
            return new SumState(instrument, MetricKind.Gauge);
        }

        if (definition == typeof(Gauge<>))
        {
            return new LastValueState(instrument);
        }

        if (definition == typeof(Histogram<>))
        {
            return new HistogramState(instrument, GetBucketBoundaries(instrument));
        }

        if (definition == typeof(ObservableCounter<>))
        {
            return new ObservableState(instrument, MetricKind.Counter);
        }

        if (definition == typeof(ObservableUpDownCounter<>) || definition == typeof(ObservableGauge<>))
        {
            return new ObservableState(instrument, MetricKind.Gauge);
        }

        return null;
    }

    /// <summary>Prometheus client default buckets, used when an instrument gives no advice.</summary>
    internal static readonly double[] DefaultBuckets = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

    private static double[] GetBucketBoundaries(Instrument instrument)
    {
        IEnumerable<double>? advised = instrument switch
        {
            Instrument<double> i => i.Advice?.HistogramBucketBoundaries,
            Instrument<float> i => i.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Instrument<long> i => i.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Instrument<int> i => i.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Instrument<short> i => i.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Instrument<byte> i => i.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            Instrument<decimal> i => i.Advice?.HistogramBucketBoundaries?.Select(b => (double)b),
            _ => null,
        };

        if (advised is null)
        {
            return DefaultBuckets;
        }

        // Keep finite, strictly increasing bounds; +Inf is implicit.
        var bounds = new List<double>();
        foreach (double b in advised)
        {
            if (double.IsFinite(b) && (bounds.Count == 0 || b > bounds[^1]))
            {
                bounds.Add(b);
            }
        }

        return bounds.Count == 0 ? DefaultBuckets : [.. bounds];
    }

    private static KeyValuePair<string, string>[] BuildConstantLabels(Instrument instrument, MetricKind kind)
    {
        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        AddTags(labels, instrument.Meter.Tags, kind);
        AddTags(labels, instrument.Tags, kind);
        return Sorted(labels);
    }

    /// <summary>Slow path (new tag set): merge constant labels with measurement tags.</summary>
    protected KeyValuePair<string, string>[] NormalizeLabels(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        if (tags.IsEmpty)
        {
            return ConstantLabels;
        }

        var labels = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var label in ConstantLabels)
        {
            labels[label.Key] = label.Value;
        }

        foreach (var tag in tags)
        {
            AddTag(labels, tag, Kind);
        }

        return Sorted(labels);
    }

    private static void AddTags(Dictionary<string, string> labels, IEnumerable<KeyValuePair<string, object?>>? tags, MetricKind kind)
    {
        if (tags is null)
        {
            return;
        }

        foreach (var tag in tags)
        {
            AddTag(labels, tag, kind);
        }
    }

    private static void AddTag(Dictionary<string, string> labels, KeyValuePair<string, object?> tag, MetricKind kind)
    {
        string labelName = PrometheusText.SanitizeLabelName(tag.Key);
        if (labelName.StartsWith("__", StringComparison.Ordinal) || (kind == MetricKind.Histogram && labelName == "le"))
        {
            return; // reserved label names
        }

        labels[labelName] = PrometheusText.TagValueToString(tag.Value);
    }

    private static KeyValuePair<string, string>[] Sorted(Dictionary<string, string> labels)
    {
        var array = labels.ToArray();
        Array.Sort(array, static (a, b) => string.CompareOrdinal(a.Key, b.Key));
        return array;
    }
}

/// <summary>
/// Synchronous instrument with one series per distinct tag set. Lookups of already-seen tag sets are
/// lock-free and allocation-free (order-independent hash, then tag-wise comparison).
/// </summary>
internal abstract class SyncInstrumentState<TSeries> : InstrumentState
    where TSeries : Series
{
    private readonly ConcurrentDictionary<int, Entry[]> byHash = new();
    private readonly Dictionary<string, TSeries> byLabelText = new(StringComparer.Ordinal);
    private readonly Lock gate = new();
    private volatile TSeries[] all = [];
    private volatile TSeries? untagged;

    protected SyncInstrumentState(Instrument instrument, MetricKind kind)
        : base(instrument, kind)
    {
    }

    public sealed override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        TSeries series = tags.IsEmpty ? untagged ?? GetSeriesSlow(tags, 0) : GetSeries(tags);
        Update(series, value);
    }

    protected abstract TSeries CreateSeries(KeyValuePair<string, string>[] labels, string labelText);

    protected abstract void Update(TSeries series, double value);

    /// <summary>All series, sorted by labels.</summary>
    protected TSeries[] SnapshotSorted()
    {
        TSeries[] copy = (TSeries[])all.Clone();
        Array.Sort(copy, Series.Compare);
        return copy;
    }

    private TSeries GetSeries(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        int hash = Hash(tags);
        if (byHash.TryGetValue(hash, out Entry[]? entries))
        {
            foreach (Entry entry in entries)
            {
                if (entry.Matches(tags))
                {
                    return entry.Series;
                }
            }
        }

        return GetSeriesSlow(tags, hash);
    }

    private TSeries GetSeriesSlow(ReadOnlySpan<KeyValuePair<string, object?>> tags, int hash)
    {
        lock (gate)
        {
            if (tags.IsEmpty && untagged is not null)
            {
                return untagged;
            }

            if (byHash.TryGetValue(hash, out Entry[]? entries))
            {
                foreach (Entry entry in entries)
                {
                    if (entry.Matches(tags))
                    {
                        return entry.Series;
                    }
                }
            }

            KeyValuePair<string, string>[] labels = NormalizeLabels(tags);
            string labelText = PrometheusText.RenderLabels(labels);

            // Different tag objects can render identically (e.g. int 1 and long 1): share the series.
            if (!byLabelText.TryGetValue(labelText, out TSeries? series))
            {
                series = CreateSeries(labels, labelText);
                byLabelText.Add(labelText, series);
                all = [.. all, series];
            }

            if (tags.IsEmpty)
            {
                untagged = series;
            }
            else
            {
                var entry = new Entry(tags.ToArray(), series);
                byHash[hash] = entries is null ? [entry] : [.. entries, entry];
            }

            return series;
        }
    }

    private static int Hash(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        int hash = tags.Length;
        foreach (var tag in tags)
        {
            hash += HashCode.Combine(tag.Key, tag.Value); // commutative: tag order does not matter
        }

        return hash;
    }

    private sealed class Entry(KeyValuePair<string, object?>[] tags, TSeries series)
    {
        public TSeries Series { get; } = series;

        public bool Matches(ReadOnlySpan<KeyValuePair<string, object?>> other)
        {
            if (other.Length != tags.Length)
            {
                return false;
            }

            for (int i = 0; i < other.Length; i++)
            {
                var tag = other[i];

                // Fast path: callers almost always pass tags in the same order.
                if (string.Equals(tags[i].Key, tag.Key, StringComparison.Ordinal))
                {
                    if (!ValueEquals(tags[i].Value, tag.Value))
                    {
                        return false;
                    }

                    continue;
                }

                bool found = false;
                foreach (var stored in tags)
                {
                    if (string.Equals(stored.Key, tag.Key, StringComparison.Ordinal))
                    {
                        if (!ValueEquals(stored.Value, tag.Value))
                        {
                            return false;
                        }

                        found = true;
                        break;
                    }
                }

                if (!found)
                {
                    return false;
                }
            }

            return true;
        }

        private static bool ValueEquals(object? a, object? b) => ReferenceEquals(a, b) || (a is not null && a.Equals(b));
    }
}

/// <summary>Counter (monotonic sum) or UpDownCounter (gauge-typed sum).</summary>
internal sealed class SumState(Instrument instrument, MetricKind kind) : SyncInstrumentState<ValueSeries>(instrument, kind)
{
    protected override ValueSeries CreateSeries(KeyValuePair<string, string>[] labels, string labelText) => new(labels, labelText);

    protected override void Update(ValueSeries series, double value)
    {
        if (Kind == MetricKind.Counter && !(value >= 0))
        {
            return; // counters only go up; drop negative and NaN increments
        }

        Atomic.Add(ref series.Value, value);
    }

    public override void Write(TextWriter writer)
    {
        WriteHeader(writer, Name, Help, TypeName);
        ValueSeries[] series = SnapshotSorted();
        if (series.Length == 0)
        {
            WriteSample(writer, Name, ConstantLabelText, 0d);
            return;
        }

        foreach (ValueSeries s in series)
        {
            WriteSample(writer, Name, s.LabelText, Volatile.Read(ref s.Value));
        }
    }
}

/// <summary>Synchronous <see cref="Gauge{T}"/>: last value wins.</summary>
internal sealed class LastValueState(Instrument instrument) : SyncInstrumentState<ValueSeries>(instrument, MetricKind.Gauge)
{
    protected override ValueSeries CreateSeries(KeyValuePair<string, string>[] labels, string labelText) => new(labels, labelText);

    protected override void Update(ValueSeries series, double value) => Volatile.Write(ref series.Value, value);

    public override void Write(TextWriter writer)
    {
        WriteHeader(writer, Name, Help, TypeName);
        ValueSeries[] series = SnapshotSorted();
        if (series.Length == 0)
        {
            WriteSample(writer, Name, ConstantLabelText, 0d);
            return;
        }

        foreach (ValueSeries s in series)
        {
            WriteSample(writer, Name, s.LabelText, Volatile.Read(ref s.Value));
        }
    }
}

internal sealed class HistogramState : SyncInstrumentState<HistogramSeries>
{
    private readonly double[] bounds;
    private readonly string[] leLabels;

    public HistogramState(Instrument instrument, double[] bounds)
        : base(instrument, MetricKind.Histogram)
    {
        this.bounds = bounds;
        leLabels = new string[bounds.Length + 1];
        for (int i = 0; i < bounds.Length; i++)
        {
            leLabels[i] = "le=\"" + PrometheusText.FormatDouble(bounds[i]) + "\"";
        }

        leLabels[^1] = "le=\"+Inf\"";
    }

    public IReadOnlyList<double> Bounds => bounds;

    protected override HistogramSeries CreateSeries(KeyValuePair<string, string>[] labels, string labelText) =>
        new(labels, labelText, bounds.Length);

    protected override void Update(HistogramSeries series, double value)
    {
        // Upper bounds are inclusive (value <= le), like client_golang; NaN goes to +Inf.
        int index;
        if (double.IsNaN(value))
        {
            index = bounds.Length;
        }
        else
        {
            index = Array.BinarySearch(bounds, value);
            if (index < 0)
            {
                index = ~index;
            }
        }

        Interlocked.Increment(ref series.Counts[index]);
        Atomic.Add(ref series.Sum, value);
    }

    public override void Write(TextWriter writer)
    {
        WriteHeader(writer, Name, Help, TypeName);
        HistogramSeries[] series = SnapshotSorted();
        if (series.Length == 0)
        {
            series = [CreateSeries(ConstantLabels, ConstantLabelText)];
        }

        string bucketName = Name + "_bucket";
        foreach (HistogramSeries s in series)
        {
            string prefix = s.LabelText.Length == 0 ? string.Empty : s.LabelText + ",";
            long cumulative = 0;
            for (int i = 0; i < s.Counts.Length; i++)
            {
                cumulative += Interlocked.Read(ref s.Counts[i]);
                WriteSample(writer, bucketName, prefix + leLabels[i], cumulative);
            }

            WriteSample(writer, Name + "_sum", s.LabelText, Volatile.Read(ref s.Sum));
            WriteSample(writer, Name + "_count", s.LabelText, cumulative);
        }
    }
}

/// <summary>Observable instruments: the values reported by the callbacks during the current scrape.</summary>
internal sealed class ObservableState(Instrument instrument, MetricKind kind) : InstrumentState(instrument, kind)
{
    private readonly Dictionary<string, ValueSeries> current = new(StringComparer.Ordinal);
    private readonly Lock gate = new();

    public override void BeginCollect()
    {
        lock (gate)
        {
            current.Clear();
        }
    }

    public override void Record(double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        KeyValuePair<string, string>[] labels = NormalizeLabels(tags);
        string labelText = PrometheusText.RenderLabels(labels);
        lock (gate)
        {
            if (!current.TryGetValue(labelText, out ValueSeries? series))
            {
                series = new ValueSeries(labels, labelText);
                current.Add(labelText, series);
            }

            series.Value = value; // observations are absolute values; last one wins
        }
    }

    public override void Write(TextWriter writer)
    {
        ValueSeries[] series;
        lock (gate)
        {
            series = [.. current.Values];
        }

        Array.Sort(series, Series.Compare);
        WriteHeader(writer, Name, Help, TypeName);
        foreach (ValueSeries s in series)
        {
            WriteSample(writer, Name, s.LabelText, s.Value);
        }
    }
}

internal static class Atomic
{
    /// <summary>Lock-free <c>location += value</c> for doubles (bitwise CAS, so NaN cannot spin forever).</summary>
    public static void Add(ref double location, double value)
    {
        double current = Volatile.Read(ref location);
        while (true)
        {
            double seen = Interlocked.CompareExchange(ref location, current + value, current);
            if (BitConverter.DoubleToInt64Bits(seen) == BitConverter.DoubleToInt64Bits(current))
            {
                return;
            }

            current = seen;
        }
    }
}
