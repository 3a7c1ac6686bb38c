using System.Diagnostics;

namespace ProxyPlanes.Sandbox;

/// <summary>Runs short-lived commands (mostly <c>ip</c>) with a bounded run time.</summary>
internal static class CommandRunner
{
    internal static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(10);

    private static readonly TimeSpan KillWait = TimeSpan.FromSeconds(2);

    public static async Task<ExecResult> RunAsync(
        string file,
        IReadOnlyList<string> args,
        string? standardInput = null,
        TimeSpan? timeout = null,
        CancellationToken cancellationToken = default)
    {
        TimeSpan limit = timeout ?? DefaultTimeout;
        using Process process = Start(file, args);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        Task<string> stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        await WriteInputAsync(process, standardInput).ConfigureAwait(false);

        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        cts.CancelAfter(limit);
        try
        {
            await process.WaitForExitAsync(cts.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException)
        {
            KillQuietly(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw new TimeoutException($"Command `{Format(file, args)}` did not finish within {limit.TotalSeconds:0.###} s and was killed.");
        }

        return new ExecResult(process.ExitCode, await stdout.ConfigureAwait(false), await stderr.ConfigureAwait(false));
    }

    /// <summary>Synchronous variant for Dispose and signal handlers.</summary>
    public static ExecResult Run(string file, IReadOnlyList<string> args, string? standardInput = null, TimeSpan? timeout = null)
    {
        TimeSpan limit = timeout ?? DefaultTimeout;
        using Process process = Start(file, args);
        Task<string> stdout = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        Task<string> stderr = process.StandardError.ReadToEndAsync(CancellationToken.None);
        WriteInputAsync(process, standardInput).GetAwaiter().GetResult();
        if (!process.WaitForExit(limit))
        {
            KillQuietly(process);
            throw new TimeoutException($"Command `{Format(file, args)}` did not finish within {limit.TotalSeconds:0.###} s and was killed.");
        }

        process.WaitForExit();
        return new ExecResult(process.ExitCode, stdout.GetAwaiter().GetResult(), stderr.GetAwaiter().GetResult());
    }

    public static async Task<ExecResult> CheckedRunAsync(
        string file,
        IReadOnlyList<string> args,
        string? standardInput = null,
        TimeSpan? timeout = null,
        CancellationToken cancellationToken = default)
    {
        ExecResult result = await RunAsync(file, args, standardInput, timeout, cancellationToken).ConfigureAwait(false);
        return result.Succeeded ? result : throw new SandboxCommandException(Format(file, args), result);
    }

    public static ExecResult CheckedRun(string file, IReadOnlyList<string> args, string? standardInput = null, TimeSpan? timeout = null)
    {
        ExecResult result = Run(file, args, standardInput, timeout);
        return result.Succeeded ? result : throw new SandboxCommandException(Format(file, args), result);
    }

    public static string Format(string file, IEnumerable<string> args) =>
        string.Join(' ', new[] { file }.Concat(args).Select(Quote));

    private static string Quote(string arg) =>
        arg.Length > 0 && !arg.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"') ? arg : $"'{arg.Replace("'", "'\\''", StringComparison.Ordinal)}'";

    private static Process Start(string file, IReadOnlyList<string> args)
    {
        var startInfo = new ProcessStartInfo(file)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (string arg in args)
        {
            startInfo.ArgumentList.Add(arg);
        }

        try
        {
            return Process.Start(startInfo) ?? throw new SandboxException($"Could not start `{Format(file, args)}`.");
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            throw new SandboxException($"Could not start `{Format(file, args)}`: {e.Message}", e);
        }
    }

    private static async Task WriteInputAsync(Process process, string? input)
    {
        try
        {
            if (input is not null)
            {
                await process.StandardInput.WriteAsync(input).ConfigureAwait(false);
            }

            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // The command exited before reading its input; its exit code tells the story.
        }
    }

    private static void KillQuietly(Process process)
    {
        try
        {
            process.Kill();
            process.WaitForExit(KillWait);
        }
        catch (InvalidOperationException)
        {
            // Already gone.
        }
    }
}
