using System.IO.Compression;
using System.Security.Cryptography;
using System.Text;

namespace ProxyPlanes.VmLane;

/// <summary>
/// Builds (once per kernel, init script and busybox, then from the cache) the guest's initramfs: an
/// uncompressed newc cpio archive holding busybox (with its shared libraries when it is dynamically
/// linked, as Debian's <c>busybox</c> package is), the kernel modules needed to mount the 9p shares
/// and the overlay, the modprobe wrapper and <c>vm/init</c>.
/// </summary>
public static class Initramfs
{
    /// <summary>Modules the init loads; their dependencies (from modules.dep) come first, built-in ones are skipped.</summary>
    public static readonly IReadOnlyList<string> RootModules = ["virtio_pci", "9pnet_virtio", "9p", "overlay"];

    /// <summary>Bump when the archive's layout changes, so cached archives are rebuilt.</summary>
    private const string FormatVersion = "1";

    /// <summary>
    /// A kernel module autoload in the guest runs modprobe in the initramfs root, where there are no
    /// modules: this wrapper runs the host's modprobe in the shared root instead.
    /// </summary>
    private const string ModprobeWrapper = "#!/bin/sh\nexec /bin/chroot /newroot /sbin/modprobe \"$@\"\n";

    public static string InitScript { get; } = ReadInitScript();

    /// <summary>The cache folder: <c>PROXYPLANES_VM_CACHE</c>, else /var/cache/proxyplanes-vm when writable, else a folder in the temp directory.</summary>
    public static string DefaultCacheDirectory()
    {
        var configured = Environment.GetEnvironmentVariable("PROXYPLANES_VM_CACHE");
        if (!string.IsNullOrEmpty(configured)) return configured;
        const string system = "/var/cache/proxyplanes-vm";
        try
        {
            Directory.CreateDirectory(system);
            var probe = Path.Combine(system, $".probe-{Environment.ProcessId}");
            File.WriteAllText(probe, "");
            File.Delete(probe);
            return system;
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            return Path.Combine(Path.GetTempPath(), "proxyplanes-vm");
        }
    }

    /// <summary>The initramfs for <paramref name="kernel"/>: from the cache, or built now (and cached).</summary>
    public static async Task<string> EnsureAsync(VmKernel kernel, string cacheDirectory, CancellationToken ct = default)
    {
        var busybox = HostTool.Find("/bin/busybox") ?? HostTool.Require("busybox", "busybox");
        var modules = ResolveModules(kernel);
        var key = CacheKey(kernel, busybox, modules);
        Directory.CreateDirectory(cacheDirectory);
        var path = Path.Combine(cacheDirectory, $"initramfs-{kernel.Release}-{key}.cpio");
        if (File.Exists(path)) return path;

        var cpio = HostTool.Require("cpio", "cpio");
        var stage = Directory.CreateTempSubdirectory("proxyplanes-vm-stage-");
        try
        {
            await StageAsync(stage.FullName, kernel, busybox, modules, ct);
            // Written next to its final name, then renamed: a concurrent build or reader never sees half an archive.
            var temp = $"{path}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp";
            try
            {
                var entries = Directory.EnumerateFileSystemEntries(stage.FullName, "*", SearchOption.AllDirectories)
                    .Select(e => "." + e[stage.FullName.Length..])
                    .Order(StringComparer.Ordinal);
                using (var input = new MemoryStream(Encoding.UTF8.GetBytes(string.Join('\n', entries) + "\n")))
                await using (var output = File.Create(temp))
                {
                    var result = await HostTool.RunAsync(cpio, ["-o", "-H", "newc", "--quiet", "-R", "0:0"], ct, stage.FullName, input, output);
                    if (result.ExitCode != 0) throw new VmLaneException($"cpio failed ({result.ExitCode}): {result.StandardError.Trim()}");
                }
                File.Move(temp, path, overwrite: true);
            }
            finally
            {
                File.Delete(temp);
            }
            return path;
        }
        finally
        {
            stage.Delete(recursive: true);
        }
    }

    /// <summary>A module to put in the archive: its name (as insmod'ed, in order) and its file under /lib/modules/RELEASE.</summary>
    public sealed record Module(string Name, string RelativePath);

    /// <summary>The modules to load, in load order: <see cref="RootModules"/> and their dependencies, skipping built-in ones.</summary>
    public static IReadOnlyList<Module> ResolveModules(VmKernel kernel)
    {
        var deps = new Dictionary<string, (string Path, string[] Deps)>();
        foreach (var line in File.ReadLines(Path.Combine(kernel.ModulesDirectory, "modules.dep")))
        {
            var colon = line.IndexOf(':');
            if (colon <= 0) continue;
            var file = line[..colon];
            deps[ModuleName(file)] = (file, line[(colon + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries));
        }
        var builtinFile = Path.Combine(kernel.ModulesDirectory, "modules.builtin");
        var builtin = File.Exists(builtinFile) ? File.ReadLines(builtinFile).Select(ModuleName).ToHashSet() : [];

        var order = new List<Module>();
        var seen = new HashSet<string>();
        void Visit(string name)
        {
            name = name.Replace('-', '_');
            if (!seen.Add(name) || builtin.Contains(name)) return;
            if (!deps.TryGetValue(name, out var entry))
                throw new VmLaneException($"kernel {kernel.Release} has no module {name} (neither in modules.dep nor built in); reinstall the Debian package {VmKernel.Package}");
            foreach (var dep in entry.Deps) Visit(ModuleName(dep));
            order.Add(new Module(name, entry.Path));
        }
        foreach (var root in RootModules) Visit(root);
        return order;
    }

    private static string ModuleName(string path)
    {
        var name = Path.GetFileName(path.Trim());
        var ko = name.IndexOf(".ko", StringComparison.Ordinal);
        return (ko >= 0 ? name[..ko] : name).Replace('-', '_');
    }

    private static string CacheKey(VmKernel kernel, string busybox, IReadOnlyList<Module> modules)
    {
        var text = new StringBuilder()
            .AppendLine(FormatVersion)
            .AppendLine(kernel.Release)
            .AppendLine(Stamp(kernel.ImagePath))
            .AppendLine(Stamp(busybox))
            .AppendLine(ModprobeWrapper)
            .AppendLine(InitScript);
        foreach (var m in modules) text.AppendLine(m.Name).AppendLine(Stamp(Path.Combine(kernel.ModulesDirectory, m.RelativePath)));
        return Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(text.ToString())))[..12];
    }

    private static string Stamp(string file)
    {
        var info = new FileInfo(file);
        return $"{file} {info.Length} {info.LastWriteTimeUtc.Ticks}";
    }

    private static async Task StageAsync(string stage, VmKernel kernel, string busybox, IReadOnlyList<Module> modules, CancellationToken ct)
    {
        foreach (var dir in new[] { "bin", "dev", "proc", "sys", "modules", "newroot", "lower", "upper" })
            Directory.CreateDirectory(Path.Combine(stage, dir));

        const UnixFileMode executable = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
            | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute;

        // busybox, its shared libraries and loader at their own paths when it is dynamically linked.
        var busyboxInStage = Path.Combine(stage, "bin", "busybox");
        File.Copy(busybox, busyboxInStage);
        File.SetUnixFileMode(busyboxInStage, executable);
        foreach (var library in await SharedLibrariesAsync(busybox, ct))
        {
            var target = Path.Combine(stage, library.TrimStart('/'));
            Directory.CreateDirectory(Path.GetDirectoryName(target)!);
            if (!File.Exists(target)) File.Copy(library, target);
        }
        var applets = await HostTool.RunAsync(busyboxInStage, ["--list"], ct);
        if (applets.ExitCode != 0) throw new VmLaneException($"{busybox} --list failed: {applets.StandardError.Trim()}");
        foreach (var applet in applets.StandardOutput.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var link = Path.Combine(stage, "bin", applet);
            if (applet != "busybox" && !applet.Contains('/') && !File.Exists(link)) File.CreateSymbolicLink(link, "busybox");
        }

        var wrapper = Path.Combine(stage, "bin", "modprobe-chroot");
        File.WriteAllText(wrapper, ModprobeWrapper);
        File.SetUnixFileMode(wrapper, executable);

        var init = Path.Combine(stage, "init");
        File.WriteAllText(init, InitScript);
        File.SetUnixFileMode(init, executable);

        foreach (var module in modules)
            await CopyModuleAsync(Path.Combine(kernel.ModulesDirectory, module.RelativePath), Path.Combine(stage, "modules", module.Name + ".ko"), ct);
        File.WriteAllText(Path.Combine(stage, "modules", "order"), string.Join('\n', modules.Select(m => m.Name)) + "\n");
    }

    /// <summary>Copies a module, decompressing .ko.xz, .ko.zst and .ko.gz (busybox's insmod takes plain .ko files).</summary>
    private static async Task CopyModuleAsync(string source, string target, CancellationToken ct)
    {
        if (source.EndsWith(".ko", StringComparison.Ordinal))
        {
            File.Copy(source, target);
            return;
        }
        await using var output = File.Create(target);
        if (source.EndsWith(".gz", StringComparison.Ordinal))
        {
            await using var gz = new GZipStream(File.OpenRead(source), CompressionMode.Decompress);
            await gz.CopyToAsync(output, ct);
            return;
        }
        var (tool, package) = source.EndsWith(".xz", StringComparison.Ordinal) ? ("xz", "xz-utils")
            : source.EndsWith(".zst", StringComparison.Ordinal) ? ("zstd", "zstd")
            : throw new VmLaneException($"{source}: unknown module compression");
        var result = await HostTool.RunAsync(HostTool.Require(tool, package), ["-dc", source], ct, stdout: output);
        if (result.ExitCode != 0) throw new VmLaneException($"{tool} -dc {source} failed: {result.StandardError.Trim()}");
    }

    /// <summary>The absolute paths <c>ldd</c> names for <paramref name="binary"/>; none when it is static.</summary>
    private static async Task<IReadOnlyList<string>> SharedLibrariesAsync(string binary, CancellationToken ct)
    {
        var ldd = HostTool.Find("ldd");
        if (ldd is null) return [];
        var result = await HostTool.RunAsync(ldd, [binary], ct);
        if (result.ExitCode != 0) return []; // "not a dynamic executable"
        return result.StandardOutput.Split('\n')
            .SelectMany(line => line.Split(' ', '\t'))
            .Where(token => token.StartsWith('/'))
            .Distinct()
            .ToList();
    }

    private static string ReadInitScript()
    {
        using var stream = typeof(Initramfs).Assembly.GetManifestResourceStream("ProxyPlanes.VmLane.init")
            ?? throw new InvalidOperationException("the embedded vm/init is missing from ProxyPlanes.VmLane");
        using var reader = new StreamReader(stream);
        return reader.ReadToEnd();
    }
}
