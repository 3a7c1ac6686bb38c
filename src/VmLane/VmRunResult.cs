namespace ProxyPlanes.VmLane;

/// <summary>What a command run in the VM did.</summary>
/// <param name="ExitCode">The command's exit code in the guest; null when it did not finish (<see cref="TimedOut"/>).</param>
/// <param name="StandardOutput">What the command wrote to stdout (as far as it got, when it timed out).</param>
/// <param name="StandardError">What the command wrote to stderr.</param>
/// <param name="ConsoleLog">The guest's serial console: kernel warnings and the init's "vmlane:" marks.</param>
/// <param name="Elapsed">Host wall time from starting qemu until it was gone.</param>
/// <param name="TimedOut">The run hit its timeout and the VM was killed.</param>
/// <param name="KernelRelease">The release the guest booted.</param>
/// <param name="QemuProcessId">The emulator's host PID (gone by the time this is returned).</param>
/// <param name="BootTime">Guest uptime when the command started (the boot, module loading and mounts); null if it never started.</param>
/// <param name="CommandTime">Guest time the command took; null if it did not finish.</param>
public sealed record VmRunResult(
    int? ExitCode,
    string StandardOutput,
    string StandardError,
    string ConsoleLog,
    TimeSpan Elapsed,
    bool TimedOut,
    string KernelRelease,
    int QemuProcessId,
    TimeSpan? BootTime,
    TimeSpan? CommandTime)
{
    public bool Succeeded => ExitCode == 0;

    /// <summary>A report for assertion messages: outcome, timings, stdout, stderr and the console's tail.</summary>
    public override string ToString()
    {
        var outcome = TimedOut ? "timed out" : $"exit code {ExitCode}";
        var tail = string.Join('\n', ConsoleLog.Split('\n').TakeLast(40));
        return $"VM run ({KernelRelease}): {outcome} after {Elapsed.TotalSeconds:F1} s (boot {BootTime?.TotalSeconds:F1} s, command {CommandTime?.TotalSeconds:F1} s)\n"
            + $"--- stdout ---\n{StandardOutput}\n--- stderr ---\n{StandardError}\n--- console (tail) ---\n{tail}";
    }
}
