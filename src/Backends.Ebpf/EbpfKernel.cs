using System.Collections.Immutable;
using Microsoft.Extensions.Logging;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>What <see cref="EbpfBackend"/> needs of the kernel: read the maps, write one element, check the pins.</summary>
public interface IEbpfMaps
{
    /// <summary>Every element of the services and backends maps (a full sync diffs against them).</summary>
    EbpfMapContents Read();

    /// <summary>One write of a plan; a refusal throws a <see cref="BpfException"/>.</summary>
    void Write(MapWrite write);

    /// <summary>The pins and links are still in place (the canary of a periodic sync).</summary>
    bool Intact();
}

/// <summary>Where the eBPF data plane keeps its pins, and which cgroup its socket hooks attach to.</summary>
/// <param name="BpfFs"><c>--bpf-fs</c>: a bpf filesystem (mounted there when it is not one); the pins live in its <c>proxyplanes</c> folder.</param>
/// <param name="Cgroup"><c>--bpf-cgroup</c>: the cgroup v2 directory whose processes (and the node's, when it is the root) get the socket hooks.</param>
public sealed record EbpfLocation(string BpfFs, string Cgroup)
{
    public const string DefaultBpfFs = "/sys/fs/bpf";
    public const string PinFolder = "proxyplanes";

    public string PinDirectory => Path.Combine(BpfFs, PinFolder);

    /// <summary>The pin of the link attaching <paramref name="program"/>.</summary>
    public static string LinkPin(string pinDirectory, string program) => Path.Combine(pinDirectory, "link_" + program);

    /// <summary>The host's cgroup v2 mount (from /proc/self/mountinfo), or null without one: /sys/fs/cgroup/unified on a hybrid host.</summary>
    public static string? HostCgroup2Root() => MountPoints().FirstOrDefault(m => m.Type == "cgroup2").Path;

    /// <summary>Whether <paramref name="directory"/> is the mount point of a bpf filesystem.</summary>
    public static bool IsBpfFs(string directory)
    {
        var full = Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory));
        return MountPoints().Any(m => m.Type == "bpf" && m.Path == full);
    }

    /// <summary>(mount point, file system type) of every mount this process sees.</summary>
    public static IEnumerable<(string Path, string Type)> MountPoints()
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
}

/// <summary>
/// The eBPF data plane in the kernel: bpf/sock.c loaded with its maps pinned under
/// <c>&lt;--bpf-fs&gt;/proxyplanes/</c> (reused, contents and all, when a run of the same layout
/// version left them there) and its four socket hooks attached to the cgroup by pinned links
/// (<c>link_pp_connect4</c>, ...). A restart finds the links and swaps in the new programs with
/// BPF_LINK_UPDATE, so the hooks are never empty; a link pinned on another cgroup is detached and
/// made anew. The pins keep everything working after this process exits; <see cref="Remove"/> ends it.
/// </summary>
public sealed class EbpfKernel : IEbpfMaps, IDisposable
{
    private readonly BpfObject _object;
    private readonly List<BpfLink> _links;

    private EbpfKernel(EbpfLocation location, BpfObject bpfObject, List<BpfLink> links, bool reusedMaps)
    {
        Location = location;
        _object = bpfObject;
        _links = links;
        ReusedMaps = reusedMaps;
        Services = bpfObject.Map(MapLayout.ServicesMap);
        Backends = bpfObject.Map(MapLayout.BackendsMap);
    }

    public EbpfLocation Location { get; }

    /// <summary>The maps were pinned by an earlier run and are reused with what they hold.</summary>
    public bool ReusedMaps { get; }

    public BpfMap Services { get; }

    public BpfMap Backends { get; }

    /// <summary>Loads, pins and attaches (see the class summary). Throws a one-line <see cref="BpfException"/> when the kernel refuses.</summary>
    public static EbpfKernel Open(EbpfLocation location, ILogger logger)
    {
        EnsureBpfFs(location.BpfFs, logger);
        var directory = location.PinDirectory;
        Directory.CreateDirectory(directory);
        var reused = File.Exists(Path.Combine(directory, MapLayout.ServicesMap));
        var bpfObject = SockPrograms.Load(directory);
        var links = new List<BpfLink>();
        try
        {
            var cgroupId = Interop.CgroupId(location.Cgroup);
            foreach (var name in SockPrograms.All)
            {
                var program = bpfObject.Program(name);
                var pin = EbpfLocation.LinkPin(directory, name);
                if (File.Exists(pin))
                {
                    var pinned = BpfLink.OpenPinned(pin);
                    if (pinned.CgroupId == cgroupId)
                    {
                        pinned.Update(program);
                        links.Add(pinned);
                        continue;
                    }
                    logger.LogInformation("eBPF: the pinned link {Pin} is on another cgroup; detaching it to attach to {Cgroup}", pin, location.Cgroup);
                    TryDetach(pinned);
                    pinned.Dispose();
                    File.Delete(pin);
                }
                var link = program.AttachToCgroup(location.Cgroup);
                links.Add(link);
                link.Pin(pin);
            }
        }
        catch
        {
            foreach (var link in links) link.Dispose();
            bpfObject.Dispose();
            throw;
        }
        logger.LogInformation("eBPF: socket hooks on cgroup {Cgroup}, maps {Maps} in {Directory}", location.Cgroup, reused ? "reused" : "created", directory);
        return new EbpfKernel(location, bpfObject, links, reused);
    }

    public EbpfMapContents Read()
    {
        var services = ImmutableDictionary.CreateBuilder<ServiceKey, ServiceValue>();
        foreach (var key in Services.Keys<ServiceKey>())
            if (Services.TryLookup(key, out ServiceValue value)) services[key] = value;
        var backends = ImmutableDictionary.CreateBuilder<uint, Backend>();
        foreach (var id in Backends.Keys<uint>())
            if (Backends.TryLookup(id, out Backend value)) backends[id] = value;
        return new EbpfMapContents(services.ToImmutable(), backends.ToImmutable());
    }

    public void Write(MapWrite write)
    {
        switch (write)
        {
            case BackendUpdate u: Backends.Update(u.Id, u.Value); break;
            case BackendDelete d: Backends.Delete(d.Id); break;
            case ServiceUpdate u: Services.Update(u.Key, u.Value); break;
            case ServiceDelete d: Services.Delete(d.Key); break;
            default: throw new ArgumentException($"unknown map write {write}", nameof(write));
        }
    }

    public bool Intact() =>
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.ServicesMap)) &&
        File.Exists(Path.Combine(Location.PinDirectory, MapLayout.BackendsMap)) &&
        SockPrograms.All.All(p => File.Exists(EbpfLocation.LinkPin(Location.PinDirectory, p)));

    /// <summary>Closes our fds; the pinned links and maps stay (traffic keeps flowing).</summary>
    public void Dispose()
    {
        foreach (var link in _links) link.Dispose();
        _object.Dispose();
    }

    /// <summary>
    /// Detaches every pinned link (BPF_LINK_DETACH, so the hooks stop even if another process holds the
    /// link) and removes every pin and the folder: the programs and maps go with their last reference.
    /// Returns what was removed (empty when nothing was there).
    /// </summary>
    public static IReadOnlyList<string> Remove(string bpfFs, ILogger logger)
    {
        var directory = Path.Combine(bpfFs, EbpfLocation.PinFolder);
        if (!Directory.Exists(directory)) return [];
        var removed = new List<string>();
        foreach (var pin in Directory.GetFiles(directory).Order(StringComparer.Ordinal))
        {
            if (Path.GetFileName(pin).StartsWith("link_", StringComparison.Ordinal))
            {
                using var link = BpfLink.OpenPinned(pin);
                TryDetach(link);
            }
            File.Delete(pin);
            removed.Add(Path.GetFileName(pin));
        }
        Directory.Delete(directory);
        logger.LogInformation("eBPF: detached and unpinned {Pins} in {Directory}", string.Join(", ", removed), directory);
        return removed;
    }

    /// <summary>Mounts a bpf filesystem at <paramref name="directory"/> unless one is there.</summary>
    public static void EnsureBpfFs(string directory, ILogger logger)
    {
        if (EbpfLocation.IsBpfFs(directory)) return;
        Directory.CreateDirectory(directory);
        Interop.MountBpfFs(directory);
        logger.LogInformation("eBPF: mounted a bpf filesystem at {Directory}", directory);
    }

    /// <summary>A link whose cgroup is gone is already detached (ENOLINK): nothing to do.</summary>
    private static void TryDetach(BpfLink link)
    {
        try
        {
            link.Detach();
        }
        catch (BpfException e) when (e.Errno == 67)
        {
        }
    }
}
