using System.ComponentModel;
using System.Diagnostics;

namespace ProxyPlanes.Core.Util;

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

/// <summary>Runs the kernel tools a backend drives (iptables-restore, nft, ...), feeding stdin and capturing output.</summary>
public static class ExternalCommand
{
    public static async Task<CommandResult> RunAsync(string file, IEnumerable<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
    {
        var start = new ProcessStartInfo(file)
        {
            RedirectStandardInput = standardInput is not null,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var argument in arguments) start.ArgumentList.Add(argument);
        Process process;
        try
        {
            process = Process.Start(start) ?? throw new CommandException($"{file}: could not be started");
        }
        catch (Win32Exception e)
        {
            throw new CommandException($"{file}: {e.Message} (is it installed and on PATH?)", null, e);
        }
        using (process)
        {
            var output = process.StandardOutput.ReadToEndAsync(cancellationToken);
            var error = process.StandardError.ReadToEndAsync(cancellationToken);
            if (standardInput is not null)
            {
                try
                {
                    await process.StandardInput.WriteAsync(standardInput.AsMemory(), cancellationToken).ConfigureAwait(false);
                    process.StandardInput.Close();
                }
                catch (IOException)
                {
                    // The tool exited before reading all input; its exit code and stderr say why.
                }
            }
            try
            {
                await process.WaitForExitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
                throw;
            }
            return new CommandResult(process.ExitCode, await output.ConfigureAwait(false), await error.ConfigureAwait(false));
        }
    }

    /// <summary>Runs and throws a <see cref="CommandException"/> naming the command when it fails.</summary>
    public static async Task<CommandResult> RunCheckedAsync(string file, IEnumerable<string> arguments, string? standardInput = null, CancellationToken cancellationToken = default)
    {
        var args = arguments.ToList();
        var result = await RunAsync(file, args, standardInput, cancellationToken).ConfigureAwait(false);
        if (!result.Succeeded)
            throw new CommandException($"{file} {string.Join(' ', args)} exited with {result.ExitCode}: {FirstLines(result.StandardError, 5)}", result);
        return result;
    }

    public static string FirstLines(string text, int count) =>
        string.Join(" | ", text.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Take(count));
}
