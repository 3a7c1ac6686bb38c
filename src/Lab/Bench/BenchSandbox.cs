using System.Text.Json;
using ProxyPlanes.Sandbox;
using ProxyPlanes.Sandboxed;

namespace ProxyPlanes.Bench;

/// <summary>
/// The sandbox a benchmark or soak runs in (a node namespace, a client and two real pods) and the
/// worker it starts in the node namespace for each measurement. For --mode=ebpf, also a cgroup and a bpffs
/// of its own (<see cref="EbpfPlace"/>), made at the first ebpf worker. Removed on dispose, even on failure.
/// </summary>
internal sealed class BenchSandbox : IAsyncDisposable
{
    private const string NodeName = "bench-node";
    private readonly ClusterSandbox _sandbox;
    private readonly string[] _pods;
    private readonly WorkerBinary _worker;
    private EbpfPlace? _ebpf;

    private BenchSandbox(ClusterSandbox sandbox, string[] pods, WorkerBinary worker)
    {
        _sandbox = sandbox;
        _pods = pods;
        _worker = worker;
    }

    /// <summary>Builds the sandbox whose workers run <paramref name="worker"/>.</summary>
    public static async Task<BenchSandbox> CreateAsync(WorkerBinary worker, CancellationToken cancellationToken)
    {
        if (Environment.UserName != "root") throw new UsageException("the benchmark needs root: it builds network namespaces and programs their kernel rules");
        // The pods' HTTP servers start within 3 s here; in the VM lane (bench --in-vm) under load they took longer.
        var sandbox = await ClusterSandbox.CreateAsync(new ClusterSandboxOptions { NodeName = NodeName, ServerReadyTimeout = TimeBudget.For(TimeSpan.FromSeconds(10)) }, cancellationToken);
        try
        {
            var pods = new[] { await sandbox.AddPodAsync("real-0", [SyntheticCluster.PodPort], cancellationToken), await sandbox.AddPodAsync("real-1", [SyntheticCluster.PodPort], cancellationToken) };
            return new BenchSandbox(sandbox, [.. pods.Select(p => p.IP)], worker);
        }
        catch
        {
            await sandbox.DisposeAsync();
            throw;
        }
    }

    /// <summary>A worker's settings for <paramref name="mode"/> at one size in this sandbox; the caller sets what it measures.</summary>
    public WorkerSettings Settings(string mode, int services, int endpoints)
    {
        var settings = new WorkerSettings(mode, services, endpoints, 0, TimeSpan.Zero, 0, NodeName, _sandbox.ClusterCidr, _sandbox.Client.Name, _pods);
        if (mode != "ebpf") return settings;
        // The worker runs under `ip netns exec`, so it gets the cgroup through the alias mount. Its own probes
        // stay outside the cgroup: they play the off-node client, whose packets meet the tc programs.
        _ebpf ??= new EbpfPlace(_sandbox.Prefix);
        return settings with { BpfFs = _ebpf.BpfFs, BpfCgroup = _ebpf.DaemonCgroupPath };
    }

    /// <summary>
    /// Runs one worker in the node namespace, passing its progress lines on; returns the JSON it
    /// printed, or null after printing why it failed.
    /// </summary>
    public async Task<string?> RunWorkerAsync(WorkerSettings settings, CancellationToken cancellationToken)
    {
        var json = JsonSerializer.Serialize(settings, BenchJsonContext.Default.WorkerSettings);
        await using var worker = _sandbox.Node.StartProcess(_worker.File, [.. _worker.Prefix, $"--settings={json}"]);
        worker.LineReceived += (_, line, isError) => { if (isError) Console.Error.WriteLine(line); };
        await worker.WaitForExitAsync(cancellationToken);
        var output = string.Join('\n', worker.StandardOutputLines);
        if (worker.ExitCode == 0 && output.TrimStart().StartsWith('{')) return output;
        Console.Error.WriteLine($"{ProxyProcess.Lab}: the {settings.Mode} worker at {settings.Services} services failed (exit {worker.ExitCode}):\n{string.Join('\n', worker.StandardErrorLines.TakeLast(20))}");
        return null;
    }

    public async ValueTask DisposeAsync()
    {
        try
        {
            await _sandbox.DisposeAsync();
        }
        finally
        {
            _ebpf?.Dispose();
        }
    }
}
