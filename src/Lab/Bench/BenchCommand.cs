using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Bench;

/// <summary>
/// `proxyplanes-lab bench`: how fast changes reach the kernel in each mode, at each cluster size. Builds
/// a sandbox, runs one worker per mode and size in the node namespace, and writes a Markdown
/// table, CSV, JSON and SVG plots.
/// </summary>
public static class BenchCommand
{
    public static Command Create()
    {
        var command = new Command("bench", "Measure sync latency, churn, memory, kernel objects and data-plane cost per mode (root)");
        var modes = new Option<string>("--modes") { Description = "Modes to compare, comma-separated (default: every built mode this kernel can run)", DefaultValueFactory = _ => "" };
        var services = new Option<string>("--services") { Description = "Cluster sizes (services), comma-separated", DefaultValueFactory = _ => "1000,5000,10000" };
        var endpoints = new Option<int>("--endpoints") { Description = "Endpoints per service", DefaultValueFactory = _ => 10 };
        var changes = new Option<int>("--changes") { Description = "Single changes timed per size", DefaultValueFactory = _ => 25 };
        var churnSeconds = new Option<double>("--churn-seconds") { Description = "How long to sustain churn", DefaultValueFactory = _ => 10 };
        var churnRate = new Option<double>("--churn-rate") { Description = "Changes per second during churn", DefaultValueFactory = _ => 20 };
        var output = new Option<string>("--out") { Description = "Results folder", DefaultValueFactory = _ => "bench-results" };
        var inVm = new Option<bool>("--in-vm") { Description = $"Run the benchmark in the VM lane (Debian's kernel under qemu, vm/README.md), so all modes share one kernel with IPVS (default modes there: {BenchInVm.DefaultModes})" };
        var vmTimeout = new Option<int>("--vm-timeout") { Description = "With --in-vm: seconds the whole VM run may take (boot included)", DefaultValueFactory = _ => 4 * 3600 };
        var worker = new Option<string?>("--worker") { Description = WorkerBinary.OptionDescription };
        foreach (var option in new Option[] { modes, services, endpoints, changes, churnSeconds, churnRate, output, inVm, vmTimeout, worker }) command.Options.Add(option);
        command.SetAction(async (result, token) =>
        {
            try
            {
                var modeList = result.GetValue(modes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                if (result.GetValue(vmTimeout) is < 60 or > 7 * 24 * 3600) throw new UsageException("--vm-timeout must be from 60 to 604800 seconds");
                if (result.GetValue(inVm) && OperatingSystem.IsLinux())
                {
                    // The guest runs the lab's JIT worker (a native one is built for the host, and no guest run has checked it).
                    if (result.GetValue(worker) is not null) throw new UsageException("--worker is for the host's benchmark: bench --in-vm runs the JIT worker");
                    // The guest's bench checks the modes against its own kernel and the rest of the flags again.
                    string[] forwarded =
                    [
                        $"--modes={(modeList.Length > 0 ? string.Join(',', modeList) : BenchInVm.DefaultModes)}",
                        $"--services={result.GetValue(services)}",
                        string.Create(CultureInfo.InvariantCulture, $"--endpoints={result.GetValue(endpoints)}"),
                        string.Create(CultureInfo.InvariantCulture, $"--changes={result.GetValue(changes)}"),
                        string.Create(CultureInfo.InvariantCulture, $"--churn-seconds={result.GetValue(churnSeconds)}"),
                        string.Create(CultureInfo.InvariantCulture, $"--churn-rate={result.GetValue(churnRate)}"),
                    ];
                    return await BenchInVm.RunAsync(forwarded, result.GetValue(output)!, TimeSpan.FromSeconds(result.GetValue(vmTimeout)), token);
                }
                var workerBinary = WorkerBinary.Resolve(result.GetValue(worker));
                foreach (var mode in modeList) await RequireRunnableAsync(mode, token);
                if (modeList.Length == 0)
                {
                    var usable = new List<string>();
                    foreach (var mode in Modes.Registry.Built)
                        if (await mode.KernelProblemAsync(token) is { } skipped) Console.Error.WriteLine($"Skipping {mode.Name}: {skipped}");
                        else usable.Add(mode.Name);
                    modeList = [.. usable];
                }
                var sizes = result.GetValue(services)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                    .Select(s => int.TryParse(s, NumberStyles.None, CultureInfo.InvariantCulture, out var n) && n is >= 2 and <= 100_000 ? n
                        : throw new UsageException($"--services: '{s}' is not a size from 2 to 100000")).ToArray();
                var perService = result.GetValue(endpoints);
                if (perService is < 1 or > 1000) throw new UsageException("--endpoints must be from 1 to 1000");
                var rate = result.GetValue(churnRate);
                if (rate is <= 0 or > 10_000) throw new UsageException("--churn-rate must be above 0 and at most 10000");
                return await RunAsync(workerBinary, modeList, sizes, perService, Math.Max(1, result.GetValue(changes)), TimeSpan.FromSeconds(Math.Clamp(result.GetValue(churnSeconds), 0.5, 600)), rate, result.GetValue(output)!, token);
            }
            catch (UsageException e)
            {
                Console.Error.WriteLine($"{ProxyProcess.Lab}: {e.Message}");
                return 2;
            }
        });
        return command;
    }

    /// <summary>Throws the one-line usage error when this kernel cannot run <paramref name="mode"/>.</summary>
    internal static async Task RequireRunnableAsync(string mode, CancellationToken cancellationToken)
    {
        if (await Modes.Require(mode).KernelProblemAsync(cancellationToken) is { } problem) throw new UsageException(problem);
    }

    private static async Task<int> RunAsync(WorkerBinary worker, string[] modes, int[] sizes, int endpoints, int changes, TimeSpan churn, double churnRate, string output, CancellationToken cancellationToken)
    {
        var results = new List<BenchResult>();
        Console.Error.WriteLine($"Benchmarking {string.Join(", ", modes)} at {string.Join(", ", sizes)} services × {endpoints} endpoints; worker: {worker}");
        await using var sandbox = await BenchSandbox.CreateAsync(worker, cancellationToken);
        foreach (var mode in modes)
        foreach (var size in sizes)
        {
            var json = await sandbox.RunWorkerAsync(sandbox.Settings(mode, size, endpoints) with { Changes = changes, ChurnDuration = churn, ChurnRate = churnRate }, cancellationToken);
            if (json is null) return 1;
            var result = JsonSerializer.Deserialize(json, BenchJsonContext.Default.BenchResult)!;
            results.Add(result);
            Console.Error.WriteLine($"  {mode} {size}×{endpoints} ({result.Runtime} worker): cold {result.ColdSyncMs:0} ms, single change p50 {result.Incremental.P50:0.#} ms, p99 {result.Incremental.P99:0.#} ms");
        }
        Write(results, output);
        Console.WriteLine(BenchReport.Markdown(results, Machine()) + ModeRatios.Markdown(results));
        Console.WriteLine($"Results in {Path.GetFullPath(output)}: results.md, results.csv, results.json, sync-latency.svg, cold-sync.svg");
        return 0;
    }

    private static void Write(List<BenchResult> results, string output)
    {
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "results.md"), BenchReport.Markdown(results, Machine()) + ModeRatios.Markdown(results));
        File.WriteAllText(Path.Combine(output, "results.csv"), BenchReport.Csv(results));
        File.WriteAllText(Path.Combine(output, "results.json"), BenchReport.Json(results));
        File.WriteAllText(Path.Combine(output, "sync-latency.svg"), BenchReport.Svg("Single change → kernel, p50 (ms)", results, r => r.Incremental.P50));
        File.WriteAllText(Path.Combine(output, "cold-sync.svg"), BenchReport.Svg("Cold sync: whole cluster → kernel (ms)", results, r => r.ColdSyncMs));
    }

    /// <summary>The machine a run was taken on, for the report's first line.</summary>
    internal static string Machine()
    {
        var cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        var memory = File.ReadLines("/proc/meminfo").First().Split(' ', StringSplitOptions.RemoveEmptyEntries)[1];
        var machine = string.Create(CultureInfo.InvariantCulture,
            $"{Environment.ProcessorCount} × {cpu}, {long.Parse(memory, CultureInfo.InvariantCulture) / 1048576.0:0} GiB, kernel {File.ReadAllText("/proc/sys/kernel/osrelease").Trim()}, .NET {Environment.Version}, {DateTime.UtcNow:yyyy-MM-dd}");
        return OperatingSystem.IsLinux() && BenchInVm.Host() is { } host ? $"{machine}, {host}" : machine;
    }
}
