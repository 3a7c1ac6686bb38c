using System.Diagnostics;

namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// A [Fact] that skips, visibly and with the reason, only when this machine cannot run it at all
/// (not root, no cgroup v2 mount, no bpf(2); with <c>needsSocketDestroy</c>, a kernel without the bpf_sock_destroy
/// kfunc (before 6.5); with <c>needsTcx</c>, a kernel without tcx (before 6.6)). The last two are feature probes of the
/// kernel's BTF (<see cref="BpfTestSupport.KernelBtfHas"/>), not version compares. Anything else that goes wrong fails the test.
/// </summary>
public sealed class KernelFactAttribute : FactAttribute
{
    public KernelFactAttribute(bool needsCgroup = false, bool needsSocketDestroy = false, bool needsTcx = false)
    {
        Skip = SkipReason(needsCgroup, needsSocketDestroy, needsTcx);
    }

    internal static string? SkipReason(bool needsCgroup, bool needsSocketDestroy = false, bool needsTcx = false)
    {
        if (!Environment.IsPrivilegedProcess) return "needs root (bpf(2), cgroups, network namespaces)";
        if (!File.Exists("/proc/sys/kernel/unprivileged_bpf_disabled")) return "this kernel has no bpf(2) (CONFIG_BPF_SYSCALL)";
        if (BpfTestSupport.KernelVersion < new Version(5, 18))
            return $"kernel {BpfTestSupport.KernelVersion} is older than 5.18: no bpf_set_retval, which bpf/sock.c uses to refuse";
        if (needsCgroup && BpfTestSupport.CgroupRoot is null) return "no cgroup v2 mount (none in /proc/self/mountinfo)";
        if (needsSocketDestroy && !BpfTestSupport.KernelHasSocketDestroy)
            return $"kernel {BpfTestSupport.KernelVersion} has no bpf_sock_destroy kfunc in its BTF (6.5 and later): the sockets are left alone there, said at start";
        if (needsTcx && !BpfTestSupport.KernelHasTcx)
            return $"kernel {BpfTestSupport.KernelVersion} has no tcx (BPF_TCX_INGRESS is not in its BTF; 6.6 and later): Auto attaches over clsact there";
        return null;
    }
}

/// <summary>The <see cref="KernelFactAttribute"/> of a [Theory]: skips only when this machine cannot run it at all.</summary>
public sealed class KernelTheoryAttribute : TheoryAttribute
{
    public KernelTheoryAttribute(bool needsCgroup = false, bool needsSocketDestroy = false, bool needsTcx = false)
    {
        Skip = KernelFactAttribute.SkipReason(needsCgroup, needsSocketDestroy, needsTcx);
    }
}

public static class BpfTestSupport
{
    /// <summary>The repository (ProxyPlanes.sln's directory), found from the test binaries.</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string BpfDirectory => Path.Combine(RepoRoot, "bpf");

    /// <summary>The running kernel's major.minor (/proc/sys/kernel/osrelease, e.g. 6.18.44-... is 6.18).</summary>
    public static Version KernelVersion { get; } = ReadKernelVersion();

    /// <summary>
    /// Whether the running kernel knows tcx: its BTF names the attach type BPF_TCX_INGRESS. The test's own probe,
    /// independent of the one the loader makes (<see cref="TcAttachMode.Auto"/> tries tcx and falls back on EINVAL),
    /// so a wrong fallback fails a test instead of agreeing with itself.
    /// </summary>
    public static bool KernelHasTcx => KernelBtfHas("BPF_TCX_INGRESS");

    /// <summary>Whether the running kernel has the bpf_sock_destroy kfunc (its BTF names it), which bpf/sockdestroy.c calls.</summary>
    public static bool KernelHasSocketDestroy => KernelBtfHas("bpf_sock_destroy");

    /// <summary>
    /// Whether <paramref name="name"/> is one of the strings of the kernel's BTF (/sys/kernel/btf/vmlinux: every type,
    /// field, enum value and function name the kernel describes); false without BTF.
    /// </summary>
    public static bool KernelBtfHas(string name)
    {
        var btf = KernelBtf.Value;
        var needle = new byte[name.Length + 2];
        System.Text.Encoding.ASCII.GetBytes(name, 0, name.Length, needle, 1);
        return btf.AsSpan().IndexOf(needle) >= 0; // NUL-delimited: the whole string, not a prefix or suffix
    }

    private static readonly Lazy<byte[]> KernelBtf = new(() => File.Exists("/sys/kernel/btf/vmlinux") ? File.ReadAllBytes("/sys/kernel/btf/vmlinux") : []);

    /// <summary>The cgroup v2 mount: /sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup when it is v2.</summary>
    public static string? CgroupRoot => ProxyPlanes.Sandbox.SandboxCgroup.Root;

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
