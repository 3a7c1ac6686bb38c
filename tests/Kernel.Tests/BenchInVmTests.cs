using System.Diagnostics;
using System.Text.Json;
using ProxyPlanes.Bench;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.VmLane;
using Xunit.Abstractions;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>
/// `proxyplanes-lab bench --in-vm`: the benchmark inside the VM lane, where IPVS runs beside nftables
/// on Debian's kernel. A small run (the VM's time is the CI's scarcest); no timing is asserted.
/// </summary>
[Collection(KernelCollection.Name)]
public sealed class BenchInVmTests(ITestOutputHelper output)
{
    [OutsideTheVmFact]
    public async Task BenchInVm_SmallRun_MeasuresIpvsAndNftablesOnTheVmKernel()
    {
        var results = Directory.CreateTempSubdirectory("proxyplanes-bench-vm-");
        try
        {
            var stopwatch = Stopwatch.StartNew();
            var run = await RunLabAsync(
                ["bench", "--in-vm", "--modes=nftables,ipvs", "--services=50", "--endpoints=2", "--changes=5", "--churn-seconds=0.5", "--churn-rate=10", $"--out={results.FullName}"],
                path: null, TimeSpan.FromMinutes(40));
            output.WriteLine($"bench --in-vm took {stopwatch.Elapsed.TotalSeconds:F0} s (host wall time)\n{run.StandardError}");

            Assert.True(run.ExitCode == 0, $"exit {run.ExitCode}\n{run.StandardError}");
            var measured = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(results.FullName, "results.json")), BenchJsonContext.Default.ListBenchResult)!;
            Assert.Equal(["nftables 50", "ipvs 50"], measured.Select(r => $"{r.Mode} {r.Services}"));
            foreach (var r in measured)
            {
                Assert.True(r.ColdSyncMs > 0 && r.PeakRssMb > 0, $"{r.Mode}: cold sync {r.ColdSyncMs} ms, peak RSS {r.PeakRssMb} MiB");
                Assert.Equal(5, r.Incremental.Count);
                Assert.All(r.IncrementalByKind.Values, k => Assert.Equal(1, k.Count)); // one change of each kind
                Assert.Equal(20, r.PeriodicNoOp.Count); // twenty quiet periodic syncs, none ran full
                Assert.True(r.FirstServiceConnectMs > 0 && r.LastServiceConnectMs > 0, $"{r.Mode}: the data-plane probe reached the real pods through the VIPs");
            }
            // IPVS's kernel objects, read back from the guest's kernel: a virtual server per service
            // (50, plus the one 'service added' leaves, minus none: 'service removed' takes it back).
            var ipvs = measured.Single(r => r.Mode == "ipvs");
            Assert.InRange(ipvs.KernelObjects["virtual servers"], 50, 51);
            Assert.True(ipvs.KernelObjects["real servers"] >= 100, $"{ipvs.KernelObjects["real servers"]} real servers");

            var report = File.ReadAllText(Path.Combine(results.FullName, "results.md"));
            Assert.Contains($"kernel {VmKernel.FindNewest().Release}", report); // measured on the VM's kernel, not this one
            Assert.Contains("in the VM lane (qemu TCG", report);
            Assert.Contains("| ipvs | 50 × 2 |", report);
            Assert.Contains("| nftables | 50 × 2 |", report);
            Assert.Matches(@"\| 50 × 2 \| cold sync \| [\d.]+ (ms|s) \| [\d.]+ (ms|s) \| [\d.]+× \| ≤ 2× \| (yes|no: [\d.]+× the target) \|", report);
            Assert.Contains("| 50 × 2 | one service added → kernel, p50 |", report);
            foreach (var file in new[] { "results.csv", "sync-latency.svg", "cold-sync.svg", "vm-console.log", "vm-progress.log" })
                Assert.True(new FileInfo(Path.Combine(results.FullName, file)).Length > 0, $"{file} is missing or empty");
        }
        finally
        {
            results.Delete(recursive: true);
        }
    }

    [OutsideTheVmFact]
    public async Task BenchInVm_WithoutQemu_OneLineNamingThePackage()
    {
        var results = Directory.CreateTempSubdirectory("proxyplanes-bench-vm-");
        try
        {
            // No qemu on PATH (the lab's own runtime is found without PATH).
            var run = await RunLabAsync(["bench", "--in-vm", "--services=50", $"--out={results.FullName}"], path: "/nonexistent", TimeSpan.FromMinutes(2));

            Assert.Equal(2, run.ExitCode);
            var line = Assert.Single(run.StandardError.Split('\n', StringSplitOptions.RemoveEmptyEntries), l => l.StartsWith(ProxyProcess.Lab + ":", StringComparison.Ordinal));
            Assert.Equal("proxyplanes-lab: bench --in-vm: qemu-system-x86_64 not found: install the Debian package qemu-system-x86 (scripts/setup.sh does)", line);
            Assert.False(File.Exists(Path.Combine(results.FullName, "results.json")));
        }
        finally
        {
            results.Delete(recursive: true);
        }
    }

    /// <summary>Runs `proxyplanes-lab ARGS` on the host (the VM lane needs no namespace), with PATH replaced when <paramref name="path"/> is set.</summary>
    private static async Task<(int ExitCode, string StandardOutput, string StandardError)> RunLabAsync(string[] args, string? path, TimeSpan timeout)
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in prefix.Concat(args)) start.ArgumentList.Add(arg);
        if (path is not null) start.Environment["PATH"] = path;
        using var process = Process.Start(start)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var limit = new CancellationTokenSource(timeout);
        try
        {
            await process.WaitForExitAsync(limit.Token);
        }
        catch (OperationCanceledException)
        {
            process.Kill(entireProcessTree: true); // the lab's VM run kills qemu with it (timeout --signal=KILL wraps it too)
            await process.WaitForExitAsync();
            Assert.Fail($"proxyplanes-lab {string.Join(' ', args)} ran past {timeout}:\n{await stderr}");
        }
        return (process.ExitCode, await stdout, await stderr);
    }
}
