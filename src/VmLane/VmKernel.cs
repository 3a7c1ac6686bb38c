namespace ProxyPlanes.VmLane;

/// <summary>A kernel the VM boots: its image under /boot and its modules under /lib/modules/<see cref="Release"/>.</summary>
public sealed record VmKernel(string Release, string ImagePath, string ModulesDirectory)
{
    public const string Package = "linux-image-amd64";

    /// <summary>
    /// The newest <c>vmlinuz-*-amd64</c> in <paramref name="bootDirectory"/> whose modules are installed
    /// (Debian's stock kernel from <c>linux-image-amd64</c>). The generic flavour is preferred over
    /// <c>cloud</c> and <c>rt</c>: the cloud kernel lacks drivers and both differ from what nodes run.
    /// </summary>
    public static VmKernel FindNewest(string bootDirectory = "/boot", string modulesRoot = "/lib/modules")
    {
        var candidates = new List<VmKernel>();
        if (Directory.Exists(bootDirectory))
        {
            foreach (var image in Directory.EnumerateFiles(bootDirectory, "vmlinuz-*-amd64"))
            {
                var release = Path.GetFileName(image)["vmlinuz-".Length..];
                var modules = Path.Combine(modulesRoot, release);
                if (File.Exists(Path.Combine(modules, "modules.dep"))) candidates.Add(new VmKernel(release, image, modules));
            }
        }
        var best = candidates
            .OrderBy(k => k.Release.Contains("-cloud-") || k.Release.Contains("-rt-") ? 1 : 0)
            .ThenByDescending(k => k.Release, ReleaseComparer.Instance)
            .FirstOrDefault();
        return best ?? throw new VmLaneException(
            $"no kernel to boot: no {bootDirectory}/vmlinuz-*-amd64 with its modules in {modulesRoot}; install the Debian package {Package} (scripts/setup.sh does)");
    }

    /// <summary>The kernel at <paramref name="imagePath"/> (<c>.../vmlinuz-RELEASE</c>) with modules in /lib/modules/RELEASE.</summary>
    public static VmKernel FromImage(string imagePath, string modulesRoot = "/lib/modules")
    {
        var name = Path.GetFileName(imagePath);
        if (!File.Exists(imagePath) || !name.StartsWith("vmlinuz-", StringComparison.Ordinal))
            throw new VmLaneException($"{imagePath}: not a kernel image named vmlinuz-RELEASE; install the Debian package {Package}");
        var release = name["vmlinuz-".Length..];
        var modules = Path.Combine(modulesRoot, release);
        if (!File.Exists(Path.Combine(modules, "modules.dep")))
            throw new VmLaneException($"{imagePath}: its modules ({modules}) are not installed; install the Debian package {Package}");
        return new VmKernel(release, imagePath, modules);
    }

    /// <summary>Orders releases as version numbers: 6.1.0-10 &lt; 6.1.0-9 is false.</summary>
    private sealed class ReleaseComparer : IComparer<string>
    {
        public static readonly ReleaseComparer Instance = new();

        public int Compare(string? x, string? y)
        {
            var a = Tokens(x ?? "");
            var b = Tokens(y ?? "");
            for (var i = 0; i < Math.Min(a.Count, b.Count); i++)
            {
                var (na, nb) = (long.TryParse(a[i], out var va), long.TryParse(b[i], out var vb));
                var c = na && nb ? va.CompareTo(vb) : string.CompareOrdinal(a[i], b[i]);
                if (c != 0) return c;
            }
            return a.Count.CompareTo(b.Count);
        }

        private static List<string> Tokens(string s)
        {
            var tokens = new List<string>();
            var start = 0;
            for (var i = 1; i <= s.Length; i++)
            {
                if (i == s.Length || char.IsDigit(s[i]) != char.IsDigit(s[i - 1]))
                {
                    tokens.Add(s[start..i]);
                    start = i;
                }
            }
            return tokens;
        }
    }
}
