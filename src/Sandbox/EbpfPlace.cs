using ProxyPlanes.NodeTools;

namespace ProxyPlanes.Sandbox;

/// <summary>
/// A child cgroup v2 directory this process made (never the root, never one it did not make): removed on
/// dispose, after moving any process still in it to the parent.
/// </summary>
public class SandboxCgroup : IDisposable
{
    /// <summary>Makes <c>&lt;cgroup v2 mount&gt;/<paramref name="name"/></c>; throws a <see cref="SandboxException"/> without a cgroup v2 mount.</summary>
    public SandboxCgroup(string name)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        if (name.Contains('/', StringComparison.Ordinal) || name is "." or "..") throw new ArgumentException($"'{name}' is not a cgroup name", nameof(name));
        var root = Root ?? throw new SandboxException("no cgroup v2 is mounted (/proc/self/mountinfo has no cgroup2)");
        ParentPath = root;
        Path = System.IO.Path.Combine(root, name);
        if (Directory.Exists(Path)) throw new SandboxException($"the cgroup {Path} already exists");
        Directory.CreateDirectory(Path);
    }

    /// <summary>The cgroup v2 mount, from /proc/self/mountinfo: /sys/fs/cgroup/unified on a hybrid host, else /sys/fs/cgroup.</summary>
    public static string? Root { get; } = Mounts.Cgroup2Root();

    public string Path { get; }

    public string ParentPath { get; }

    /// <summary>
    /// <paramref name="file"/> and <paramref name="args"/> wrapped so that the process first joins this cgroup (a shell
    /// writes its own PID to cgroup.procs, then execs: the PID stays the same, and children inherit the cgroup).
    /// </summary>
    public (string File, string[] Args) Wrap(string file, IEnumerable<string> args) =>
        ("sh", ["-c", "echo $$ > \"$0/cgroup.procs\" && exec \"$@\"", Path, file, .. args]);

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing || !Directory.Exists(Path)) return;
        for (var attempt = 0; attempt < 50; attempt++)
        {
            foreach (var pid in File.ReadAllLines(System.IO.Path.Combine(Path, "cgroup.procs")).Where(line => line.Length > 0))
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

/// <summary>A temporary directory with a file system of <c>type</c> mounted on it: unmounted and removed on dispose.</summary>
public class SandboxMount : IDisposable
{
    protected SandboxMount(string type, string prefix)
    {
        Path = Directory.CreateTempSubdirectory(prefix).FullName;
        var result = ExternalCommand.Run("mount", ["-t", type, type, Path], timeout: TimeSpan.FromSeconds(30));
        if (!result.Succeeded)
        {
            Directory.Delete(Path);
            throw new SandboxException($"mount -t {type} {type} {Path}: {result.StandardError.Trim()}");
        }
    }

    public string Path { get; }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        if (!disposing || !Directory.Exists(Path)) return;
        var result = ExternalCommand.Run("umount", [Path], timeout: TimeSpan.FromSeconds(30));
        if (!result.Succeeded) throw new SandboxException($"umount {Path}: {result.StandardError.Trim()}");
        Directory.Delete(Path);
    }
}

/// <summary>A private bpf filesystem (what <c>--bpf-fs</c> names): unmounting it drops every pin in it.</summary>
public class BpfFsMount() : SandboxMount("bpf", "pp-ebpf-bpffs-");

/// <summary>
/// A second mount of the cgroup v2 hierarchy in a temporary directory: the same cgroups under another
/// path, for a process started by <c>ip netns exec</c>, which remounts /sys and so hides /sys/fs/cgroup.
/// </summary>
public sealed class CgroupAliasMount() : SandboxMount("cgroup2", "pp-ebpf-cgroup2-")
{
    /// <summary>The path of <paramref name="cgroup"/> through this mount.</summary>
    public string PathOf(SandboxCgroup cgroup)
    {
        ArgumentNullException.ThrowIfNull(cgroup);
        return System.IO.Path.Combine(Path, System.IO.Path.GetRelativePath(cgroup.ParentPath, cgroup.Path));
    }
}

/// <summary>
/// Where a run of <c>--mode=ebpf</c> in a sandbox keeps its state: a cgroup of its own for the socket hooks (the
/// processes that play the node's and the pods' local clients join it), seen by the daemon through a cgroup2 alias
/// mount (the daemon runs under <c>ip netns exec</c>), and a private bpffs for the pins. Never the node defaults
/// (the host's cgroup root, /sys/fs/bpf). Dispose removes all of it, pins included, even after a failure; kill the
/// processes using it first.
/// </summary>
public sealed class EbpfPlace : IDisposable
{
    private readonly CgroupAliasMount _alias;
    private readonly BpfFsMount _bpfFs;

    /// <summary>Makes the cgroup <c>pp-ebpf-<paramref name="name"/></c>, the alias mount and the bpffs, or none of them.</summary>
    public EbpfPlace(string name)
    {
        Cgroup = new SandboxCgroup("pp-ebpf-" + name);
        try
        {
            _alias = new CgroupAliasMount();
            try
            {
                _bpfFs = new BpfFsMount();
            }
            catch
            {
                _alias.Dispose();
                throw;
            }
        }
        catch
        {
            Cgroup.Dispose();
            throw;
        }
        DaemonCgroupPath = _alias.PathOf(Cgroup);
    }

    public SandboxCgroup Cgroup { get; }

    /// <summary>The cgroup as a process under <c>ip netns exec</c> sees it: <c>--bpf-cgroup</c>.</summary>
    public string DaemonCgroupPath { get; }

    /// <summary><c>--bpf-fs</c>.</summary>
    public string BpfFs => _bpfFs.Path;

    /// <summary>The daemon's flags for this place.</summary>
    public string[] Flags => [$"--bpf-fs={BpfFs}", $"--bpf-cgroup={DaemonCgroupPath}"];

    /// <summary>Unmounts the bpffs (its pins go, and with the last reference the links detach), then the alias, then removes the cgroup.</summary>
    public void Dispose()
    {
        try
        {
            _bpfFs.Dispose();
        }
        finally
        {
            try
            {
                _alias.Dispose();
            }
            finally
            {
                Cgroup.Dispose();
            }
        }
    }
}
