using System.Runtime.ExceptionServices;
using System.Text.RegularExpressions;
using Microsoft.Win32.SafeHandles;
using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Sandbox;

/// <summary>
/// A named network namespace (<c>/var/run/netns/NAME</c>) created with <c>ip netns add</c> and deleted on
/// <see cref="Dispose"/>, together with the processes started in it. Requires root.
/// </summary>
public sealed partial class NetworkNamespace : IDisposable
{
    /// <summary>Where <c>ip netns</c> keeps its bind-mounted namespace files.</summary>
    public const string RunDirectory = "/var/run/netns";

    /// <summary>How long a command run by the sandbox may take when the caller gives no timeout.</summary>
    internal static readonly TimeSpan DefaultCommandTimeout = TimeSpan.FromSeconds(10);

    private readonly Lock _gate = new();
    private readonly List<SandboxProcess> _processes = [];
    private readonly bool _owned;
    private bool _disposed;

    private NetworkNamespace(string name, bool owned = true)
    {
        Name = name;
        _owned = owned;
    }

    public string Name { get; }

    /// <summary>The namespace file, e.g. <c>/var/run/netns/pp1a2b3-node</c>.</summary>
    public string Path => $"{RunDirectory}/{Name}";

    /// <summary>Processes started with <see cref="StartProcess"/> (including exited ones).</summary>
    public IReadOnlyList<SandboxProcess> Processes
    {
        get
        {
            lock (_gate)
            {
                return _processes.ToArray();
            }
        }
    }

    /// <summary>Creates the namespace with <c>ip netns add NAME</c>. Fails if it already exists.</summary>
    public static NetworkNamespace Create(string name)
    {
        ValidateName(name);
        Ip(["netns", "add", name], check: true);
        return new NetworkNamespace(name);
    }

    /// <summary>
    /// A handle on a namespace another process created (e.g. the benchmark worker reaching the
    /// sandbox's client): usable like any other, but disposing it leaves the namespace in place.
    /// </summary>
    public static NetworkNamespace Attach(string name)
    {
        ValidateName(name);
        if (!File.Exists($"{RunDirectory}/{name}")) throw new SandboxException($"Network namespace {name} does not exist.");
        return new NetworkNamespace(name, owned: false);
    }

    /// <inheritdoc cref="Create"/>
    public static async Task<NetworkNamespace> CreateAsync(string name, CancellationToken cancellationToken = default)
    {
        ValidateName(name);
        await IpAsync(["netns", "add", name], check: true, cancellationToken: cancellationToken).ConfigureAwait(false);
        return new NetworkNamespace(name);
    }

    /// <summary>Whether a namespace called <paramref name="name"/> is currently mounted under <see cref="RunDirectory"/>.</summary>
    public static bool Exists(string name) => IsValidName(name) && File.Exists($"{RunDirectory}/{name}");

    /// <summary>Names of all named network namespaces (like <c>ip netns list</c>, without the ids).</summary>
    public static IReadOnlyList<string> ListNames()
    {
        try
        {
            return Directory.EnumerateFileSystemEntries(RunDirectory).Select(System.IO.Path.GetFileName).OfType<string>().Order(StringComparer.Ordinal).ToArray();
        }
        catch (DirectoryNotFoundException)
        {
            return [];
        }
    }

    /// <summary>Runs a command inside the namespace (<c>ip netns exec NAME args...</c>) and returns its exit code and output.</summary>
    public Task<ExecResult> ExecAsync(params string[] args) => ExecAsync(args, timeout: null, CancellationToken.None);

    /// <summary>Runs a command inside the namespace, bounded by <paramref name="timeout"/> (default 10 s).</summary>
    public Task<ExecResult> ExecAsync(IEnumerable<string> args, TimeSpan? timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return IpAsync(ExecArgs(args), timeout: timeout, cancellationToken: cancellationToken);
    }

    /// <summary>Like <see cref="ExecAsync(string[])"/> but throws <see cref="SandboxCommandException"/> on a non-zero exit code.</summary>
    public Task<ExecResult> CheckedExecAsync(params string[] args) => CheckedExecAsync(args, timeout: null, CancellationToken.None);

    /// <inheritdoc cref="CheckedExecAsync(string[])"/>
    public Task<ExecResult> CheckedExecAsync(IEnumerable<string> args, TimeSpan? timeout, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return IpAsync(ExecArgs(args), timeout: timeout, check: true, cancellationToken: cancellationToken);
    }

    /// <summary>
    /// Runs <c>ip -n NAME -batch -</c>: one <c>ip</c> command per line (without the leading "ip"), stopping at the first failure.
    /// </summary>
    public Task<ExecResult> IpBatchAsync(IEnumerable<string> commands, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        var script = string.Join('\n', commands) + "\n";
        return IpAsync(["-n", Name, "-batch", "-"], script, check: true, cancellationToken: cancellationToken);
    }

    /// <summary>
    /// Starts a long-running process inside the namespace (via <c>ip netns exec</c>, which execs, so the PID is the
    /// process's own). The process is killed when the namespace is disposed. With <paramref name="cgroup"/>, it runs in
    /// that cgroup v2 directory (and so do its children), e.g. where an eBPF mode's socket hooks act.
    /// </summary>
    public SandboxProcess StartProcess(string file, IEnumerable<string> args, IDictionary<string, string>? env = null, SandboxCgroup? cgroup = null)
    {
        ArgumentException.ThrowIfNullOrEmpty(file);
        ArgumentNullException.ThrowIfNull(args);
        lock (_gate)
        {
            ThrowIfDisposed();
            var process = SandboxProcess.Start(Name, file, args, env, cgroup);
            _processes.Add(process);
            return process;
        }
    }

    /// <summary>
    /// Runs <paramref name="action"/> synchronously on a dedicated new thread that first enters this namespace with
    /// <c>setns(fd, CLONE_NEWNET)</c>. Sockets created inside <paramref name="action"/> belong to this namespace and keep
    /// doing so when used from any other thread afterwards. Keep <paramref name="action"/> synchronous: continuations
    /// of anything awaited inside it run on thread-pool threads, which are in the original namespace.
    /// Exceptions thrown by <paramref name="action"/> propagate unchanged.
    /// </summary>
    public T Run<T>(Func<T> action)
    {
        ArgumentNullException.ThrowIfNull(action);
        ThrowIfDisposed();

        T result = default!;
        ExceptionDispatchInfo? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                result = RunInNamespace(action);
            }
            catch (Exception e)
            {
                failure = ExceptionDispatchInfo.Capture(e);
            }
        })
        {
            IsBackground = true,
            Name = $"netns {Name}",
        };
        thread.Start();
        thread.Join();
        failure?.Throw();
        return result;
    }

    /// <inheritdoc cref="Run{T}(Func{T})"/>
    public void Run(Action action)
    {
        ArgumentNullException.ThrowIfNull(action);
        Run<object?>(() =>
        {
            action();
            return null;
        });
    }

    /// <summary>Kills the processes started in the namespace (by PID, bounded wait), then deletes it with <c>ip netns del</c>.</summary>
    public void Dispose()
    {
        SandboxProcess[] processes;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            processes = _processes.ToArray();
        }

        foreach (var process in processes)
        {
            process.Dispose();
        }

        if (!_owned) return;
        var result = Ip(["netns", "del", Name]);
        if (!result.Succeeded && File.Exists(Path))
        {
            throw new SandboxCommandException($"ip netns del {Name}", result);
        }
    }

    public override string ToString() => Name;

    /// <summary>
    /// Runs <c>ip ARGS</c> through <see cref="ExternalCommand"/>, killed after <paramref name="timeout"/> (default
    /// <see cref="DefaultCommandTimeout"/>) with a <see cref="TimeoutException"/>. A missing <c>ip</c> throws
    /// <see cref="SandboxException"/>; with <paramref name="check"/>, so does a non-zero exit code
    /// (<see cref="SandboxCommandException"/>).
    /// </summary>
    internal static async Task<ExecResult> IpAsync(
        IReadOnlyList<string> args,
        string? standardInput = null,
        TimeSpan? timeout = null,
        bool check = false,
        CancellationToken cancellationToken = default)
    {
        CommandResult result;
        try
        {
            result = await ExternalCommand.RunAsync("ip", args, standardInput, timeout ?? DefaultCommandTimeout, cancellationToken).ConfigureAwait(false);
        }
        catch (CommandException e)
        {
            throw CouldNotStart(args, e);
        }

        return ToExecResult(args, result, check);
    }

    /// <summary>Synchronous <see cref="IpAsync"/>, for Dispose and signal handlers.</summary>
    internal static ExecResult Ip(IReadOnlyList<string> args, bool check = false)
    {
        CommandResult result;
        try
        {
            result = ExternalCommand.Run("ip", args, timeout: DefaultCommandTimeout);
        }
        catch (CommandException e)
        {
            throw CouldNotStart(args, e);
        }

        return ToExecResult(args, result, check);
    }

    internal static bool IsValidName(string name) => name is not null && ValidNamePattern().IsMatch(name);

    private static void ValidateName(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (!IsValidName(name))
        {
            throw new ArgumentException($"Invalid network namespace name '{name}': use 1-200 characters from [A-Za-z0-9._-], not starting with '.' or '-'.", nameof(name));
        }
    }

    private T RunInNamespace<T>(Func<T> action)
    {
        using var original = Interop.OpenReadOnly("/proc/thread-self/ns/net");
        using (var target = Interop.OpenReadOnly(Path))
        {
            Interop.SetNamespace(target, Interop.CLONE_NEWNET, Path);
        }

        try
        {
            return action();
        }
        finally
        {
            // The thread exits right after this, so failing to switch back would be harmless; try anyway to stay tidy.
            try
            {
                Interop.SetNamespace(original, Interop.CLONE_NEWNET, "original network namespace");
            }
            catch (SandboxException)
            {
            }
        }
    }

    private string[] ExecArgs(IEnumerable<string> args)
    {
        string[] list = ["netns", "exec", Name, .. args];
        if (list.Length == 3)
        {
            throw new ArgumentException("A command is required.", nameof(args));
        }

        return list;
    }

    private static SandboxException CouldNotStart(IReadOnlyList<string> args, CommandException e) =>
        new($"Could not start `{ExternalCommand.Format("ip", args)}`: {e.Message}", e);

    private static ExecResult ToExecResult(IReadOnlyList<string> args, CommandResult result, bool check)
    {
        var exec = ExecResult.From(result);
        return !check || exec.Succeeded ? exec : throw new SandboxCommandException(ExternalCommand.Format("ip", args), exec);
    }

    private void ThrowIfDisposed() => ObjectDisposedException.ThrowIf(_disposed, this);

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$", RegexOptions.CultureInvariant)]
    private static partial Regex ValidNamePattern();
}
