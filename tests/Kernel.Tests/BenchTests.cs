using System.Text.Json;
using System.Xml.Linq;
using ProxyPlanes.Bench;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Kernel.Tests;

/// <summary>A small run of `proxyplanes-lab bench`: it must work and write every output. No timing is asserted.</summary>
[Collection(KernelCollection.Name)]
public sealed class BenchTests
{
    [Fact]
    public async Task Bench_SmallRun_WritesTableCsvJsonAndPlots()
    {
        var output = Directory.CreateTempSubdirectory("proxyplanes-bench-");
        try
        {
            var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
            var result = await ExecAsync([file, .. prefix, "bench", "--services=20,40", "--endpoints=2", "--changes=5", "--churn-seconds=1", "--churn-rate=10", $"--out={output.FullName}"]);

            Assert.True(result.ExitCode == 0, result.StandardError);
            Assert.Contains("| iptables | 20 × 2 |", result.StandardOutput);
            Assert.Contains("| nftables | 20 × 2 |", result.StandardOutput);
            var results = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(output.FullName, "results.json")), BenchJsonContext.Default.ListBenchResult)!;
            Assert.Equal(["iptables 20", "iptables 40", "nftables 20", "nftables 40"], results.Select(r => $"{r.Mode} {r.Services}"));
            foreach (var r in results)
            {
                Assert.True(r.ColdSyncMs > 0 && r.FloorMs > 0 && r.PeakRssMb > 0);
                Assert.Equal(5, r.Incremental.Count);
                // Twenty periodic syncs on a quiet cluster, each the canary check alone (a full one
                // would have stopped the worker).
                Assert.Equal(20, r.PeriodicNoOp.Count);
                Assert.True(r.PeriodicNoOp.P50 > 0);
                Assert.Equal(5, r.IncrementalByKind.Count);
                Assert.True(r.Churn.Latency.Count > 0);
                Assert.True(r.KernelObjects.Values.All(count => count >= 0) && r.KernelObjects.Values.Sum() > 0);
                Assert.True(r.FirstServiceConnectMs > 0 && r.LastServiceConnectMs > 0, "the data-plane probe reached the real pods");
            }
            Assert.Equal(5, File.ReadAllLines(Path.Combine(output.FullName, "results.csv")).Length);
            Assert.Contains("periodic_noop_p50_ms", File.ReadAllLines(Path.Combine(output.FullName, "results.csv"))[0]);
            Assert.Contains("periodic sync, nothing changed", result.StandardOutput);
            foreach (var svg in new[] { "sync-latency.svg", "cold-sync.svg" })
                Assert.Equal("svg", XDocument.Load(Path.Combine(output.FullName, svg)).Root!.Name.LocalName);
        }
        finally
        {
            output.Delete(recursive: true);
        }
    }

    [Theory]
    [InlineData("--services=1", "--services: '1' is not a size from 2 to 100000")]
    [InlineData("--modes=ipvs", "--mode=ipvs: this kernel has no IPVS")]
    [InlineData("--in-vm", "--in-vm needs the IPVS VM lane")]
    public async Task Bench_InvalidFlag_OneLineError(string flag, string expected)
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        var result = await ExecAsync([file, .. prefix, "bench", flag]);

        Assert.Equal(2, result.ExitCode);
        Assert.Contains(expected, result.StandardError);
    }

    private static async Task<ExecResult> ExecAsync(string[] args)
    {
        using var ns = NetworkNamespace.Create($"pp{Random.Shared.Next(0x100000):x5}-bench");
        return await ns.ExecAsync(args, TimeSpan.FromMinutes(5));
    }
}
