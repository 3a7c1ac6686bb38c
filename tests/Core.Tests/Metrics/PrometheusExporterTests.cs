using System.Diagnostics.Metrics;
using ProxyPlanes.Core.Metrics;
using static ProxyPlanes.Core.Tests.Metrics.MetricsTestHelpers;

namespace ProxyPlanes.Core.Tests.Metrics;

public class PrometheusExporterTests
{
    private static KeyValuePair<string, object?> Tag(string key, object? value) => new(key, value);

    [Fact]
    public void Scrape_CounterWithTags_RendersSumPerTagSet()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Counter<long> counter = meter.CreateCounter<long>("requests_total", "{request}", "Requests handled");

        counter.Add(2, Tag("code", "200"));
        counter.Add(3, Tag("code", "200"));
        counter.Add(1, Tag("code", "500"));

        Assert.Equal(
            "# HELP requests_total Requests handled\n" +
            "# TYPE requests_total counter\n" +
            "requests_total{code=\"200\"} 5\n" +
            "requests_total{code=\"500\"} 1\n",
            exporter.Scrape());
    }

    [Fact]
    public void Scrape_SameTagsInDifferentOrder_SameSeriesWithSortedLabels()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Counter<int> counter = meter.CreateCounter<int>("c_total", null, "c");

        counter.Add(1, Tag("b", "2"), Tag("a", "1"));
        counter.Add(1, Tag("a", "1"), Tag("b", "2"));
        counter.Add(1, Tag("a", 1), Tag("b", 2L)); // non-string values rendering identically share the series

        Assert.Equal(3, Sample(exporter.Scrape(), "c_total{a=\"1\",b=\"2\"}"));
    }

    [Fact]
    public void Scrape_CounterNegativeIncrement_Ignored()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Counter<double> counter = meter.CreateCounter<double>("c_total", null, "c");

        counter.Add(1.5);
        counter.Add(-1);

        Assert.Equal(1.5, Sample(exporter.Scrape(), "c_total"));
    }

    [Fact]
    public void Scrape_UpDownCounterAndGauge_RenderedAsGauges()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        UpDownCounter<int> inflight = meter.CreateUpDownCounter<int>("inflight", null, "In flight");
        Gauge<double> temperature = meter.CreateGauge<double>("temperature_celsius", "Cel", "Temperature");

        inflight.Add(5, Tag("pool", "a"));
        inflight.Add(-7, Tag("pool", "a"));
        temperature.Record(20, Tag("room", "x"));
        temperature.Record(21.5, Tag("room", "x"));

        string text = exporter.Scrape();
        Dictionary<string, string> types = ParseTypes(text);
        Assert.Equal("gauge", types["inflight"]);
        Assert.Equal("gauge", types["temperature_celsius"]);
        Assert.Equal(-2, Sample(text, "inflight{pool=\"a\"}"));
        Assert.Equal(21.5, Sample(text, "temperature_celsius{room=\"x\"}"));
    }

    [Fact]
    public void Scrape_Histogram_BucketsCumulativeWithInfSumAndCount()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Histogram<double> histogram = meter.CreateHistogram(
            "latency_seconds", "s", "Latency", null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.001, 0.5, 2] });

        histogram.Record(0.0005, Tag("op", "x"));
        histogram.Record(0.5, Tag("op", "x"));   // equal to a bound: counted in that bucket (le is inclusive)
        histogram.Record(1, Tag("op", "x"));
        histogram.Record(100, Tag("op", "x"));   // only in +Inf

        Assert.Equal(
            "# HELP latency_seconds Latency\n" +
            "# TYPE latency_seconds histogram\n" +
            "latency_seconds_bucket{op=\"x\",le=\"0.001\"} 1\n" +
            "latency_seconds_bucket{op=\"x\",le=\"0.5\"} 2\n" +
            "latency_seconds_bucket{op=\"x\",le=\"2\"} 3\n" +
            "latency_seconds_bucket{op=\"x\",le=\"+Inf\"} 4\n" +
            "latency_seconds_sum{op=\"x\"} 101.5005\n" +
            "latency_seconds_count{op=\"x\"} 4\n",
            exporter.Scrape());
    }

    [Fact]
    public void Scrape_HistogramWithoutAdvice_UsesPrometheusDefaultBuckets()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateHistogram<double>("h_seconds", null, "h").Record(0.3);

        string text = exporter.Scrape();

        string[] les = Lines(text).Where(l => l.StartsWith("h_seconds_bucket", StringComparison.Ordinal))
            .Select(l => l[(l.IndexOf("le=\"", StringComparison.Ordinal) + 4)..l.LastIndexOf('"')]).ToArray();
        Assert.Equal(["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"], les);
        Assert.Equal(1, Sample(text, "h_seconds_bucket{le=\"0.5\"}"));
        Assert.Equal(0, Sample(text, "h_seconds_bucket{le=\"0.25\"}"));
    }

    [Fact]
    public void Scrape_LongHistogramWithAdvice_UsesAdvisedBuckets()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateHistogram("size_bytes", "By", "Size", null, new InstrumentAdvice<long> { HistogramBucketBoundaries = [10, 100] }).Record(50);

        string text = exporter.Scrape();

        Assert.Equal(0, Sample(text, "size_bytes_bucket{le=\"10\"}"));
        Assert.Equal(1, Sample(text, "size_bytes_bucket{le=\"100\"}"));
        Assert.Equal(1, Sample(text, "size_bytes_bucket{le=\"+Inf\"}"));
        Assert.Equal(50, Sample(text, "size_bytes_sum"));
    }

    [Fact]
    public void Scrape_LabelValuesWithSpecialCharacters_Escaped()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("c_total", null, "Help with \\ backslash\nand newline").Add(1, Tag("path", "C:\\dir \"q\"\nnext"));

        string text = exporter.Scrape();

        Assert.Contains("# HELP c_total Help with \\\\ backslash\\nand newline\n", text);
        Assert.Contains("c_total{path=\"C:\\\\dir \\\"q\\\"\\nnext\"} 1\n", text);
    }

    [Fact]
    public void Scrape_ManyInstrumentsAndSeries_SortedByNameThenLabelsAndStable()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Counter<long> zeta = meter.CreateCounter<long>("zeta_total", null, "z");
        Counter<long> alpha = meter.CreateCounter<long>("alpha_total", null, "a");
        meter.CreateObservableGauge("middle", () => new[]
        {
            new Measurement<int>(2, Tag("k", "b")),
            new Measurement<int>(1, Tag("k", "a")),
        }, null, "m");

        zeta.Add(1);
        alpha.Add(1, Tag("x", "2"));
        alpha.Add(1, Tag("x", "10"));
        alpha.Add(1, Tag("x", "1"));
        alpha.Add(1, Tag("w", "z"));

        string first = exporter.Scrape();
        string[] samples = Lines(first).Where(l => !l.StartsWith('#')).ToArray();
        Assert.Equal(
            [
                "alpha_total{w=\"z\"} 1",
                "alpha_total{x=\"1\"} 1",
                "alpha_total{x=\"10\"} 1",
                "alpha_total{x=\"2\"} 1",
                "middle{k=\"a\"} 1",
                "middle{k=\"b\"} 2",
                "zeta_total 1",
            ],
            samples);
        Assert.Equal(first, exporter.Scrape());
    }

    [Fact]
    public void Scrape_NeverRecordedInstruments_HeaderAndZeroSamples()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("idle_total", null, "Idle counter");
        meter.CreateUpDownCounter<long>("idle_level", null, "Idle level");
        meter.CreateHistogram("idle_seconds", "s", "Idle histogram", null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [1] });

        Assert.Equal(
            "# HELP idle_level Idle level\n" +
            "# TYPE idle_level gauge\n" +
            "idle_level 0\n" +
            "# HELP idle_seconds Idle histogram\n" +
            "# TYPE idle_seconds histogram\n" +
            "idle_seconds_bucket{le=\"1\"} 0\n" +
            "idle_seconds_bucket{le=\"+Inf\"} 0\n" +
            "idle_seconds_sum 0\n" +
            "idle_seconds_count 0\n" +
            "# HELP idle_total Idle counter\n" +
            "# TYPE idle_total counter\n" +
            "idle_total 0\n",
            exporter.Scrape());
    }

    [Fact]
    public void Scrape_ObservableInstruments_CollectedAtEachScrape()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        int value = 1;
        meter.CreateObservableGauge("level", () => value, null, "Level");
        meter.CreateObservableCounter("ticks_total", () => (long)value * 10, null, "Ticks");
        meter.CreateObservableUpDownCounter("balance", () => -value, null, "Balance");

        string first = exporter.Scrape();
        value = 3;
        string second = exporter.Scrape();

        Assert.Equal(1, Sample(first, "level"));
        Assert.Equal(3, Sample(second, "level"));
        Assert.Equal(30, Sample(second, "ticks_total"));
        Assert.Equal(-3, Sample(second, "balance"));
        Dictionary<string, string> types = ParseTypes(second);
        Assert.Equal("gauge", types["level"]);
        Assert.Equal("counter", types["ticks_total"]);
        Assert.Equal("gauge", types["balance"]);
    }

    [Fact]
    public void Scrape_ObservableSeriesNoLongerReported_Disappears()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        string[] keys = ["a", "b"];
        meter.CreateObservableGauge("g", () => keys.Select(k => new Measurement<int>(1, Tag("k", k))), null, "g");

        string first = exporter.Scrape();
        keys = ["b"];
        string second = exporter.Scrape();

        Assert.Contains("g{k=\"a\"} 1\n", first);
        Assert.DoesNotContain("g{k=\"a\"}", second);
        Assert.Contains("g{k=\"b\"} 1\n", second);
    }

    [Fact]
    public void Scrape_ObservableCallbackThrows_OtherMetricsStillRendered()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Func<int> broken = () => throw new InvalidOperationException("boom");
        meter.CreateObservableGauge("broken", broken, null, "Broken");
        meter.CreateObservableGauge("healthy", () => 7, null, "Healthy");

        string text = exporter.Scrape();

        Assert.Equal(7, Sample(text, "healthy"));
        Assert.Contains("# TYPE broken gauge\n", text);
    }

    [Fact]
    public void Scrape_UnitGiven_NotAppendedToName()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("bytes_sent_total", "By", "Bytes").Add(1);

        Dictionary<string, string> types = ParseTypes(exporter.Scrape());

        Assert.Equal(["bytes_sent_total"], types.Keys);
    }

    [Fact]
    public void Scrape_MeterAndInstrumentTags_AddedAsLabels()
    {
        using var meter = new Meter(new MeterOptions("ProxyPlanes.Tests." + Guid.NewGuid().ToString("N")) { Tags = [Tag("node", "n1")] });
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("c_total", null, "c", [Tag("zone", "z")]).Add(1, Tag("code", "ok"));

        Assert.Equal(1, Sample(exporter.Scrape(), "c_total{code=\"ok\",node=\"n1\",zone=\"z\"}"));
    }

    [Fact]
    public void Scrape_MeterNameFilter_OnlySelectedMetersExported()
    {
        string name = "ProxyPlanes.Tests.Filter." + Guid.NewGuid().ToString("N");
        using var selected = new Meter(name);
        using Meter other = NewMeter();
        using var exporter = new PrometheusExporter(name, includeProcessMetrics: false);
        selected.CreateCounter<long>("selected_total", null, "s").Add(1);
        other.CreateCounter<long>("other_total", null, "o").Add(1);

        string text = exporter.Scrape();

        Assert.Contains("selected_total 1\n", text);
        Assert.DoesNotContain("other_total", text);
    }

    [Fact]
    public void Scrape_InstrumentCreatedBeforeExporter_Exported()
    {
        using Meter meter = NewMeter();
        Counter<long> counter = meter.CreateCounter<long>("early_total", null, "Early");
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);

        counter.Add(4);

        Assert.Equal(4, Sample(exporter.Scrape(), "early_total"));
    }

    [Fact]
    public void Scrape_MeterDisposed_InstrumentsRemoved()
    {
        Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("gone_total", null, "Gone").Add(1);
        Assert.Contains("gone_total", exporter.Scrape());

        meter.Dispose();

        Assert.Equal(string.Empty, exporter.Scrape());
    }

    [Fact]
    public void Scrape_DuplicateInstrumentName_FirstWinsAndNoDuplicateFamily()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        meter.CreateCounter<long>("dup_total", null, "first").Add(1);
        meter.CreateCounter<long>("dup_total", "s", "second").Add(5);

        string text = exporter.Scrape();

        Assert.Single(ParseTypes(text));
        Assert.Contains("# HELP dup_total first\n", text);
    }

    [Fact]
    public void Scrape_ConcurrentRecording_NoLostUpdates()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Counter<long> counter = meter.CreateCounter<long>("hits_total", null, "Hits");
        Histogram<double> histogram = meter.CreateHistogram(
            "work_seconds", "s", "Work", null, new InstrumentAdvice<double> { HistogramBucketBoundaries = [0.5] });
        const int threads = 8;
        const int perThread = 20_000;

        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            for (int i = 0; i < perThread; i++)
            {
                counter.Add(1, Tag("shard", (i % 4).ToString(System.Globalization.CultureInfo.InvariantCulture)));
                histogram.Record(0.25);
                if (i % 5000 == 0)
                {
                    _ = exporter.Scrape(); // scrapes racing with recording must be safe
                }
            }
        });

        string text = exporter.Scrape();
        double total = Enumerable.Range(0, 4).Sum(s => Sample(text, $"hits_total{{shard=\"{s}\"}}"));
        Assert.Equal(threads * perThread, total);
        Assert.Equal(threads * perThread, Sample(text, "work_seconds_count"));
        Assert.Equal(threads * perThread * 0.25, Sample(text, "work_seconds_sum"));
    }

    [Fact]
    public void Record_KnownTagSets_DoesNotAllocate()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter([meter], includeProcessMetrics: false);
        Counter<long> counter = meter.CreateCounter<long>("alloc_total", null, "Alloc");
        Histogram<double> histogram = meter.CreateHistogram(
            "alloc_seconds", "s", "Alloc", null, new InstrumentAdvice<double> { HistogramBucketBoundaries = ProxyMetrics.SyncDurationBuckets });
        var mode = Tag("mode", "iptables");
        var kind = Tag("kind", "full");

        void RecordAll(int iterations)
        {
            for (int i = 0; i < iterations; i++)
            {
                counter.Add(1);
                counter.Add(1, mode, kind);
                histogram.Record(0.003, kind, mode);
            }
        }

        RecordAll(1_000); // create series, JIT
        long before = GC.GetAllocatedBytesForCurrentThread();
        RecordAll(10_000);
        long allocated = GC.GetAllocatedBytesForCurrentThread() - before;

        Assert.Equal(0, allocated);
        string text = exporter.Scrape();
        Assert.Equal(11_000, Sample(text, "alloc_total"));
        Assert.Equal(11_000, Sample(text, "alloc_total{kind=\"full\",mode=\"iptables\"}"));
        Assert.Equal(11_000, Sample(text, "alloc_seconds_count{kind=\"full\",mode=\"iptables\"}"));
    }

    [Fact]
    public void Scrape_ProcessMetricsEnabled_GoStyleProcessFamilies()
    {
        using Meter meter = NewMeter();
        using var exporter = new PrometheusExporter(meter);

        string text = exporter.Scrape();

        Dictionary<string, string> types = ParseTypes(text);
        Assert.Equal("gauge", types["process_start_time_seconds"]);
        Assert.Equal("gauge", types["process_resident_memory_bytes"]);
        Assert.Equal("counter", types["process_cpu_seconds_total"]);
        double start = Sample(text, "process_start_time_seconds");
        Assert.InRange(start, DateTimeOffset.UtcNow.AddDays(-30).ToUnixTimeSeconds(), DateTimeOffset.UtcNow.ToUnixTimeSeconds() + 1);
        Assert.True(Sample(text, "process_resident_memory_bytes") > 0);
        Assert.True(Sample(text, "process_cpu_seconds_total") > 0);
    }

    [Fact]
    public void WriteTo_AfterDispose_Throws()
    {
        var exporter = new PrometheusExporter([NewMeter()], includeProcessMetrics: false);
        exporter.Dispose();

        Assert.Throws<ObjectDisposedException>(() => exporter.Scrape());
    }
}
