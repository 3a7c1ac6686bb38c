using System.Globalization;
using System.Text;
using System.Text.Json;

namespace ProxyPlanes.Bench;

/// <summary>Writes benchmark results as a Markdown table, CSV, JSON and SVG plots.</summary>
public static class BenchReport
{
    public static string Markdown(IReadOnlyList<BenchResult> results, string machine)
    {
        var md = new StringBuilder();
        md.Append(CultureInfo.InvariantCulture, $"Machine: {machine}\n\n{Worker(results)}\n\n");
        md.Append("| mode | services × endpoints | cold sync | full resync | periodic sync, nothing changed p50 / max | floor (tool alone) | overhead | single change p50 / p90 / p99 / max | endpoint change / service added p50 | change floor (tool alone) p50 | churn offered → absorbed, p99 (bounded) | peak RSS | CPU | kernel objects | connect first / last service |\n");
        md.Append("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | --- | --- |\n");
        foreach (var r in results)
        {
            var i = r.Incremental;
            md.Append(CultureInfo.InvariantCulture,
                $"| {r.Mode} | {r.Services} × {r.EndpointsPerService} | {Ms(r.ColdSyncMs)} | {Ms(r.FullResyncMs)} | {Ms(r.PeriodicNoOp.P50)} / {Ms(r.PeriodicNoOp.Max)} | {(r.FloorMs > 0 ? Ms(r.FloorMs) : "–")} | {(r.FloorMs > 0 ? $"{r.OverheadRatio:0.00}×" : "–")} " +
                $"| {Ms(i.P50)} / {Ms(i.P90)} / {Ms(i.P99)} / {Ms(i.Max)} | {EndpointChange(r)} / {Kind(r, "service added")} | {(r.ChangeFloor.Count == 0 ? "–" : Ms(r.ChangeFloor.P50))} " +
                $"| {r.Churn.OfferedPerSecond:0}/s → {r.Churn.AchievedPerSecond:0.0}/s, {Ms(r.Churn.Latency.P99)} ({(r.Churn.Bounded ? "yes" : "no")}) " +
                $"| {r.PeakRssMb:0} MiB | {r.CpuSeconds:0.0} s | {string.Join(", ", r.KernelObjects.Select(kv => $"{kv.Value} {kv.Key}"))} " +
                $"| {r.FirstServiceConnectMs:0.000} / {r.LastServiceConnectMs:0.000} ms |\n");
        }
        return md.ToString();
    }

    /// <summary>
    /// The runtime of the workers that measured <paramref name="results"/>, as a line under the machine: one when they
    /// agree (every run of the lab has one worker), otherwise each row's, so a table never mixes them unsaid.
    /// </summary>
    internal static string Worker(IReadOnlyList<BenchResult> results)
    {
        var runtimes = results.Select(r => Runtime(r)).Distinct().ToList();
        return runtimes.Count <= 1
            ? $"Worker: {runtimes.FirstOrDefault("none")}"
            : $"Workers differ: {string.Join(", ", results.Select(r => $"{r.Mode} {r.Services} × {r.EndpointsPerService} {Runtime(r)}"))}";
    }

    private static string Runtime(BenchResult r) => r.Runtime.Length > 0 ? r.Runtime : "not recorded";

    /// <summary>The endpoint kinds' p50s as a range ("0.49–0.59 ms"), or one value when they agree to the shown precision.</summary>
    private static string EndpointChange(BenchResult r)
    {
        var p50s = r.IncrementalByKind.Where(kv => kv.Key.StartsWith("endpoint", StringComparison.Ordinal) && kv.Value.Count > 0).Select(kv => kv.Value.P50).ToList();
        if (p50s.Count == 0) return "–";
        var (low, high) = (Ms(p50s.Min()), Ms(p50s.Max()));
        return low == high ? low : $"{low}–{high}";
    }

    private static string Kind(BenchResult r, string kind) => r.IncrementalByKind.TryGetValue(kind, out var s) && s.Count > 0 ? Ms(s.P50) : "–";

    public static string Csv(IReadOnlyList<BenchResult> results)
    {
        var csv = new StringBuilder("mode,services,endpoints,cold_sync_ms,full_resync_ms,periodic_noop_p50_ms,periodic_noop_max_ms,floor_ms,overhead,incremental_p50_ms,incremental_p90_ms,incremental_p99_ms,incremental_max_ms,change_floor_p50_ms,churn_offered,churn_absorbed,churn_p99_ms,churn_bounded,peak_rss_mb,cpu_s,first_connect_ms,last_connect_ms,runtime\n");
        foreach (var r in results)
            csv.Append(CultureInfo.InvariantCulture,
                $"{r.Mode},{r.Services},{r.EndpointsPerService},{r.ColdSyncMs:0.###},{r.FullResyncMs:0.###},{r.PeriodicNoOp.P50:0.###},{r.PeriodicNoOp.Max:0.###},{r.FloorMs:0.###},{r.OverheadRatio:0.###}," +
                $"{r.Incremental.P50:0.###},{r.Incremental.P90:0.###},{r.Incremental.P99:0.###},{r.Incremental.Max:0.###},{r.ChangeFloor.P50:0.###}," +
                $"{r.Churn.OfferedPerSecond:0.###},{r.Churn.AchievedPerSecond:0.###},{r.Churn.Latency.P99:0.###},{r.Churn.Bounded.ToString().ToLowerInvariant()}," +
                $"{r.PeakRssMb:0.#},{r.CpuSeconds:0.###},{r.FirstServiceConnectMs:0.####},{r.LastServiceConnectMs:0.####},{Runtime(r)}\n");
        return csv.ToString();
    }

    public static string Json(IReadOnlyList<BenchResult> results) => JsonSerializer.Serialize(results.ToList(), BenchJsonContext.Default.ListBenchResult);

    /// <summary>A line chart: one line per mode, x = services (as measured), y = milliseconds.</summary>
    public static string Svg(string title, IReadOnlyList<BenchResult> results, Func<BenchResult, double> value) =>
        LineChart(title, "services",
            [.. results.Select(r => r.Mode).Distinct().Select(mode => new ChartSeries(mode, [.. results.Where(r => r.Mode == mode).OrderBy(r => r.Services).Select(r => ((double)r.Services, value(r)))]))],
            [.. results.Select(r => (double)r.Services).Distinct().Order()], x => x.ToString("0", CultureInfo.InvariantCulture), Ms);

    /// <summary>
    /// A line chart on linear axes from 0 (so distances read true): one line per series, a tick on
    /// the x axis at each of <paramref name="xTicks"/>, dots on the points when there are few.
    /// </summary>
    public static string LineChart(string title, string xLabel, IReadOnlyList<ChartSeries> series, IReadOnlyList<double> xTicks, Func<double, string> formatX, Func<double, string> formatY)
    {
        const int width = 720, height = 420, left = 70, right = 150, top = 40, bottom = 50;
        var points = series.SelectMany(s => s.Points).ToArray();
        var maxX = Math.Max(xTicks.Count == 0 ? 1 : xTicks.Max(), points.Length == 0 ? 1 : points.Max(p => p.X));
        var max = Math.Max(1, points.Length == 0 ? 1 : points.Max(p => p.Y)) * 1.1;
        double X(double x) => left + x * (width - left - right) / maxX;
        double Y(double y) => top + (height - top - bottom) * (1 - y / max);
        string[] colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];
        var svg = new StringBuilder();
        svg.Append(CultureInfo.InvariantCulture, $"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n");
        svg.Append(CultureInfo.InvariantCulture, $"<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>\n<text x=\"{width / 2}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{Escape(title)}</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{height - bottom}\" x2=\"{width - right}\" y2=\"{height - bottom}\" stroke=\"black\"/>\n<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{height - bottom}\" stroke=\"black\"/>\n");
        for (var t = 0; t <= 4; t++)
        {
            var y = max * t / 4;
            svg.Append(CultureInfo.InvariantCulture, $"<line x1=\"{left}\" y1=\"{Y(y):0.#}\" x2=\"{width - right}\" y2=\"{Y(y):0.#}\" stroke=\"#ddd\"/><text x=\"{left - 6}\" y=\"{Y(y) + 4:0.#}\" text-anchor=\"end\">{formatY(y)}</text>\n");
        }
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{left}\" y=\"{height - bottom + 18}\" text-anchor=\"middle\">0</text>\n");
        foreach (var tick in xTicks)
            svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{X(tick):0.#}\" y=\"{height - bottom + 18}\" text-anchor=\"middle\">{formatX(tick)}</text>\n");
        svg.Append(CultureInfo.InvariantCulture, $"<text x=\"{(left + width - right) / 2}\" y=\"{height - 10}\" text-anchor=\"middle\">{Escape(xLabel)}</text>\n");
        for (var m = 0; m < series.Count; m++)
        {
            var color = colors[m % colors.Length];
            var line = series[m].Points.Select(p => (X(p.X), Y(p.Y))).ToArray();
            svg.Append(CultureInfo.InvariantCulture, $"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{string.Join(' ', line.Select(p => $"{p.Item1:0.#},{p.Item2:0.#}"))}\"/>\n");
            if (line.Length <= 30)
                foreach (var (x, y) in line) svg.Append(CultureInfo.InvariantCulture, $"<circle cx=\"{x:0.#}\" cy=\"{y:0.#}\" r=\"3.5\" fill=\"{color}\"/>\n");
            svg.Append(CultureInfo.InvariantCulture, $"<rect x=\"{width - right + 15}\" y=\"{top + 20 * m}\" width=\"12\" height=\"12\" fill=\"{color}\"/><text x=\"{width - right + 32}\" y=\"{top + 20 * m + 11}\">{Escape(series[m].Name)}</text>\n");
        }
        return svg.Append("</svg>\n").ToString();
    }

    internal static string Ms(double ms) =>
        ms >= 10000 ? $"{ms / 1000:0.#} s" : ms >= 100 ? $"{ms:0} ms" : ms >= 1 ? $"{ms:0.#} ms" : ms >= 0.01 || ms == 0 ? $"{ms:0.##} ms" : $"{ms * 1000:0.#} µs";

    private static string Escape(string text) => text.Replace("&", "&amp;").Replace("<", "&lt;");
}

/// <summary>One line of a <see cref="BenchReport.LineChart"/>: its legend and its points.</summary>
public sealed record ChartSeries(string Name, IReadOnlyList<(double X, double Y)> Points);
