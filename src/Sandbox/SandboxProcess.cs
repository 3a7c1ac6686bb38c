using System.Diagnostics;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Sandbox;

/// <summary>
/// A long-running process started inside a <see cref="NetworkNamespace"/> through <c>ip netns exec</c>.
/// <c>ip netns exec</c> execs the target, so <see cref="Pid"/> is the target's own PID.
/// Output is captured line by line into bounded, thread-safe buffers.
/// </summary>
public sealed class SandboxProcess : IAsyncDisposable, IDisposable
{
    /// <summary>How long <see cref="KillAsync"/> waits for the process to go away by default.</summary>
    public static readonly TimeSpan DefaultKillTimeout = TimeSpan.FromSeconds(3);

    /// <summary>At most this many lines are kept per stream; older lines are dropped.</summary>
    public const int MaxBufferedLines = 10_000;

    private readonly Process _process;
    private readonly LineBuffer _stdout = new();
    private readonly LineBuffer _stderr = new();

    private SandboxProcess(Process process, string namespaceName, string fileName, IReadOnlyList<string> arguments)
    {
        _process = process;
        NamespaceName = namespaceName;
        FileName = fileName;
        Arguments = arguments;
        Pid = process.Id;
    }

    public int Pid { get; }

    /// <summary>Name of the network namespace the process runs in.</summary>
    public string NamespaceName { get; }

    public string FileName { get; }

    public IReadOnlyList<string> Arguments { get; }

    public bool HasExited
    {
        get
        {
            try
            {
                return _process.HasExited;
            }
            catch (InvalidOperationException)
            {
                return true;
            }
        }
    }

    /// <summary>Exit code, or null while the process runs.</summary>
    public int? ExitCode => HasExited ? _process.ExitCode : null;

    /// <summary>Snapshot of the captured standard output lines.</summary>
    public IReadOnlyList<string> StandardOutputLines => _stdout.Snapshot();

    /// <summary>Snapshot of the captured standard error lines.</summary>
    public IReadOnlyList<string> StandardErrorLines => _stderr.Snapshot();

    /// <summary>Raised (on a thread-pool thread) for every output line; <c>isError</c> tells stderr from stdout.</summary>
    public event Action<SandboxProcess, string, bool>? LineReceived;

    internal static SandboxProcess Start(
        string namespaceName,
        string file,
        IEnumerable<string> args,
        IDictionary<string, string>? environment,
        SandboxCgroup? cgroup = null)
    {
        var arguments = args.ToArray();
        // In a cgroup: joined before `ip netns exec`, which remounts /sys and so hides the cgroup's directory.
        string[] inNamespace = ["netns", "exec", namespaceName, file, .. arguments];
        var (launcher, launcherArgs) = cgroup is null ? ("ip", inNamespace) : cgroup.Wrap("ip", inNamespace);
        var startInfo = new ProcessStartInfo(launcher)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var arg in launcherArgs)
        {
            startInfo.ArgumentList.Add(arg);
        }

        if (environment is not null)
        {
            foreach ((var key, var value) in environment)
            {
                startInfo.Environment[key] = value;
            }
        }

        var process = new Process { StartInfo = startInfo, EnableRaisingEvents = true };
        try
        {
            if (!process.Start())
            {
                throw new SandboxException($"Could not start `{ExternalCommand.Format(file, arguments)}` in netns {namespaceName}.");
            }
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            process.Dispose();
            throw new SandboxException($"Could not start `{ExternalCommand.Format(file, arguments)}` in netns {namespaceName}: {e.Message}", e);
        }

        var handle = new SandboxProcess(process, namespaceName, file, arguments);
        process.OutputDataReceived += (_, e) => handle.OnLine(e.Data, isError: false);
        process.ErrorDataReceived += (_, e) => handle.OnLine(e.Data, isError: true);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        process.StandardInput.Close();
        return handle;
    }

    /// <summary>Waits (bounded by the token) for the process to exit on its own.</summary>
    public Task WaitForExitAsync(CancellationToken cancellationToken = default) => _process.WaitForExitAsync(cancellationToken);

    /// <summary>
    /// Sends SIGKILL to <see cref="Pid"/> and waits at most <paramref name="timeout"/> for it to exit.
    /// Returns true when the process is gone.
    /// </summary>
    public async Task<bool> KillAsync(TimeSpan? timeout = null)
    {
        if (!TryKill())
        {
            return true;
        }

        using var cts = new CancellationTokenSource(timeout ?? DefaultKillTimeout);
        try
        {
            await _process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
            return true;
        }
        catch (OperationCanceledException)
        {
            // WaitForExitAsync also waits for the output pipes to close; a grandchild may hold them.
            return HasExited;
        }
    }

    /// <summary>Synchronous <see cref="KillAsync"/> for Dispose and signal handlers.</summary>
    public bool Kill(TimeSpan? timeout = null)
    {
        if (!TryKill())
        {
            return true;
        }

        return _process.WaitForExit(timeout ?? DefaultKillTimeout);
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync().ConfigureAwait(false);
        _process.Dispose();
    }

    public void Dispose()
    {
        Kill();
        _process.Dispose();
    }

    public override string ToString() => $"{FileName} (pid {Pid}, netns {NamespaceName})";

    /// <summary>Returns false when there was nothing (left) to kill.</summary>
    private bool TryKill()
    {
        try
        {
            if (_process.HasExited)
            {
                return false;
            }

            _process.Kill(entireProcessTree: false);
            return true;
        }
        catch (InvalidOperationException)
        {
            return false;
        }
    }

    private void OnLine(string? line, bool isError)
    {
        if (line is null)
        {
            return;
        }

        (isError ? _stderr : _stdout).Add(line);
        LineReceived?.Invoke(this, line, isError);
    }

    private sealed class LineBuffer
    {
        private readonly Lock _gate = new();
        private readonly Queue<string> _lines = new();

        public void Add(string line)
        {
            lock (_gate)
            {
                if (_lines.Count == MaxBufferedLines)
                {
                    _lines.Dequeue();
                }

                _lines.Enqueue(line);
            }
        }

        public IReadOnlyList<string> Snapshot()
        {
            lock (_gate)
            {
                return _lines.ToArray();
            }
        }
    }
}
