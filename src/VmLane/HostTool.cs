using System.Diagnostics;

namespace ProxyPlanes.VmLane;

/// <summary>
/// Runs a host tool to completion while building the initramfs and the boot image. Core's
/// <c>ExternalCommand</c> takes and returns text; cpio's archive, the kernel's xz stream and the
/// decompressed kernel are binary, so these streams are piped as they are.
/// </summary>
internal static class HostTool
{
    public sealed record Output(int ExitCode, string StandardOutput, string StandardError);

    public static async Task<Output> RunAsync(
        string file, IEnumerable<string> args, CancellationToken ct, string? workingDirectory = null, Stream? stdin = null, Stream? stdout = null)
    {
        var info = new ProcessStartInfo(file)
        {
            UseShellExecute = false,
            RedirectStandardInput = true,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            WorkingDirectory = workingDirectory ?? "/",
        };
        foreach (var a in args) info.ArgumentList.Add(a);
        using var process = Process.Start(info) ?? throw new VmLaneException($"could not start {file}");
        try
        {
            var errTask = process.StandardError.ReadToEndAsync(ct);
            var outTask = stdout is null ? process.StandardOutput.ReadToEndAsync(ct) : CopyAsync(process.StandardOutput.BaseStream, stdout, ct);
            try
            {
                if (stdin is not null) await stdin.CopyToAsync(process.StandardInput.BaseStream, ct);
                process.StandardInput.Close();
            }
            catch (IOException)
            {
                // The tool stopped reading its input (xz --single-stream does at the stream's end).
            }
            await process.WaitForExitAsync(ct);
            return new Output(process.ExitCode, await outTask, await errTask);
        }
        catch (OperationCanceledException)
        {
            try { process.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
            throw;
        }
    }

    private static async Task<string> CopyAsync(Stream from, Stream to, CancellationToken ct)
    {
        await from.CopyToAsync(to, ct);
        return "";
    }

    /// <summary>The full path of an executable: <paramref name="name"/> itself if it has a slash, else looked up on PATH.</summary>
    public static string? Find(string name)
    {
        if (name.Contains('/')) return File.Exists(name) ? name : null;
        var path = Environment.GetEnvironmentVariable("PATH") ?? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
        foreach (var dir in path.Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            var candidate = Path.Combine(dir, name);
            if (File.Exists(candidate)) return candidate;
        }
        return null;
    }

    public static string Require(string name, string package) =>
        Find(name) ?? throw new VmLaneException($"{name} not found: install the Debian package {package} (scripts/setup.sh does)");
}
