using System.Globalization;
using ProxyPlanes.Sandbox;

namespace ProxyPlanes.Sandboxed;

/// <summary>
/// The real `proxyplanes run` started inside a sandbox namespace: what the demo, the kernel tests
/// and the benchmark drive, so they exercise the same binary an operator runs.
/// </summary>
public sealed class ProxyProcess : IAsyncDisposable
{
    private readonly NetworkNamespace _node;
    private readonly int _metricsPort;

    private ProxyProcess(NetworkNamespace node, SandboxProcess process, int metricsPort)
    {
        _node = node;
        Process = process;
        _metricsPort = metricsPort;
    }

    public SandboxProcess Process { get; }

    /// <summary>Everything the proxy printed so far (stdout and stderr).</summary>
    public string Output => string.Join('\n', Process.StandardOutputLines.Concat(Process.StandardErrorLines));

    /// <summary>
    /// Starts proxyplanes with <paramref name="arguments"/> in <paramref name="node"/>. The metrics
    /// server is expected on 127.0.0.1:<paramref name="metricsPort"/> inside that namespace.
    /// </summary>
    public static ProxyProcess Start(NetworkNamespace node, IEnumerable<string> arguments, IDictionary<string, string>? environment = null, int metricsPort = 10249)
    {
        var (file, prefix) = Executable();
        return new ProxyProcess(node, node.StartProcess(file, prefix.Concat(arguments), environment), metricsPort);
    }

    /// <summary>The daemon's binary: its apphost, and <c>proxyplanes.dll</c>.</summary>
    public const string Daemon = "proxyplanes";

    /// <summary>
    /// A folder holding a published daemon to run instead of the one built next to the caller: the VM
    /// lane publishes it ReadyToRun, since under emulation the JIT cost most of a daemon's start and
    /// first sync (measured: a first IPVS sync of one service 11.9 s JIT, 6.6 s ReadyToRun).
    /// </summary>
    public const string DaemonDirectoryVariable = "PROXYPLANES_DAEMON_DIR";

    /// <summary>The lab's binary (demo, bench): its apphost, and <c>proxyplanes-lab.dll</c>.</summary>
    public const string Lab = "proxyplanes-lab";

    /// <summary>
    /// How to start <paramref name="name"/> (<see cref="Daemon"/> or <see cref="Lab"/>) from here: its
    /// apphost if present, else <c>dotnet NAME.dll</c>. Both are built into every output folder that
    /// references the lab (the lab references the daemon project, so the daemon is copied next to it):
    /// <c>src/Lab/bin/...</c>, <c>tests/Kernel.Tests/bin/...</c>, or the folder <c>dotnet build -o</c> names.
    /// </summary>
    public static (string File, string[] Prefix) Executable(string name = Daemon)
    {
        if (name == Daemon && Environment.GetEnvironmentVariable(DaemonDirectoryVariable) is { Length: > 0 } published)
        {
            // A separately published daemon (the VM lane's ReadyToRun build): that one, or a clear error.
            var host = Path.Combine(published, Daemon);
            return File.Exists(host) ? (host, []) : throw new FileNotFoundException($"{DaemonDirectoryVariable}={published} holds no {Daemon} apphost");
        }
        var directory = AppContext.BaseDirectory;
        var appHost = Path.Combine(directory, name);
        if (File.Exists(appHost)) return (appHost, []);
        var dll = Path.Combine(directory, name + ".dll");
        if (!File.Exists(dll)) throw new FileNotFoundException($"{name} is not built next to {directory}");
        return (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", [dll]);
    }

    public async Task<string> ScrapeAsync(CancellationToken cancellationToken = default)
    {
        var result = await _node.HttpGetAsync("127.0.0.1", _metricsPort, "/metrics", TimeSpan.FromSeconds(5), cancellationToken);
        return result.IsAnswered ? result.Body : throw new InvalidOperationException($"/metrics did not answer: {result}\n{Output}");
    }

    public Task<HttpProbeResult> GetAsync(int port, string path, CancellationToken cancellationToken = default) =>
        _node.HttpGetAsync("127.0.0.1", port, path, TimeSpan.FromSeconds(5), cancellationToken);

    /// <summary>
    /// Waits until /healthz answers 200, i.e. the first sync has programmed the kernel. Like every
    /// wait here, <paramref name="timeout"/> is the host's budget, stretched by <see cref="TimeBudget"/>.
    /// </summary>
    public async Task WaitHealthyAsync(TimeSpan timeout, int healthzPort = 10256)
    {
        timeout = TimeBudget.For(timeout);
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (Process.HasExited) throw new InvalidOperationException($"proxyplanes exited with {Process.ExitCode}:\n{Output}");
            var result = await GetAsync(healthzPort, "/healthz");
            if (result.IsAnswered && result.StatusCode == 200) return;
            await Task.Delay(50);
        }
        throw new TimeoutException($"proxyplanes was not healthy within {timeout.TotalSeconds}s:\n{Output}");
    }

    /// <summary>The time of the last successful sync, from kubeproxy_sync_proxy_rules_last_timestamp_seconds.</summary>
    public async Task<double> LastSyncTimestampAsync() =>
        Metric(await ScrapeAsync(), "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "ip_family=\"IPv4\"") ?? 0; // every mode programs IPv4

    /// <summary>Service and endpoint changes the proxy has seen (kube-proxy's change counters).</summary>
    public async Task<double> ChangesSeenAsync()
    {
        var scrape = await ScrapeAsync();
        return (Metric(scrape, "kubeproxy_sync_proxy_rules_service_changes_total") ?? 0) + (Metric(scrape, "kubeproxy_sync_proxy_rules_endpoint_changes_total") ?? 0);
    }

    /// <summary>
    /// Waits until the proxy has seen more than <paramref name="changesBefore"/> changes and a
    /// successful sync has put all of them in the kernel (proxyplanes_sync_changes_applied caught up
    /// with the change counters), after-sync work (conntrack cleanup, health-check ports) included.
    /// </summary>
    public async Task WaitForChangesSyncedAsync(double changesBefore, TimeSpan timeout)
    {
        timeout = TimeBudget.For(timeout);
        var deadline = DateTime.UtcNow + timeout;
        double? target = null;
        while (DateTime.UtcNow < deadline)
        {
            var scrape = await ScrapeAsync();
            var changes = (Metric(scrape, "kubeproxy_sync_proxy_rules_service_changes_total") ?? 0) + (Metric(scrape, "kubeproxy_sync_proxy_rules_endpoint_changes_total") ?? 0);
            if (target is null && changes > changesBefore) target = changes; // includes ours
            if (target is { } t && (Metric(scrape, "proxyplanes_sync_changes_applied") ?? 0) >= t) return;
            await Task.Delay(20);
        }
        throw new TimeoutException($"the change was not synced within {timeout.TotalSeconds}s:\n{Output}");
    }

    /// <summary>Waits for a sync that completes after <paramref name="after"/> (unix seconds); returns its time.</summary>
    public async Task<double> WaitForSyncAfterAsync(double after, TimeSpan timeout)
    {
        timeout = TimeBudget.For(timeout);
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            var last = await LastSyncTimestampAsync();
            if (last > after) return last;
            await Task.Delay(25);
        }
        throw new TimeoutException($"no sync after {after} within {timeout.TotalSeconds}s:\n{Output}");
    }

    /// <summary>A sample's value from a Prometheus text scrape (name plus optional exact label text, e.g. table="nat").</summary>
    public static double? Metric(string scrape, string name, string? labels = null)
    {
        var prefix = labels is null ? name + " " : $"{name}{{{labels}}} ";
        foreach (var line in scrape.Split('\n'))
            if (line.StartsWith(prefix, StringComparison.Ordinal))
                return double.Parse(line[prefix.Length..], CultureInfo.InvariantCulture);
        return null;
    }

    /// <summary>SIGTERM, as the kubelet stops a pod; returns the exit code.</summary>
    public async Task<int> TerminateAsync(TimeSpan timeout)
    {
        if (!Process.HasExited) Signals.Send(Process.Pid, Signals.Terminate);
        using var cts = new CancellationTokenSource(timeout);
        await Process.WaitForExitAsync(cts.Token);
        return Process.ExitCode ?? -1;
    }

    public async ValueTask DisposeAsync() => await Process.KillAsync();
}
