namespace ProxyPlanes.NodeTools;

/// <summary>The file systems this process sees mounted, from /proc/self/mountinfo.</summary>
public static class Mounts
{
    /// <summary>(mount point, file system type) of every mount this process sees.</summary>
    public static IEnumerable<(string Path, string Type)> All()
    {
        foreach (var line in File.ReadLines("/proc/self/mountinfo"))
        {
            // id parent major:minor root mount-point options [optional fields] - type source super-options
            var fields = line.Split(' ');
            var separator = Array.IndexOf(fields, "-");
            if (fields.Length < 5 || separator < 0 || separator + 1 >= fields.Length) continue;
            yield return (fields[4].Replace("\\040", " ", StringComparison.Ordinal), fields[separator + 1]);
        }
    }

    /// <summary>The cgroup v2 mount, or null without one: /sys/fs/cgroup/unified on a hybrid host, /sys/fs/cgroup on a v2-only one.</summary>
    public static string? Cgroup2Root() => All().FirstOrDefault(m => m.Type == "cgroup2").Path;

    /// <summary>Whether <paramref name="directory"/> is the mount point of a bpf filesystem.</summary>
    public static bool IsBpfFs(string directory)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        return All().Any(m => m.Type == "bpf" && m.Path == full);
    }
}
