using System.ComponentModel;
using System.Diagnostics;

namespace ProxyPlanes.NodeTools;

/// <summary>The result of running a kernel tool.</summary>
public readonly record struct CommandResult(int ExitCode, string StandardOutput, string StandardError)
{
    public bool Succeeded => ExitCode == 0;
}

/// <summary>A kernel tool that could not be run or that failed; the message names the command and its error.</summary>
public sealed class CommandException(string message, CommandResult? result = null, Exception? inner = null) : Exception(message, inner)
{
    public CommandResult? Result { get; } = result;
}

/// <summary>
/// Runs short-lived tools (iptables-restore, nft, ip, ...), feeding stdin and capturing output. The one place that
/// starts such processes: the backends and the sandbox both use it.
/// </summary>
/// <remarks>
/// Standard input is always redirected and closed after <c>standardInput</c> (if any) is written, so a tool never
/// reads the caller's terminal. A tool that cannot be started throws <see cref="CommandException"/>. With a timeout,
/// a tool still running when it expires is killed together with its children and a <see cref="TimeoutException"/>
/// naming the command line and the timeout is thrown; when the caller's token is cancelled, the tool is killed
/// likewise and <see cref="OperationCanceledException"/> is thrown.
/// </remarks>
public static class ExternalCommand
{
    /// <summary>How long to wait for a killed tool to go away.</summary>
    private static readonly TimeSpan KillWait = TimeSpan.FromSeconds(2);

    /// <summary>Runs without a time limit (until it exits or <paramref name="cancellationToken"/> is cancelled).</summary>
    public static Task<CommandResult> RunAsync(string file, IEnumerable<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default) =>
        RunAsync(file, arguments, standardInput, timeout: null, cancellationToken);

    /// <summary>Runs, killing the tool and throwing <see cref="TimeoutException"/> if it takes longer than <paramref name="timeout"/> (null: no limit).</summary>
    public static Task<CommandResult> RunAsync(string file, IEnumerable<string> arguments, string? standardInput, TimeSpan? timeout, CancellationToken cancellationToken = default) =>
        RunWithInputAsync(file, arguments, standardInput is null ? null : (input, token) => input.WriteAsync(standardInput.AsMemory(), token), timeout, cancellationToken);

    /// <summary>
    /// Runs, with <paramref name="writeInput"/> writing standard input while the tool reads it: a large input
    /// (a whole ruleset) goes out in pieces and is never held as one string. Timeout and cancellation as
    /// <see cref="RunAsync(string, IEnumerable{string}, string?, TimeSpan?, CancellationToken)"/>.
    /// </summary>
    public static Task<CommandResult> RunWithInputAsync(string file, IEnumerable<string> arguments, Func<TextWriter, CancellationToken, Task>? writeInput, TimeSpan? timeout, CancellationToken cancellationToken = default) =>
        RunCoreAsync(file, arguments, writeInput, readOutput: null, timeout, cancellationToken);

    /// <summary>
    /// Runs with no input, handing standard output to <paramref name="readOutput"/> as a stream while the tool writes
    /// it (a large output, a whole table, is never held as one string); the result's <c>StandardOutput</c> is empty.
    /// The caller decides what a failed tool's partial output is worth: normally nothing (check the exit code). If
    /// <paramref name="readOutput"/> throws, the tool is killed and the exception passes through. Timeout and
    /// cancellation as <see cref="RunAsync(string, IEnumerable{string}, string?, TimeSpan?, CancellationToken)"/>.
    /// </summary>
    public static Task<CommandResult> RunWithOutputAsync(string file, IEnumerable<string> arguments, Func<Stream, CancellationToken, Task> readOutput, TimeSpan? timeout, CancellationToken cancellationToken = default) =>
        RunCoreAsync(file, arguments, writeInput: null, readOutput, timeout, cancellationToken);

    /// <summary>
    /// <see cref="RunWithInputAsync(string, IEnumerable{string}, Func{TextWriter, CancellationToken, Task}?, TimeSpan?, CancellationToken)"/>
    /// with standard output handed to <paramref name="readOutput"/> as in <see cref="RunWithOutputAsync"/> (e.g. drained
    /// unread, when the tool may print a large listing nobody needs).
    /// </summary>
    public static Task<CommandResult> RunWithInputAsync(string file, IEnumerable<string> arguments, Func<TextWriter, CancellationToken, Task>? writeInput, Func<Stream, CancellationToken, Task> readOutput, TimeSpan? timeout, CancellationToken cancellationToken = default) =>
        RunCoreAsync(file, arguments, writeInput, readOutput, timeout, cancellationToken);

    private static async Task<CommandResult> RunCoreAsync(string file, IEnumerable<string> arguments, Func<TextWriter, CancellationToken, Task>? writeInput, Func<Stream, CancellationToken, Task>? readOutput, TimeSpan? timeout, CancellationToken cancellationToken)
    {
        var args = arguments.ToArray();
        using var process = Start(file, args);
        using var limit = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        if (timeout is { } t) limit.CancelAfter(t);
        var output = readOutput is null
            ? process.StandardOutput.ReadToEndAsync(CancellationToken.None)
            : ReadOutputAsync(readOutput, process.StandardOutput.BaseStream, limit.Token);
        var error = process.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            try
            {
                if (writeInput is not null)
                    await writeInput(process.StandardInput, limit.Token).ConfigureAwait(false);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // The tool exited before reading all input; its exit code and stderr say why.
            }
            if (readOutput is not null) await output.ConfigureAwait(false);
            await process.WaitForExitAsync(limit.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (limit.IsCancellationRequested)
        {
            Kill(process);
            cancellationToken.ThrowIfCancellationRequested();
            throw TimedOut(file, args, timeout.GetValueOrDefault());
        }
        catch when (readOutput is not null)
        {
            // The reader gave up (e.g. output it cannot parse): the tool has nobody left to write to.
            Kill(process);
            throw;
        }
        return new CommandResult(process.ExitCode, await output.ConfigureAwait(false), await error.ConfigureAwait(false));
    }

    private static async Task<string> ReadOutputAsync(Func<Stream, CancellationToken, Task> readOutput, Stream output, CancellationToken cancellationToken)
    {
        await readOutput(output, cancellationToken).ConfigureAwait(false);
        return "";
    }

    /// <summary>
    /// Synchronous <see cref="RunAsync(string, IEnumerable{string}, string?, TimeSpan?, CancellationToken)"/>, for
    /// Dispose methods and signal or process-exit handlers, which cannot await.
    /// </summary>
    public static CommandResult Run(string file, IEnumerable<string> arguments, string? standardInput = null, TimeSpan? timeout = null)
    {
        var args = arguments.ToArray();
        using var process = Start(file, args);
        var output = process.StandardOutput.ReadToEndAsync(CancellationToken.None);
        var error = process.StandardError.ReadToEndAsync(CancellationToken.None);
        try
        {
            if (standardInput is not null) process.StandardInput.Write(standardInput);
            process.StandardInput.Close();
        }
        catch (IOException)
        {
            // The tool exited before reading all input; its exit code and stderr say why.
        }
        if (!process.WaitForExit(timeout ?? Timeout.InfiniteTimeSpan))
        {
            Kill(process);
            throw TimedOut(file, args, timeout.GetValueOrDefault());
        }
        process.WaitForExit(); // lets the output readers see end of stream
        return new CommandResult(process.ExitCode, output.GetAwaiter().GetResult(), error.GetAwaiter().GetResult());
    }

    /// <summary>Runs and throws a <see cref="CommandException"/> naming the command when it fails.</summary>
    public static Task<CommandResult> RunCheckedAsync(string file, IEnumerable<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default) =>
        RunCheckedWithInputAsync(file, arguments, standardInput is null ? null : (input, token) => input.WriteAsync(standardInput.AsMemory(), token), cancellationToken);

    /// <summary><see cref="RunWithInputAsync"/> that throws a <see cref="CommandException"/> naming the command when it fails.</summary>
    public static async Task<CommandResult> RunCheckedWithInputAsync(string file, IEnumerable<string> arguments, Func<TextWriter, CancellationToken, Task>? writeInput, CancellationToken cancellationToken = default)
    {
        var args = arguments.ToList();
        var result = await RunWithInputAsync(file, args, writeInput, timeout: null, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new CommandException($"{Format(file, args)} exited with {result.ExitCode}: {FirstLines(result.StandardError, 5)}", result);
        return result;
    }

    public static string FirstLines(string text, int count) =>
        string.Join(" | ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Take(count));

    /// <summary>The command line for humans and error messages, shell-quoting arguments that need it.</summary>
    public static string Format(string file, IEnumerable<string> arguments) =>
        string.Join(' ', arguments.Prepend(file).Select(Quote));

    private static string Quote(string arg) =>
        arg.Length > 0 && !arg.Any(c => char.IsWhiteSpace(c) || c is '\'' or '"') ? arg : $"'{arg.Replace("'", "'\\''", StringComparison.Ordinal)}'";

    private static Process Start(string file, IReadOnlyList<string> arguments)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        try
        {
            return Process.Start(start) ?? throw new CommandException($"{file}: could not be started");
        }
        catch (Win32Exception e)
        {
            throw new CommandException($"{file}: {e.Message} (is it installed and on PATH?)", null, e);
        }
    }

    private static void Kill(Process process)
    {
        try
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit(KillWait);
        }
        catch (Exception e) when (e is InvalidOperationException or Win32Exception or AggregateException)
        {
            // Already gone, or (part of) the tree could not be killed: nothing more to do.
        }
    }

    private static TimeoutException TimedOut(string file, IEnumerable<string> arguments, TimeSpan timeout) =>
        new($"Command `{Format(file, arguments)}` did not finish within {timeout.TotalSeconds:0.###} s and was killed.");
}
