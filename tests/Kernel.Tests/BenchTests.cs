using System.Text.Json;
using System.Xml.Linq;
using ProxyPlanes.Bench;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>Small runs of `proxyplanes-lab bench` and `soak`: they must work and write every output. No timing is asserted.</summary>
[Collection(KernelCollection.Name)]
public sealed class BenchTests
{
    [Fact]
    public async Task Bench_SmallRun_WritesTableCsvJsonAndPlots()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-bench-");
        try
        {
            var result = await ExecAsync(["bench", "--services=20,40", "--endpoints=2", "--changes=5", "--churn-seconds=1", "--churn-rate=10", $"--out={output.FullName}"]);

            Assert.True(result.ExitCode == 0, result.StandardError);
            Assert.Contains("| iptables | 20 × 2 |", result.StandardOutput);
            Assert.Contains("| nftables | 20 × 2 |", result.StandardOutput);
            var results = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "results.json")), BenchJsonContext.Default.ListBenchResult)!;
            Assert.Equal(["iptables 20", "iptables 40", "nftables 20", "nftables 40"], results.Select(r => $"{r.Mode} {r.Services}"));
            Assert.All(results, r => Assert.Equal(ExpectedRuntime, r.Runtime));
            foreach (var r in results)
            {
                Assert.True(r.ColdSyncMs > 0 && r.FloorMs > 0 && r.PeakRssMb > 0);
                Assert.Equal(5, r.Incremental.Count);
                // Twenty periodic syncs on a quiet cluster, each the canary check alone (a full one
                // would have stopped the worker).
                Assert.Equal(20, r.PeriodicNoOp.Count);
                Assert.True(r.PeriodicNoOp.P50 > 0);
                Assert.Equal(5, r.IncrementalByKind.Count);
                // The per-change floor: ten rounds of the tool alone adding and deleting one rule or element.
                Assert.Equal(20, r.ChangeFloor.Count);
                Assert.True(r.ChangeFloor.P50 > 0);
                Assert.True(r.Churn.Latency.Count > 0);
                Assert.True(r.KernelObjects.Values.All(count => count >= 0) && r.KernelObjects.Values.Sum() > 0);
                Assert.True(r.FirstServiceConnectMs > 0 && r.LastServiceConnectMs > 0, "the data-plane probe reached the real pods");
            }
            Assert.Equal(5, File.ReadAllLines(Path.Combine(output.FullName, "results.csv")).Length);
            Assert.Contains("periodic_noop_p50_ms", File.ReadAllLines(Path.Combine(output.FullName, "results.csv"))[0]);
            Assert.Contains("change_floor_p50_ms", File.ReadAllLines(Path.Combine(output.FullName, "results.csv"))[0]);
            Assert.Contains("periodic sync, nothing changed", result.StandardOutput);
            foreach (var svg in new[] { "sync-latency.svg", "cold-sync.svg" })
                Assert.Equal("svg", XDocument.Load(Path.Combine(output.FullName, svg)).Root!.Name.LocalName);
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    /// <summary>
    /// --mode=ebpf in the benchmark and the soak: the lab is started outside any network namespace (under
    /// <c>ip netns exec</c> /sys is remounted and no cgroup v2 is seen, so ebpf would be skipped), makes a cgroup and a
    /// bpffs of its own, and leaves neither behind.
    /// </summary>
    [Fact]
    public async Task Bench_SmallEbpfRun_MapsHoldTheClusterAndNothingIsLeft()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-bench-");
        var cgroupsBefore = LabCgroups();
        try
        {
            var result = await ExecOutsideNamespacesAsync(["bench", "--modes=ebpf", "--services=20,40", "--endpoints=2", "--changes=5", "--churn-seconds=1", "--churn-rate=10", $"--out={output.FullName}"]);

            Assert.True(result.ExitCode == 0, result.StandardError);
            Assert.Contains("| ebpf | 20 × 2 |", result.StandardOutput);
            var results = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "results.json")), BenchJsonContext.Default.ListBenchResult)!;
            Assert.Equal(["ebpf 20", "ebpf 40"], results.Select(r => $"{r.Mode} {r.Services}"));
            Assert.All(results, r => Assert.Equal(ExpectedRuntime, r.Runtime));
            foreach (var r in results)
            {
                Assert.True(r.ColdSyncMs > 0 && r.PeakRssMb > 0);
                Assert.Equal(0, r.FloorMs); // a map write is its own floor: none is measured
                Assert.Equal(5, r.Incremental.Count);
                Assert.Equal(20, r.PeriodicNoOp.Count);
                Assert.Equal(20, r.ChangeFloor.Count); // one map write and one delete, ten times
                Assert.True(r.Churn.Latency.Count > 0);
                // Read from the maps after the cold sync: a master entry and two slots per service; two backends each,
                // except that the first and last services share the two real pods.
                Assert.Equal(r.Services * 3, r.KernelObjects["service entries"]);
                Assert.Equal(r.Services * 2 - 2, r.KernelObjects["backends"]);
                Assert.True(r.FirstServiceConnectMs > 0 && r.LastServiceConnectMs > 0, "the off-node client reached the real pods through the tc programs");
            }
            Assert.Equal(cgroupsBefore, LabCgroups());
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Soak_SmallEbpfRun_EveryChangeInTheMaps()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-soak-");
        var cgroupsBefore = LabCgroups();
        try
        {
            var result = await ExecOutsideNamespacesAsync(["soak", "--mode=ebpf", "--services=50", "--rate=10", "--seconds=5", "--warmup=1", "--max-rss-slope=100000", $"--out={output.FullName}"]);

            Assert.True(result.ExitCode == 0, result.StandardError);
            var soak = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "soak.json")), BenchJsonContext.Default.SoakResult)!;
            Assert.Equal(("ebpf", 50, 2, ExpectedRuntime), (soak.Mode, soak.Services, soak.EndpointsPerService, soak.Runtime));
            Assert.True(soak.ChangesSent > 0);
            Assert.Equal(soak.ChangesSent, soak.ChangesConfirmed);
            // Read back from the backends map: 48 services × 2 fresh endpoints plus the two real pods.
            Assert.Equal(98, soak.KernelEndpointsExpected);
            Assert.Equal(98, soak.KernelEndpointsFound);
            Assert.Equal((0, 0), (soak.KernelMissingCount, soak.KernelUnexpectedCount));
            Assert.Equal(cgroupsBefore, LabCgroups());
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    /// <summary>The cgroups a lab run makes for --mode=ebpf (pp-ebpf-&lt;sandbox prefix&gt;), as they are now.</summary>
    private static string[] LabCgroups() =>
        [.. Directory.GetDirectories(SandboxCgroup.Root!, "pp-ebpf-pp*").Order(StringComparer.Ordinal)];

    [Theory]
    [InlineData("--services=1", "--services: '1' is not a size from 2 to 100000")]
    [InlineData("--modes=ipvs", "--mode=ipvs: this kernel has no IPVS")]
    [InlineData("--vm-timeout=5", "--vm-timeout must be from 60 to 604800 seconds")]
    [InlineData("--worker=/nonexistent", "--worker=/nonexistent: no proxyplanes-bench-worker there (publish it: dotnet publish src/BenchWorker")]
    [InlineData("--worker=/etc/hostname", "--worker=/etc/hostname: not a proxyplanes-bench-worker binary")]
    [InlineData("--in-vm --worker=jit", "--worker is for the host's benchmark: bench --in-vm runs the JIT worker")]
    public async Task Bench_InvalidFlag_OneLineError(string flags, string expected)
    {
        var result = await ExecAsync(["bench", .. flags.Split(' ')]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"{ProxyProcess.Lab}: {expected}", result.StandardError);
    }

    [Fact]
    public async Task Bench_WorkerVariableNamesNoWorker_OneLineError()
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-bench");

        var result = await ns.ExecAsync(["env", "PROXYPLANES_BENCH_WORKER=/nonexistent", file, .. prefix, "bench", "--modes=nftables"], TimeSpan.FromMinutes(1));

        Assert.Equal(2, result.ExitCode);
        Assert.Contains($"{ProxyProcess.Lab}: PROXYPLANES_BENCH_WORKER=/nonexistent: no proxyplanes-bench-worker there", result.StandardError);
    }

    /// <summary>
    /// The runtime the bench's workers report here: native AOT when the published worker is chosen (scripts/test.sh
    /// publishes it and sets PROXYPLANES_BENCH_WORKER), JIT otherwise. Every bench and soak test checks it, so they run
    /// the worker the run was given and say so.
    /// </summary>
    private static string ExpectedRuntime =>
        Environment.GetEnvironmentVariable(PublishedBenchWorkerFactAttribute.Variable) is { Length: > 0 } and not "jit" ? "native AOT" : "JIT";

    [Fact]
    public async Task Bench_JitWorkerChosen_ResultsSayJit()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-bench-");
        try
        {
            var result = await ExecAsync(["bench", "--modes=nftables", "--services=20", "--endpoints=2", "--changes=5", "--churn-seconds=1", "--churn-rate=10", "--worker=jit", $"--out={output.FullName}"]);

            Assert.True(result.ExitCode == 0, result.StandardError);
            var r = Assert.Single(JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "results.json")), BenchJsonContext.Default.ListBenchResult)!);
            Assert.Equal("JIT", r.Runtime);
            Assert.Contains("\nWorker: JIT\n", File.ReadAllText(Path.Combine(output.FullName, "results.md")));
            Assert.EndsWith(",JIT", File.ReadAllLines(Path.Combine(output.FullName, "results.csv"))[1]);
            Assert.Contains("nftables 20×2 (JIT worker): cold", result.StandardError);
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    /// <summary>
    /// The published worker (scripts/test.sh: <c>dotnet publish src/BenchWorker</c>, native AOT like the daemon) is one
    /// native executable, and it is what the benchmark and the soak run when PROXYPLANES_BENCH_WORKER names it: were the
    /// wiring lost, the bench would quietly measure the JIT build and the tables would say JIT.
    /// </summary>
    [PublishedBenchWorkerFact]
    public async Task Bench_PublishedWorker_IsOneNativeExecutable_AndIsWhatBenchAndSoakRun()
    {
        var folder = Environment.GetEnvironmentVariable(PublishedBenchWorkerFactAttribute.Variable)!;
        var file = Path.Combine(folder, BenchWorker.Name);
        var magic = new byte[4];
        await using (var stream = File.OpenRead(file)) await stream.ReadExactlyAsync(magic);
        Assert.Equal("\u007fELF"u8.ToArray(), magic);
        Assert.False(File.Exists(Path.Combine(folder, BenchWorker.Name + ".dll")), $"{folder} holds {BenchWorker.Name}.dll: a JIT publish, not native AOT");
        Assert.False(File.Exists(Path.Combine(folder, BenchWorker.Name + ".runtimeconfig.json")), $"{folder} holds a runtimeconfig: a JIT publish, not native AOT");

        var output = Directory.CreateTempSubdirectory("proxyplanes-bench-");
        try
        {
            var bench = await ExecAsync(["bench", "--modes=nftables", "--services=20", "--endpoints=2", "--changes=5", "--churn-seconds=1", "--churn-rate=10", $"--out={output.FullName}"]);

            Assert.True(bench.ExitCode == 0, bench.StandardError);
            Assert.Contains($"worker: {file}", bench.StandardError);
            var r = Assert.Single(JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "results.json")), BenchJsonContext.Default.ListBenchResult)!);
            Assert.Equal("native AOT", r.Runtime);
            Assert.Contains("\nWorker: native AOT\n", File.ReadAllText(Path.Combine(output.FullName, "results.md")));

            // The binary named directly, in the soak.
            var soak = await ExecAsync(["soak", "--services=20", "--rate=10", "--seconds=2", "--warmup=1", "--max-rss-slope=100000", $"--worker={file}", $"--out={output.FullName}"]);

            Assert.True(soak.ExitCode == 0, soak.StandardError);
            Assert.Equal("native AOT", JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "soak.json")), BenchJsonContext.Default.SoakResult)!.Runtime);
            Assert.Contains("Worker: native AOT", soak.StandardOutput);
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    // The soak: a short, small run through the real path (sandbox, worker, nftables in the kernel)
    // whose report must hold real content. No speed or memory target is asserted (the RSS limit is set
    // out of reach); a run with an unmeetable latency target checks that a miss fails the run.

    [Fact]
    public async Task Soak_SmallRun_EveryChangeInTheKernel_RssSampled_FilesWritten()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-soak-");
        try
        {
            var result = await ExecAsync(["soak", "--services=200", "--rate=20", "--seconds=15", "--max-rss-slope=100000", $"--out={output.FullName}"]);

            Assert.True(result.ExitCode == 0, result.StandardError);
            Assert.Contains("| changes confirmed in the kernel (a sync carried them) |", result.StandardOutput);
            Assert.Contains("Every target met.", result.StandardOutput);
            var soak = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "soak.json")), BenchJsonContext.Default.SoakResult)!;
            Assert.Equal(("nftables", 200, 2, ExpectedRuntime), (soak.Mode, soak.Services, soak.EndpointsPerService, soak.Runtime));
            Assert.Contains($"Worker: {ExpectedRuntime}", result.StandardOutput);
            // 20/s for 15 s: about 300 changes, each carried by a sync, none cancelling out.
            Assert.InRange(soak.ChangesSent, 250, 302);
            Assert.Equal(soak.ChangesSent, soak.ChangesConfirmed);
            Assert.Empty(soak.Unconfirmed);
            Assert.Equal(soak.ChangesSent, soak.Latency.Count);
            Assert.True(soak.Latency.P50 > 0 && soak.Latency.Max >= soak.Latency.P99);
            Assert.True(soak.Syncs > 1 && soak.Syncs <= soak.ChangesSent, $"{soak.Syncs} syncs for {soak.ChangesSent} changes");
            // Read back from the kernel: 198 services × 2 fresh endpoints, plus the two real pods the
            // first and last services share; every replaced address gone, every new one there.
            Assert.Equal(398, soak.KernelEndpointsExpected);
            Assert.Equal(398, soak.KernelEndpointsFound);
            Assert.Equal((0, 0), (soak.KernelMissingCount, soak.KernelUnexpectedCount));
            // About 20 samples of a live process, a slope fitted over those after the 3 s warm-up.
            Assert.InRange(soak.Rss.Count, 15, 30);
            Assert.All(soak.Rss, s => Assert.True(s.RssMib > 10 && s.PeakMib >= s.RssMib, $"{s.RssMib} / {s.PeakMib} MiB"));
            Assert.True(soak.Rss.Zip(soak.Rss.Skip(1)).All(p => p.Second.Seconds > p.First.Seconds));
            Assert.NotNull(soak.RssSlopeMibPerMinute);
            Assert.True(soak.RssSamplesInSlope >= 10 && soak.RssSamplesInSlope < soak.Rss.Count);
            Assert.True(soak.PeakRssMib >= soak.Rss.Max(s => s.RssMib));
            Assert.Equal(soak.ChangesSent, soak.LatencyOverTime.Sum(s => s.Changes));

            Assert.Equal(soak.Rss.Count + 1, File.ReadAllLines(Path.Combine(output.FullName, "soak-rss.csv")).Length);
            Assert.Equal(soak.LatencyOverTime.Count + 1, File.ReadAllLines(Path.Combine(output.FullName, "soak-latency.csv")).Length);
            Assert.Contains("| RSS slope after the 3 s warm-up (least squares) |", File.ReadAllText(Path.Combine(output.FullName, "soak.md")));
            foreach (var svg in new[] { "soak-rss.svg", "soak-latency.svg" })
            {
                var chart = XDocument.Load(Path.Combine(output.FullName, svg)).Root!;
                Assert.Equal("svg", chart.Name.LocalName);
                Assert.Contains(chart.Elements(), e => e.Name.LocalName == "polyline");
            }
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    [Fact]
    public async Task Soak_TargetMissed_ExitsOneWithOneLineSayingWhich()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-soak-");
        try
        {
            // No change reaches the kernel within a microsecond: the latency target must fail the run.
            var result = await ExecAsync(["soak", "--services=20", "--rate=10", "--seconds=3", "--max-latency=0.001", "--max-rss-slope=100000", $"--out={output.FullName}"]);

            Assert.Equal(1, result.ExitCode);
            var missed = Assert.Single(result.StandardError.Split('\n'), l => l.StartsWith("proxyplanes-lab soak: missed: ", StringComparison.Ordinal));
            Assert.Matches(@"missed: \d+ changes took longer than 1 µs to reach the kernel", missed); // --max-latency=0.001 ms, printed as 1 µs
            Assert.DoesNotContain("never reached the kernel", missed);
            Assert.True(File.Exists(Path.Combine(output.FullName, "soak.md")), "the report is written when a target is missed");
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("--mode=ipvs", "--mode=ipvs: this kernel has no IPVS")]
    [InlineData("--warmup=20", "--warmup must be at least 0 and less than --seconds")]
    [InlineData("--worker=/nonexistent", "--worker=/nonexistent: no proxyplanes-bench-worker there")]
    public async Task Soak_InvalidFlag_OneLineError(string flag, string expected)
    {
        var result = await ExecAsync(["soak", "--seconds=10", flag]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.StandardError);
    }

    /// <summary>Runs `proxyplanes-lab ARGS` in the test's own namespaces (the lab builds its sandbox beside them).</summary>
    private static async Task<ExecResult> ExecOutsideNamespacesAsync(string[] args)
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        var result = await NodeTools.ExternalCommand.RunAsync(file, [.. prefix, .. args], standardInput: null, TimeSpan.FromMinutes(5));
        return new ExecResult(result.ExitCode, result.StandardOutput, result.StandardError);
    }

    /// <summary>Runs `proxyplanes-lab ARGS` in a namespace of its own.</summary>
    private static async Task<ExecResult> ExecAsync(string[] args)
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-bench");
        return await ns.ExecAsync([file, .. prefix, .. args], TimeSpan.FromMinutes(5));
    }
}

/// <summary>Runs only when scripts/test.sh (or the caller) has published the bench worker and named it in <c>PROXYPLANES_BENCH_WORKER</c>.</summary>
public sealed class PublishedBenchWorkerFactAttribute : FactAttribute
{
    public const string Variable = "PROXYPLANES_BENCH_WORKER";

    public PublishedBenchWorkerFactAttribute()
    {
        if (Environment.GetEnvironmentVariable(Variable) is not { Length: > 0 } value || value == "jit")
            Skip = $"{Variable} does not name a published worker: scripts/test.sh publishes src/BenchWorker (native AOT) and sets it";
    }
}
