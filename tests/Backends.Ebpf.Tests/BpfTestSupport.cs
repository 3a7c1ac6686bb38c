using System.Diagnostics;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// A [Fact] that skips, visibly and with the reason, only when this machine cannot run it at all
/// (not root, no cgroup v2 mount, no bpf(2)). Anything else that goes wrong fails the test.
/// </summary>
public sealed class KernelFactAttribute : FactAttribute
{
    public KernelFactAttribute(bool needsCgroup = false)
    {
        Skip = SkipReason(needsCgroup);
    }

    internal static string? SkipReason(bool needsCgroup)
    {
        if (!Environment.IsPrivilegedProcess) return "needs root (bpf(2), cgroups, network namespaces)";
        if (!File.Exists("/proc/sys/kernel/unprivileged_bpf_disabled")) return "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL)";
        if (BpfTestSupport.KernelVersion < new Version(5, 18))
            return $"kernel {BpfTestSupport.KernelVersion} is older than 5.18: no bpf_set_retval, which bpf/sock.c uses to refuse";
        if (needsCgroup && BpfTestSupport.CgroupRoot is null) return "no cgroup v2 mount (looked at /sys/fs/cgroup/unified and /sys/fs/cgroup)";
        return null;
    }
}

/// <summary>The <see cref="KernelFactAttribute"/> of a [Theory]: skips only when this machine cannot run it at all.</summary>
public sealed class KernelTheoryAttribute : TheoryAttribute
{
    public KernelTheoryAttribute()
    {
        Skip = KernelFactAttribute.SkipReason(needsCgroup: false);
    }
}

public static class BpfTestSupport
{
    /// <summary>The repository (ProxyPlanes.sln's directory), found from the test binaries.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string BpfDirectory => Path.Combine(RepoRoot, "bpf");

    /// <summary>The running kernel's major.minor (/proc/sys/kernel/osrelease, e.g. 6.18.44-... is 6.18).</summary>
    public static Version KernelVersion { get; } = ReadKernelVersion();

    /// <summary>The cgroup v2 mount: /sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup when it is v2.</summary>
    public static string? CgroupRoot { get; } =
        new[] { "/sys/fs/cgroup/unified", "/sys/fs/cgroup" }.FirstOrDefault(dir => File.Exists(Path.Combine(dir, "cgroup.subtree_control")));

    /// <summary>Runs a program to completion; returns (exit code, stdout, stderr).</summary>
    public static (int ExitCode, string Output, string Error) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var output = process.StandardOutput.ReadToEndAsync();
        var error = process.StandardError.ReadToEndAsync();
        if (!process.WaitForExit(TimeSpan.FromSeconds(60)))
        {
            process.Kill(entireProcessTree: true);
            throw new TimeoutException($"{file} {string.Join(' ', args)} did not finish in 60 s");
        }
        return (process.ExitCode, output.Result, error.Result);
    }

    private static Version ReadKernelVersion()
    {
        var parts = File.ReadAllText("/proc/sys/kernel/osrelease").Trim().Split('.', '-');
        return new Version(int.Parse(parts[0], System.Globalization.CultureInfo.InvariantCulture), int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture));
    }

    private static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "ProxyPlanes.sln"))) return dir.FullName;
        throw new DirectoryNotFoundException($"ProxyPlanes.sln not found above {AppContext.BaseDirectory}");
    }
}

/// <summary>
/// A child cgroup v2 directory this test made (never the root): removed on dispose, after moving any
/// process still in it to the parent.
/// </summary>
public sealed class TestCgroup : IDisposable
{
    public TestCgroup(string suffix)
    {
        var root = BpfTestSupport.CgroupRoot ?? throw new InvalidOperationException("no cgroup v2 mount");
        Path = System.IO.Path.Combine(root, $"pp-ebpf-test-{Environment.ProcessId}-{suffix}");
        ParentPath = root;
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string ParentPath { get; }

    public void Dispose()
    {
        if (!Directory.Exists(Path)) return;
        for (var attempt = 0; attempt < 50; attempt++)
        {
            var pids = File.ReadAllLines(System.IO.Path.Combine(Path, "cgroup.procs")).Where(line => line.Length > 0).ToArray();
            foreach (var pid in pids)
            {
                try
                {
                    File.AppendAllText(System.IO.Path.Combine(ParentPath, "cgroup.procs"), pid);
                }
                catch (IOException)
                {
                    // exited meanwhile
                }
            }
            try
            {
                Directory.Delete(Path);
                return;
            }
            catch (IOException) when (attempt < 49)
            {
                Thread.Sleep(20); // EBUSY: a process still leaving
            }
        }
    }
}

/// <summary>A directory with a private bpf filesystem mounted on it: unmounted and removed on dispose.</summary>
public sealed class TestBpfFs : IDisposable
{
    public TestBpfFs()
    {
        Path = Directory.CreateTempSubdirectory("pp-ebpf-bpffs-").FullName;
        var (code, _, error) = BpfTestSupport.Run("mount", "-t", "bpf", "bpf", Path);
        if (code != 0)
        {
            Directory.Delete(Path);
            throw new InvalidOperationException($"mount -t bpf bpf {Path}: {error}");
        }
    }

    public string Path { get; }

    public void Dispose()
    {
        BpfTestSupport.Run("umount", Path);
        Directory.Delete(Path);
    }
}
