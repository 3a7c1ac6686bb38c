using System.Diagnostics;

namespace ProxyPlanes.TestKit;

/// <summary>
/// A child cgroup v2 directory this test made (never the root): removed on dispose, after moving any
/// process still in it to the parent.
/// </summary>
public sealed class TestCgroup : IDisposable
{
    public TestCgroup(string suffix)
    {
        var root = Root ?? throw new InvalidOperationException("no cgroup v2 mount");
        Path = System.IO.Path.Combine(root, $"pp-ebpf-test-{Environment.ProcessId}-{suffix}");
        ParentPath = root;
        Directory.CreateDirectory(Path);
    }

    /// <summary>The cgroup v2 mount: /sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup when it is v2.</summary>
    public static string? Root { get; } =
        new[] { "/sys/fs/cgroup/unified", "/sys/fs/cgroup" }.FirstOrDefault(dir => File.Exists(System.IO.Path.Combine(dir, "cgroup.subtree_control")));

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
        var (code, error) = Mount.Run("mount", "-t", "bpf", "bpf", Path);
        if (code != 0)
        {
            Directory.Delete(Path);
            throw new InvalidOperationException($"mount -t bpf bpf {Path}: {error}");
        }
    }

    public string Path { get; }

    public void Dispose()
    {
        Mount.Run("umount", Path);
        Directory.Delete(Path);
    }
}

/// <summary>
/// A second mount of the cgroup v2 hierarchy in a temporary directory: the same cgroups under another
/// path, for a process started by <c>ip netns exec</c>, which remounts /sys and so hides /sys/fs/cgroup.
/// </summary>
public sealed class CgroupAliasMount : IDisposable
{
    public CgroupAliasMount()
    {
        Path = Directory.CreateTempSubdirectory("pp-ebpf-cgroup2-").FullName;
        var (code, error) = Mount.Run("mount", "-t", "cgroup2", "none", Path);
        if (code != 0)
        {
            Directory.Delete(Path);
            throw new InvalidOperationException($"mount -t cgroup2 none {Path}: {error}");
        }
    }

    public string Path { get; }

    /// <summary>The path of <paramref name="cgroup"/> (a directory under <see cref="TestCgroup.Root"/>) through this mount.</summary>
    public string PathOf(TestCgroup cgroup) => System.IO.Path.Combine(Path, System.IO.Path.GetRelativePath(cgroup.ParentPath, cgroup.Path));

    public void Dispose()
    {
        Mount.Run("umount", Path);
        Directory.Delete(Path);
    }
}

internal static class Mount
{
    /// <summary>Runs mount or umount (bounded to 30 s); returns the exit code and stderr.</summary>
    public static (int ExitCode, string Error) Run(string file, params string[] args)
    {
        var start = new ProcessStartInfo(file) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args) start.ArgumentList.Add(arg);
        using var process = Process.Start(start)!;
        var error = process.StandardError.ReadToEndAsync();
        process.StandardOutput.ReadToEnd();
        if (!process.WaitForExit(TimeSpan.FromSeconds(30)))
        {
            process.Kill();
            return (-1, $"{file} did not finish in 30 s");
        }
        return (process.ExitCode, error.Result);
    }
}
