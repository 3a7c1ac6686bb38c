using System.Globalization;
using System.Runtime.Versioning;
using System.Text;
using ProxyPlanes.Sandboxed;
using ProxyPlanes.VmLane;
using Lane = ProxyPlanes.VmLane.VmLane;

namespace ProxyPlanes.Bench;

/// <summary>
/// `proxyplanes-lab bench --in-vm`: the same benchmark run inside the VM lane (Debian's stock kernel
/// under qemu TCG, vm/README.md), so every mode that kernel runs, IPVS included, is measured on one
/// kernel. The guest runs this very lab binary (it sees the host's files at their own paths) with
/// `--out` on the lane share; the results are copied to the host's `--out`, with the guest's progress
/// (vm-progress.log) and console (vm-console.log).
/// </summary>
internal static class BenchInVm
{
    /// <summary>The modes measured in the VM when --modes is not given: those its kernel runs and the lab drives.</summary>
    public const string DefaultModes = "iptables,nftables,ipvs";

    /// <summary>Set for the guest's bench: the host's description, so the report names the machine under the emulator.</summary>
    public const string HostMachineVariable = "PROXYPLANES_BENCH_HOST";

    private const string ResultsFolder = "results";

    /// <summary>
    /// Runs `bench <paramref name="benchArguments"/> --out=...` in a fresh VM and copies what it wrote to
    /// <paramref name="output"/>. Returns the guest's exit code; 2 when the VM lane cannot run here
    /// (one line naming what is missing), 1 when the VM did not finish.
    /// </summary>
    [SupportedOSPlatform("linux")]
    public static async Task<int> RunAsync(IReadOnlyList<string> benchArguments, string output, TimeSpan timeout, CancellationToken cancellationToken)
    {
        var (file, prefix) = ProxyProcess.Executable(ProxyProcess.Lab);
        var command = new StringBuilder("exec");
        foreach (var word in new[] { file }.Concat(prefix).Append("bench").Concat(benchArguments).Append($"--out={Lane.GuestLaneDirectory}/{ResultsFolder}"))
            command.Append(' ').Append(Lane.ShellQuote(word));

        var lane = Directory.CreateTempSubdirectory("proxyplanes-bench-vm-");
        try
        {
            var options = VmLaneOptions.Default with
            {
                LaneDirectory = lane.FullName,
                Environment = new Dictionary<string, string> { [HostMachineVariable] = BenchCommand.Machine() },
            };
            Console.Error.WriteLine($"Running the benchmark in the VM lane (qemu TCG, {options.Cpus} vCPUs, {options.MemoryMiB} MiB; at most {timeout.TotalMinutes:0} min): {command.ToString()["exec ".Length..]}");
            VmRunResult run;
            using (var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken))
            {
                var progress = FollowAsync(Path.Combine(lane.FullName, "stderr"), stop.Token);
                try
                {
                    run = await Lane.RunAsync(command.ToString(), timeout, options, cancellationToken);
                }
                catch (VmLaneException e)
                {
                    Console.Error.WriteLine($"{ProxyProcess.Lab}: bench --in-vm: {FirstLine(e.Message)}");
                    if (e.ConsoleLog is { Length: > 0 } console) Keep(output, "vm-console.log", console);
                    return e.ConsoleLog is null ? 2 : 1;
                }
                finally
                {
                    await stop.CancelAsync();
                    await progress;
                }
            }

            Keep(output, "vm-console.log", run.ConsoleLog);
            Keep(output, "vm-progress.log", run.StandardError);
            var results = new DirectoryInfo(Path.Combine(lane.FullName, ResultsFolder));
            if (results.Exists)
                foreach (var result in results.EnumerateFiles()) result.CopyTo(Path.Combine(output, result.Name), overwrite: true);
            Console.Write(run.StandardOutput);
            if (run.TimedOut)
            {
                Console.Error.WriteLine($"{ProxyProcess.Lab}: bench --in-vm: the VM run passed --vm-timeout ({timeout.TotalSeconds:0} s) and was stopped; its progress and console are in {Path.GetFullPath(output)}");
                return 1;
            }
            Console.Error.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"VM run: kernel {run.KernelRelease}, {run.Elapsed.TotalMinutes:0.0} min on the host (boot {run.BootTime?.TotalSeconds:0.0} s); results in {Path.GetFullPath(output)}"));
            return run.ExitCode ?? 1;
        }
        finally
        {
            try { lane.Delete(recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The report's machine line inside the VM: the guest, and the host it is emulated on.</summary>
    [SupportedOSPlatform("linux")]
    public static string? Host() =>
        Lane.IsInsideVm && Environment.GetEnvironmentVariable(HostMachineVariable) is { Length: > 0 } host
            ? $"in the VM lane (qemu TCG: absolute times are inflated, compare modes within this run) on the host: {host}"
            : null;

    /// <summary>Passes on what the guest's bench writes to stderr (its progress) while the VM runs.</summary>
    private static async Task FollowAsync(string path, CancellationToken cancellationToken)
    {
        long offset = 0;
        var last = false;
        while (true)
        {
            try
            {
                if (File.Exists(path))
                {
                    using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
                    if (stream.Length > offset)
                    {
                        stream.Seek(offset, SeekOrigin.Begin);
                        var buffer = new byte[stream.Length - offset];
                        var read = await stream.ReadAsync(buffer, CancellationToken.None);
                        var end = Array.LastIndexOf(buffer, (byte)'\n', read - 1) + 1; // whole lines only
                        Console.Error.Write(Encoding.UTF8.GetString(buffer, 0, end));
                        offset += end;
                    }
                }
                if (last) return;
                await Task.Delay(TimeSpan.FromSeconds(1), cancellationToken);
            }
            catch (OperationCanceledException)
            {
                last = true; // one last read of what arrived since, then stop
            }
            catch (IOException)
            {
                return; // a progress echo, never a reason to fail the run
            }
        }
    }

    private static void Keep(string output, string name, string text)
    {
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, name), text);
    }

    private static string FirstLine(string text) => text.Split('\n', 2)[0].Trim();
}
