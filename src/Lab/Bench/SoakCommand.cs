using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Bench;

/// <summary>
/// `proxyplanes-lab soak`: the benchmark's sandbox, synthetic cluster and worker held at a steady rate
/// of changes for minutes (issue 15: 100 changes/s for 10 minutes at 5,000 services). Reports whether
/// every change reached the kernel, each change's latency, and the worker's RSS over time with its
/// slope; exits 1 with one line naming each target missed.
/// </summary>
public static class SoakCommand
{
    public static Command Create()
    {
        var command = new Command("soak", "Hold one mode at a steady rate of changes for minutes: every change in the kernel, latency, RSS slope (root)");
        var mode = new Option<string>("--mode") { Description = "The mode to soak", DefaultValueFactory = _ => "nftables" };
        var services = new Option<int>("--services") { Description = "Cluster size (services)", DefaultValueFactory = _ => 5000 };
        var endpoints = new Option<int>("--endpoints") { Description = "Endpoints per service", DefaultValueFactory = _ => 2 };
        var rate = new Option<double>("--rate") { Description = "Changes per second (each a rolling pod: one endpoint replaced)", DefaultValueFactory = _ => 100 };
        var seconds = new Option<double>("--seconds") { Description = "How long to make changes", DefaultValueFactory = _ => 600 };
        var warmup = new Option<double?>("--warmup") { Description = "Seconds left out of the RSS slope (default: the first fifth of --seconds)" };
        var maxLatency = new Option<double>("--max-latency") { Description = "Target: no change slower than this, milliseconds", DefaultValueFactory = _ => 2000 };
        var maxSlope = new Option<double>("--max-rss-slope") { Description = "Target: RSS slope after warm-up at most this, MiB per minute", DefaultValueFactory = _ => 1 };
        var output = new Option<string>("--out") { Description = "Results folder", DefaultValueFactory = _ => "soak-results" };
        var worker = new Option<string?>("--worker") { Description = WorkerBinary.OptionDescription };
        foreach (var option in new Option[] { mode, services, endpoints, rate, seconds, warmup, maxLatency, maxSlope, output, worker }) command.Options.Add(option);
        command.SetAction(async (result, token) =>
        {
            try
            {
                var modeName = result.GetValue(mode)!;
                var workerBinary = WorkerBinary.Resolve(result.GetValue(worker));
                await BenchCommand.RequireRunnableAsync(modeName, token);
                var size = result.GetValue(services);
                if (size is < 2 or > 100_000) throw new UsageException("--services must be from 2 to 100000");
                var perService = result.GetValue(endpoints);
                if (perService is < 1 or > 1000) throw new UsageException("--endpoints must be from 1 to 1000");
                var perSecond = result.GetValue(rate);
                if (perSecond is <= 0 or > 10_000) throw new UsageException("--rate must be above 0 and at most 10000");
                var duration = result.GetValue(seconds);
                if (duration is < 1 or > 24 * 3600) throw new UsageException("--seconds must be from 1 to 86400");
                var warm = result.GetValue(warmup) ?? duration / 5;
                if (warm < 0 || warm >= duration) throw new UsageException("--warmup must be at least 0 and less than --seconds");
                var soak = new SoakSettings(perSecond, TimeSpan.FromSeconds(duration), TimeSpan.FromSeconds(warm),
                    // About 20 samples in a short run, one every 5 s in a long one.
                    TimeSpan.FromSeconds(Math.Clamp(duration / 20, 0.25, 5)), result.GetValue(maxLatency), result.GetValue(maxSlope));
                return await RunAsync(workerBinary, modeName, size, perService, soak, result.GetValue(output)!, token);
            }
            catch (UsageException e)
            {
                Console.Error.WriteLine($"{ProxyProcess.Lab}: {e.Message}");
                return 2;
            }
        });
        return command;
    }

    private static async Task<int> RunAsync(WorkerBinary worker, string mode, int services, int endpoints, SoakSettings soak, string output, CancellationToken cancellationToken)
    {
        Console.Error.WriteLine($"Soaking {mode} at {services} services × {endpoints} endpoints: {soak.Rate:0.#} changes/s for {soak.Duration.TotalSeconds:0.#} s; worker: {worker}");
        await using var sandbox = await BenchSandbox.CreateAsync(worker, cancellationToken);
        var json = await sandbox.RunWorkerAsync(sandbox.Settings(mode, services, endpoints) with { Soak = soak }, cancellationToken);
        if (json is null) return 1;
        var result = JsonSerializer.Deserialize(json, BenchJsonContext.Default.SoakResult)!;

        var machine = BenchCommand.Machine();
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "soak.md"), Markdown(result, machine));
        File.WriteAllText(Path.Combine(output, "soak.json"), json);
        File.WriteAllText(Path.Combine(output, "soak-rss.csv"),
            "seconds,rss_mib,peak_mib\n" + string.Concat(result.Rss.Select(s => string.Create(CultureInfo.InvariantCulture, $"{s.Seconds:0.###},{s.RssMib:0.##},{s.PeakMib:0.##}\n"))));
        File.WriteAllText(Path.Combine(output, "soak-latency.csv"),
            "seconds,changes,p50_ms,max_ms\n" + string.Concat(result.LatencyOverTime.Select(s => string.Create(CultureInfo.InvariantCulture, $"{s.Seconds:0.###},{s.Changes},{s.P50Ms:0.###},{s.MaxMs:0.###}\n"))));
        File.WriteAllText(Path.Combine(output, "soak-rss.svg"), RssChart(result));
        File.WriteAllText(Path.Combine(output, "soak-latency.svg"), LatencyChart(result));
        Console.WriteLine(Markdown(result, machine));
        Console.WriteLine($"Results in {Path.GetFullPath(output)}: soak.md, soak.json, soak-rss.csv, soak-latency.csv, soak-rss.svg, soak-latency.svg");
        var misses = Misses(result);
        if (misses.Count == 0) return 0;
        Console.Error.WriteLine($"{ProxyProcess.Lab} soak: missed: {string.Join("; ", misses)}");
        return 1;
    }

    public static string Markdown(SoakResult r, string machine)
    {
        var s = r.Settings;
        var slope = r.RssSlopeMibPerMinute is { } value ? $"{value:+0.###;-0.###;0} MiB/min ({r.RssSamplesInSlope} samples)" : $"none ({r.RssSamplesInSlope} samples)";
        var rss = r.Rss.Count == 0 ? "none" : $"{r.Rss.Min(x => x.RssMib):0} → {r.Rss.Max(x => x.RssMib):0} MiB (first {r.Rss[0].RssMib:0}, last {r.Rss[^1].RssMib:0}; {r.Rss.Count} samples every {s.SampleEvery.TotalSeconds:0.##} s)";
        var md = new StringBuilder();
        md.Append(CultureInfo.InvariantCulture, $"Machine: {machine}\n\n");
        md.Append(CultureInfo.InvariantCulture, $"Worker: {r.Runtime}\n\n");
        md.Append(CultureInfo.InvariantCulture, $"Soak: {r.Mode}, {r.Services} services × {r.EndpointsPerService} endpoints, {s.Rate:0.#} changes/s for {s.Duration.TotalSeconds:0.#} s (each change one endpoint replaced)\n\n");
        md.Append("| measure | measured | target |\n| --- | --- | --- |\n");
        void Row(string measure, string measured, string target = "") => md.Append(CultureInfo.InvariantCulture, $"| {measure} | {measured} | {target} |\n");
        Row("changes sent", string.Create(CultureInfo.InvariantCulture, $"{r.ChangesSent} in {r.Seconds:0.#} s = {r.AchievedPerSecond:0.##}/s"), string.Create(CultureInfo.InvariantCulture, $"≥ {s.Rate * SoakSettings.MinRateShare:0.##}/s"));
        Row("changes confirmed in the kernel (a sync carried them)", $"{r.ChangesConfirmed} of {r.ChangesSent}" + (r.Unconfirmed.Count > 0 ? $"; missing: {string.Join(", ", r.Unconfirmed)}" : ""), "all");
        Row("kernel endpoints after the soak (found / expected)", $"{r.KernelEndpointsFound} / {r.KernelEndpointsExpected}, {r.KernelMissingCount} missing, {r.KernelUnexpectedCount} unexpected"
            + (r.KernelMissing.Count + r.KernelUnexpected.Count > 0 ? $" ({string.Join(", ", r.KernelMissing.Select(e => "-" + e).Concat(r.KernelUnexpected.Select(e => "+" + e)))})" : ""), "equal");
        Row("change → kernel p50 / p90 / p99 / max", $"{BenchReport.Ms(r.Latency.P50)} / {BenchReport.Ms(r.Latency.P90)} / {BenchReport.Ms(r.Latency.P99)} / {BenchReport.Ms(r.Latency.Max)}", $"max ≤ {BenchReport.Ms(s.LatencyLimitMs)}");
        Row($"changes above {BenchReport.Ms(s.LatencyLimitMs)}", r.AboveLimit.ToString(CultureInfo.InvariantCulture), "0");
        Row("syncs (partial; changes per sync)", string.Create(CultureInfo.InvariantCulture, $"{r.Syncs} ({(r.Syncs == 0 ? 0 : r.ChangesConfirmed / (double)r.Syncs):0.#})"));
        Row($"RSS slope after the {s.Warmup.TotalSeconds:0.#} s warm-up (least squares)", slope, string.Create(CultureInfo.InvariantCulture, $"≤ {s.MaxRssSlopeMibPerMinute:0.###} MiB/min"));
        Row("RSS during the soak (VmRSS)", rss);
        Row("peak RSS (VmHWM, the cold sync included)", $"{r.PeakRssMib:0} MiB");
        Row("cold sync", BenchReport.Ms(r.ColdSyncMs));
        Row("CPU (whole worker)", $"{r.CpuSeconds:0.#} s");
        var misses = Misses(r);
        md.Append(CultureInfo.InvariantCulture, $"\n{(misses.Count == 0 ? "Every target met." : "Missed: " + string.Join("; ", misses))}\n");
        return md.ToString();
    }

    /// <summary>Each target the soak missed, in words; empty when it met them all.</summary>
    internal static List<string> Misses(SoakResult r)
    {
        var misses = new List<string>();
        var lost = r.ChangesSent - r.ChangesConfirmed;
        if (lost > 0) misses.Add($"{lost} of {r.ChangesSent} changes never reached the kernel (first: {r.Unconfirmed.FirstOrDefault()})");
        if (r.KernelMissingCount > 0 || r.KernelUnexpectedCount > 0)
            misses.Add($"the kernel's endpoints differ from the cluster's after the soak: {r.KernelMissingCount} missing, {r.KernelUnexpectedCount} unexpected");
        if (r.KernelEndpointsExpected == 0) misses.Add("the kernel check had no endpoints to look for");
        if (r.AboveLimit > 0) misses.Add($"{r.AboveLimit} changes took longer than {BenchReport.Ms(r.Settings.LatencyLimitMs)} to reach the kernel (max {BenchReport.Ms(r.Latency.Max)})");
        if (r.RssSlopeMibPerMinute is not { } slope) misses.Add($"too few RSS samples after the {r.Settings.Warmup.TotalSeconds:0.#} s warm-up to fit a slope ({r.RssSamplesInSlope})");
        else if (slope > r.Settings.MaxRssSlopeMibPerMinute)
            misses.Add(string.Create(CultureInfo.InvariantCulture, $"RSS grew {slope:0.###} MiB/min after warm-up (limit {r.Settings.MaxRssSlopeMibPerMinute:0.###} MiB/min)"));
        if (r.AchievedPerSecond < r.Settings.Rate * SoakSettings.MinRateShare)
            misses.Add(string.Create(CultureInfo.InvariantCulture, $"changes were made at {r.AchievedPerSecond:0.#}/s, below {SoakSettings.MinRateShare:P0} of the {r.Settings.Rate:0.#}/s asked"));
        return misses;
    }

    private static string RssChart(SoakResult r)
    {
        List<ChartSeries> series = [new("VmRSS", [.. r.Rss.Select(s => (s.Seconds, s.RssMib))])];
        var fitted = r.Rss.Where(s => s.Seconds >= r.Settings.Warmup.TotalSeconds && s.Seconds <= r.Seconds).ToArray();
        if (r.RssSlopeMibPerMinute is { } slope && fitted.Length >= 2)
        {
            // The least-squares line passes through the fitted samples' mean.
            var (meanT, meanR) = (fitted.Average(s => s.Seconds), fitted.Average(s => s.RssMib));
            double At(double t) => meanR + slope / 60 * (t - meanT);
            series.Add(new("fit after warm-up", [(fitted[0].Seconds, At(fitted[0].Seconds)), (fitted[^1].Seconds, At(fitted[^1].Seconds))]));
        }
        return BenchReport.LineChart($"Soak: worker RSS over time (MiB), {r.Mode} {r.Services} services", "seconds", series, Ticks(r.Seconds),
            x => x.ToString("0", CultureInfo.InvariantCulture), y => y.ToString("0", CultureInfo.InvariantCulture));
    }

    private static string LatencyChart(SoakResult r) =>
        BenchReport.LineChart($"Soak: change → kernel (ms), {r.Mode} {r.Services} services", "seconds",
            [new("max", [.. r.LatencyOverTime.Select(s => (s.Seconds, s.MaxMs))]), new("p50", [.. r.LatencyOverTime.Select(s => (s.Seconds, s.P50Ms))])],
            Ticks(r.Seconds), x => x.ToString("0", CultureInfo.InvariantCulture), BenchReport.Ms);

    /// <summary>About six round ticks from 0 to <paramref name="seconds"/>.</summary>
    private static double[] Ticks(double seconds)
    {
        var step = new[] { 1.0, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600 }.FirstOrDefault(s => seconds / s <= 6, 7200);
        return [.. Enumerable.Range(1, (int)(seconds / step)).Select(i => i * step)];
    }
}
