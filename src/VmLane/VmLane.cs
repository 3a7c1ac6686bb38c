using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;

namespace ProxyPlanes.VmLane;

/// <summary>
/// Runs a shell command as root inside a VM that boots Debian's stock kernel (which has IPVS as
/// modules, unlike the development and CI kernels) under <c>qemu-system-x86_64 -accel tcg</c>.
/// The guest sees the host's whole filesystem at the same paths (read-only 9p share under a tmpfs
/// overlay: writable, writes discarded), so the host's tools, .NET and built test binaries run
/// there as they are; results come back through a writable share. See vm/README.md.
/// </summary>
public static partial class VmLane
{
    /// <summary>Where the guest sees the writable lane share (<see cref="VmLaneOptions.LaneDirectory"/>).</summary>
    public const string GuestLaneDirectory = "/mnt/lane";

    /// <summary>Set to 1 for commands run in the VM.</summary>
    public const string InsideVmVariable = "PROXYPLANES_VM";

    /// <summary>Set for the guest's command from <see cref="VmLaneOptions.TimeScale"/>: how much longer waits may take there.</summary>
    public const string TimeScaleVariable = "PROXYPLANES_TIME_SCALE";

    /// <summary>A host file each VM run appends its wall time to (see scripts/test.sh); unset: none.</summary>
    public const string TimeLogVariable = "PROXYPLANES_VM_TIME_LOG";

    public const string QemuPackage = "qemu-system-x86";

    /// <summary>How long after the caller's timeout the host-side <c>timeout</c> wrapper kills qemu itself (in case this process died).</summary>
    private static readonly TimeSpan OrphanGrace = TimeSpan.FromSeconds(30);

    /// <summary>True inside the VM lane (where there is no VM to start).</summary>
    public static bool IsInsideVm => Environment.GetEnvironmentVariable(InsideVmVariable) == "1";

    /// <summary>Runs <paramref name="command"/> (a <c>/bin/sh</c> script) in a fresh VM with the default options.</summary>
    public static Task<VmRunResult> RunAsync(string command, TimeSpan timeout, CancellationToken ct = default) =>
        RunAsync(command, timeout, VmLaneOptions.Default, ct);

    /// <summary>
    /// Boots a VM, runs <paramref name="command"/> (a <c>/bin/sh</c> script) in it as root, and powers it
    /// off when the command ends. At <paramref name="timeout"/> (boot included) the VM is killed and the
    /// result says <see cref="VmRunResult.TimedOut"/>; on cancellation it is killed and the call throws.
    /// Either way qemu is gone when this returns.
    /// </summary>
    /// <exception cref="VmLaneException">qemu, the kernel or a tool is missing (the message names the package), or the VM stopped without running the command.</exception>
    public static async Task<VmRunResult> RunAsync(string command, TimeSpan timeout, VmLaneOptions options, CancellationToken ct = default)
    {
        if (IsInsideVm) throw new VmLaneException("already inside the VM lane: a VM cannot be started from there");
        var qemu = HostTool.Find(options.Qemu)
            ?? throw new VmLaneException($"{options.Qemu} not found: install the Debian package {QemuPackage} (scripts/setup.sh does)");
        var wrapper = HostTool.Require("timeout", "coreutils");
        var kernel = options.Kernel ?? VmKernel.FindNewest();
        var cache = options.CacheDirectory ?? Initramfs.DefaultCacheDirectory();
        var image = await BootImage.EnsureAsync(kernel, cache, ct);
        var initramfs = await Initramfs.EnsureAsync(kernel, cache, ct);

        var run = Directory.CreateTempSubdirectory("proxyplanes-vm-run-");
        try
        {
            var lane = options.LaneDirectory is null ? Path.Combine(run.FullName, "lane") : Path.GetFullPath(options.LaneDirectory);
            PrepareLane(lane, command, options);
            var console = Path.Combine(run.FullName, "console.log");
            var pidFile = Path.Combine(run.FullName, "qemu.pid");

            var info = new ProcessStartInfo(wrapper)
            {
                UseShellExecute = false,
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                WorkingDirectory = run.FullName,
            };
            info.ArgumentList.Add("--signal=KILL");
            info.ArgumentList.Add(((long)Math.Ceiling((timeout + OrphanGrace).TotalSeconds)).ToString(CultureInfo.InvariantCulture));
            info.ArgumentList.Add(qemu);
            foreach (var arg in QemuArguments(image, initramfs, lane, console, pidFile, options)) info.ArgumentList.Add(arg);

            var qemuOutput = new StringBuilder();
            var stopwatch = Stopwatch.StartNew();
            using var process = Process.Start(info) ?? throw new VmLaneException($"could not start {qemu}");
            process.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (qemuOutput) qemuOutput.AppendLine(e.Data); };
            process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (qemuOutput) qemuOutput.AppendLine(e.Data); };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            process.StandardInput.Close();

            var timedOut = false;
            var qemuPid = 0;
            try
            {
                using var deadline = CancellationTokenSource.CreateLinkedTokenSource(ct);
                deadline.CancelAfter(timeout);
                qemuPid = await ReadPidAsync(pidFile, process, deadline.Token);
                await process.WaitForExitAsync(deadline.Token);
            }
            catch (OperationCanceledException)
            {
                timedOut = !ct.IsCancellationRequested;
            }
            finally
            {
                if (qemuPid == 0) qemuPid = ReadPid(pidFile);
                await KillAsync(process, qemuPid);
            }
            stopwatch.Stop();
            RecordTime(stopwatch.Elapsed, command);
            ct.ThrowIfCancellationRequested();

            var consoleLog = ReadText(console);
            if (options.LaneDirectory is not null) File.WriteAllText(Path.Combine(lane, "console.log"), consoleLog);
            var exitText = ReadText(Path.Combine(lane, "exit-code")).Trim();
            int? exitCode = int.TryParse(exitText, NumberStyles.Integer, CultureInfo.InvariantCulture, out var code) ? code : null;
            if (exitCode is null && !timedOut)
            {
                string qemuText;
                lock (qemuOutput) qemuText = qemuOutput.ToString().Trim();
                throw new VmLaneException(
                    $"the VM stopped without finishing the command (qemu exit code {process.ExitCode}{(qemuText.Length > 0 ? ": " + qemuText : "")})\n--- console ---\n{consoleLog}")
                { ConsoleLog = consoleLog };
            }

            var (boot, commandTime) = Marks(consoleLog);
            return new VmRunResult(
                exitCode,
                ReadText(Path.Combine(lane, "stdout")),
                ReadText(Path.Combine(lane, "stderr")),
                consoleLog,
                stopwatch.Elapsed,
                timedOut,
                kernel.Release,
                qemuPid,
                boot,
                commandTime);
        }
        finally
        {
            try { run.Delete(recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>The emulator's arguments (<paramref name="bootImage"/>: see <see cref="BootImage"/>): TCG with all the CPU features it emulates, no devices but the two 9p shares and the serial console.</summary>
    public static IReadOnlyList<string> QemuArguments(string bootImage, string initramfs, string lane, string console, string pidFile, VmLaneOptions options)
    {
        // loglevel=5: quiet, but a soft lockup's or a hung task's call trace (KERN_DEFAULT) reaches console.log.
        var append = $"console=ttyS0 panic=-1 quiet loglevel=5 mitigations=off rdinit=/init {options.ExtraKernelArguments}".Trim();
        return
        [
            // x86-64 on x86-64 TCG runs one host thread per vCPU; "-cpu max" gives .NET the x86-64-v2+ features it needs.
            "-accel", "tcg,thread=multi",
            "-cpu", "max",
            "-smp", options.Cpus.ToString(CultureInfo.InvariantCulture),
            "-m", options.MemoryMiB.ToString(CultureInfo.InvariantCulture),
            "-nodefaults",
            "-display", "none",
            "-no-reboot", // a guest panic (panic=-1 reboots) or reboot ends qemu instead
            "-serial", "file:" + console,
            "-pidfile", pidFile,
            "-kernel", bootImage,
            "-initrd", initramfs,
            "-append", append,
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", $"local,path={QemuOptionValue(lane)},mount_tag=lane,security_model=none,multidevs=remap",
        ];
    }

    /// <summary>
    /// Appends "SECONDS TAB COMMAND" to the file <see cref="TimeLogVariable"/> names, if any, so a
    /// test run can say how much of its time the VM lane took (scripts/test.sh does).
    /// </summary>
    private static void RecordTime(TimeSpan elapsed, string command)
    {
        var log = Environment.GetEnvironmentVariable(TimeLogVariable);
        if (string.IsNullOrEmpty(log)) return;
        var summary = command.ReplaceLineEndings(" ");
        if (summary.Length > 120) summary = summary[..120] + "...";
        try
        {
            File.AppendAllText(log, elapsed.TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + "\t" + summary + "\n");
        }
        catch (IOException) { } // a report, never a reason to fail a run
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>qemu's option syntax doubles commas inside a value.</summary>
    private static string QemuOptionValue(string value) => value.Replace(",", ",,", StringComparison.Ordinal);

    private static void PrepareLane(string lane, string command, VmLaneOptions options)
    {
        Directory.CreateDirectory(lane);
        foreach (var stale in new[] { "stdout", "stderr", "exit-code", "console.log" }) File.Delete(Path.Combine(lane, stale));
        var script = new StringBuilder("# written by ProxyPlanes.VmLane; run by vm/init in the guest\n");
        foreach (var (name, value) in options.Environment)
        {
            if (!EnvironmentName().IsMatch(name)) throw new ArgumentException($"'{name}' is not an environment variable name", nameof(options));
            script.Append("export ").Append(name).Append('=').Append(ShellQuote(value)).Append('\n');
        }
        if (!options.Environment.ContainsKey(TimeScaleVariable))
            script.Append("export ").Append(TimeScaleVariable).Append('=').Append(options.TimeScale.ToString(CultureInfo.InvariantCulture)).Append('\n');
        script.Append("cd ").Append(ShellQuote(options.WorkingDirectory)).Append(" || exit 125\n");
        script.Append(command).Append('\n');
        File.WriteAllText(Path.Combine(lane, "command.sh"), script.ToString());
    }

    public static string ShellQuote(string value) => "'" + value.Replace("'", "'\\''", StringComparison.Ordinal) + "'";

    /// <summary>Waits for qemu's pidfile (written once qemu has set up, before the guest runs).</summary>
    private static async Task<int> ReadPidAsync(string pidFile, Process wrapper, CancellationToken ct)
    {
        while (!wrapper.HasExited)
        {
            var pid = ReadPid(pidFile);
            if (pid > 0) return pid;
            await Task.Delay(50, ct);
        }
        return ReadPid(pidFile);
    }

    private static int ReadPid(string pidFile)
    {
        try
        {
            return int.TryParse(File.ReadAllText(pidFile).Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var pid) ? pid : 0;
        }
        catch (IOException)
        {
            return 0;
        }
    }

    /// <summary>Kills qemu by PID (then the wrapper), and waits until both are gone.</summary>
    private static async Task KillAsync(Process wrapper, int qemuPid)
    {
        if (!wrapper.HasExited)
        {
            if (qemuPid > 0 && IsQemu(qemuPid))
            {
                try
                {
                    using var qemu = Process.GetProcessById(qemuPid);
                    qemu.Kill();
                }
                catch (Exception e) when (e is ArgumentException or InvalidOperationException or System.ComponentModel.Win32Exception)
                {
                    // already gone
                }
            }
            try { wrapper.Kill(entireProcessTree: true); } catch (InvalidOperationException) { }
        }
        using (var bound = new CancellationTokenSource(TimeSpan.FromSeconds(10)))
        {
            try { await wrapper.WaitForExitAsync(bound.Token); } catch (OperationCanceledException) { }
        }
        var until = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (qemuPid > 0 && IsQemu(qemuPid))
        {
            if (DateTime.UtcNow > until) throw new VmLaneException($"qemu (PID {qemuPid}) is still running after SIGKILL");
            await Task.Delay(50);
        }
    }

    /// <summary>PID <paramref name="pid"/> is a live (not zombie) qemu process.</summary>
    public static bool IsQemu(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var close = stat.LastIndexOf(')');
            var name = stat[(stat.IndexOf('(') + 1)..close];
            var state = stat[(close + 2)..].Split(' ')[0];
            return name.StartsWith("qemu", StringComparison.Ordinal) && state != "Z" && state != "X";
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or ArgumentOutOfRangeException)
        {
            return false;
        }
    }

    private static string ReadText(string path)
    {
        try
        {
            return File.ReadAllText(path);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            return "";
        }
    }

    /// <summary>Boot time (guest uptime at "vmlane: start") and command time (to "vmlane: exit") from the console's marks.</summary>
    private static (TimeSpan? Boot, TimeSpan? Command) Marks(string console)
    {
        double? start = null, exit = null;
        foreach (Match m in MarkLine().Matches(console))
        {
            var at = double.Parse(m.Groups["at"].Value, CultureInfo.InvariantCulture);
            if (m.Groups["what"].Value == "start") start = at;
            else exit = at;
        }
        return (start is null ? null : TimeSpan.FromSeconds(start.Value),
                start is null || exit is null ? null : TimeSpan.FromSeconds(exit.Value - start.Value));
    }

    [GeneratedRegex(@"^vmlane: (?<what>start|exit -?\d+) @(?<at>\d+(\.\d+)?)", RegexOptions.Multiline)]
    private static partial Regex MarkLine();

    [GeneratedRegex(@"^[A-Za-z_][A-Za-z0-9_]*$")]
    private static partial Regex EnvironmentName();
}
