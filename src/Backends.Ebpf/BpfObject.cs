using System.Reflection;
using System.Runtime.InteropServices;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The programs and maps of one BPF ELF object, loaded into the kernel by libbpf (BTF, relocations,
/// map creation, verification). libbpf's own object is closed right after the load: each program
/// and map here holds its own fd, so the kernel objects live exactly as long as this does (or as a
/// pin or an attached link does).
/// </summary>
public sealed unsafe class BpfObject : IDisposable
{
    private readonly Dictionary<string, BpfProgram> _programs;
    private readonly Dictionary<string, BpfMap> _maps;

    private BpfObject(string name, Dictionary<string, BpfProgram> programs, Dictionary<string, BpfMap> maps)
    {
        Name = name;
        _programs = programs;
        _maps = maps;
    }

    /// <summary>The object's name, e.g. <c>sock</c>.</summary>
    public string Name { get; }

    public IReadOnlyCollection<BpfProgram> Programs => _programs.Values;

    public IReadOnlyCollection<BpfMap> Maps => _maps.Values;

    /// <summary>Loads an object compiled from <c>bpf/NAME.c</c> and embedded in this assembly as <c>NAME.o</c>.</summary>
    /// <remarks>
    /// With <paramref name="pinDirectory"/>, each map is pinned there under its own name: a map already
    /// pinned there (by an earlier run, with the same type, sizes and flags) is reused, with its
    /// contents, instead of created; a pinned map that does not fit fails the load.
    /// A map of the object named like one of <paramref name="sharedMaps"/> is not created: the object's
    /// programs use that map (libbpf's <c>bpf_map__reuse_fd</c>; its type and sizes must agree), so
    /// bpf/tc.c and bpf/sock.c read the same services and backends.
    /// </remarks>
    public static BpfObject LoadEmbedded(string name, string? pinDirectory = null, IEnumerable<BpfMap>? sharedMaps = null)
    {
        using var stream = typeof(BpfObject).Assembly.GetManifestResourceStream($"{name}.o")
            ?? throw new InvalidOperationException($"BPF object {name}.o is not embedded in {typeof(BpfObject).Assembly.GetName().Name} (bpf/{name}.c missing from the build?)");
        var elf = new byte[stream.Length];
        stream.ReadExactly(elf);
        return Load(elf, name, pinDirectory, sharedMaps);
    }

    /// <summary>
    /// Opens and loads an ELF object. A refusal (the verifier's, or a map the kernel will not create)
    /// throws a <see cref="BpfException"/> whose message ends with what libbpf and the verifier printed.
    /// </summary>
    public static BpfObject Load(ReadOnlySpan<byte> elf, string name, string? pinDirectory = null, IEnumerable<BpfMap>? sharedMaps = null)
    {
        using var log = LibbpfLog.Capture();
        var nameBytes = System.Text.Encoding.UTF8.GetBytes(name + "\0");
        nint handle;
        fixed (byte* buffer = elf)
        fixed (byte* objectName = nameBytes)
        {
            var options = new Interop.BpfObjectOpenOptions { Size = (nuint)sizeof(Interop.BpfObjectOpenOptions), ObjectName = objectName };
            handle = Interop.ObjectOpenMem(buffer, (nuint)elf.Length, &options);
            if (handle == 0) throw new BpfException(Marshal.GetLastPInvokeError(), $"libbpf: open BPF object {name}", verifierLog: log.Text);
        }

        var borrowed = new List<SafeBpfHandle.Lease>();
        try
        {
            foreach (var shared in sharedMaps ?? [])
            {
                var map = Interop.ObjectFindMapByName(handle, shared.Name);
                if (map == 0) continue;
                var lease = shared.Handle.Borrow();
                borrowed.Add(lease);
                var reused = Interop.MapReuseFd(map, (int)lease.Fd);
                if (reused < 0) throw new BpfException(-reused, $"libbpf: reuse map {shared.Name} in BPF object {name}", verifierLog: log.Text);
            }

            var sharedNames = (sharedMaps ?? []).Select(m => m.Name).ToHashSet(StringComparer.Ordinal);
            if (pinDirectory is not null)
            {
                for (var map = Interop.ObjectNextMap(handle, 0); map != 0; map = Interop.ObjectNextMap(handle, map))
                {
                    var mapName = Marshal.PtrToStringUTF8((nint)Interop.MapName(map))!;
                    if (mapName.StartsWith('.') || sharedNames.Contains(mapName)) continue; // a shared map is pinned by its own object
                    var error = Interop.MapSetPinPath(map, Path.Combine(pinDirectory, mapName));
                    if (error < 0) throw new BpfException(-error, $"libbpf: pin path of map {mapName} in {pinDirectory}");
                }
            }
            var result = Interop.ObjectLoad(handle);
            if (result < 0)
            {
                var text = log.Text;
                throw new BpfException(-result, $"libbpf: load BPF object {name}", LoadHint(-result, text), text);
            }

            var programs = new Dictionary<string, BpfProgram>(StringComparer.Ordinal);
            var maps = new Dictionary<string, BpfMap>(StringComparer.Ordinal);
            try
            {
                for (var program = Interop.ObjectNextProgram(handle, 0); program != 0; program = Interop.ObjectNextProgram(handle, program))
                {
                    var programName = Marshal.PtrToStringUTF8((nint)Interop.ProgramName(program))!;
                    var fd = Interop.Duplicate(Interop.ProgramFd(program), $"program {programName}");
                    programs.Add(programName, new BpfProgram(programName, fd, (BpfAttachType)Interop.ProgramExpectedAttachType(program)));
                }

                for (var map = Interop.ObjectNextMap(handle, 0); map != 0; map = Interop.ObjectNextMap(handle, map))
                {
                    var mapName = Marshal.PtrToStringUTF8((nint)Interop.MapName(map))!;
                    if (mapName.StartsWith('.')) continue; // .rodata, .bss: libbpf's, not a map of ours
                    maps.Add(mapName, BpfMap.FromHandle(Interop.Duplicate(Interop.MapFd(map), $"map {mapName}")));
                }
            }
            catch
            {
                foreach (var program in programs.Values) program.Dispose();
                foreach (var map in maps.Values) map.Dispose();
                throw;
            }

            return new BpfObject(name, programs, maps);
        }
        finally
        {
            Interop.ObjectClose(handle);
            foreach (var lease in borrowed) lease.Dispose();
        }
    }

    public BpfProgram Program(string name) =>
        _programs.TryGetValue(name, out var program) ? program
            : throw new KeyNotFoundException($"BPF object {Name} has no program {name} (it has {string.Join(", ", _programs.Keys.Order(StringComparer.Ordinal))})");

    public BpfMap Map(string name) =>
        _maps.TryGetValue(name, out var map) ? map
            : throw new KeyNotFoundException($"BPF object {Name} has no map {name} (it has {string.Join(", ", _maps.Keys.Order(StringComparer.Ordinal))})");

    public void Dispose()
    {
        foreach (var program in _programs.Values) program.Dispose();
        foreach (var map in _maps.Values) map.Dispose();
    }

    /// <summary>
    /// The verifier refuses with EACCES or EINVAL and libbpf then prints its log, so a log means "read
    /// the log", whatever the errno; without one, EPERM/EACCES is a missing privilege.
    /// </summary>
    private static string? LoadHint(int errno, string log) => errno switch
    {
        _ when log.Contains("-- BEGIN PROG LOAD LOG --", StringComparison.Ordinal) => "the verifier refused a program; its log follows",
        1 or 13 => "needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON)",
        _ => null,
    };
}

/// <summary>Attach types used here (include/uapi/linux/bpf.h, enum bpf_attach_type).</summary>
public enum BpfAttachType
{
    CgroupInetEgress = 1,
    CgroupInet4Connect = 10,
    CgroupInet6Connect = 11,
    CgroupUdp4Sendmsg = 14,
    CgroupUdp6Sendmsg = 15,
    CgroupUdp4Recvmsg = 19,
    CgroupUdp6Recvmsg = 20,
    TraceIter = 28,
    CgroupInet4Getpeername = 29,
    CgroupInet6Getpeername = 30,
    TcxIngress = 46,
    TcxEgress = 47,
}

/// <summary>What the kernel says is attached to a cgroup.</summary>
public static class BpfCgroup
{
    /// <summary>The attach types of a cgroup (BPF_PROG_QUERY on a cgroup with a tc type is ENODEV).</summary>
    public static IReadOnlyList<BpfAttachType> AttachTypes { get; } =
        [BpfAttachType.CgroupInet4Connect, BpfAttachType.CgroupUdp4Sendmsg, BpfAttachType.CgroupUdp4Recvmsg, BpfAttachType.CgroupInet4Getpeername,
         BpfAttachType.CgroupInet6Connect, BpfAttachType.CgroupUdp6Sendmsg, BpfAttachType.CgroupUdp6Recvmsg, BpfAttachType.CgroupInet6Getpeername,
         BpfAttachType.CgroupInetEgress];

    /// <summary>How many programs are attached directly to <paramref name="cgroupDirectory"/> at <paramref name="type"/> (BPF_PROG_QUERY, links included).</summary>
    public static int AttachedPrograms(string cgroupDirectory, BpfAttachType type)
    {
        using var cgroup = Interop.OpenDirectory(cgroupDirectory);
        using var target = cgroup.Borrow();
        var attributes = new BpfProgQueryAttributes { TargetFd = target.Fd, AttachType = (uint)type };
        Interop.CheckedBpf(BpfCommand.BPF_PROG_QUERY, ref attributes, $"cgroup {cgroupDirectory} ({type})");
        return (int)attributes.ProgramCount;
    }
}

/// <summary>A loaded BPF program, by its own fd.</summary>
public sealed partial class BpfProgram : IDisposable
{
    private readonly SafeBpfHandle _handle;

    internal BpfProgram(string name, SafeBpfHandle handle, BpfAttachType expectedAttachType)
    {
        Name = name;
        _handle = handle;
        ExpectedAttachType = expectedAttachType;
    }

    public string Name { get; }

    /// <summary>What its ELF section says it attaches to (<c>cgroup/connect4</c> is <see cref="BpfAttachType.CgroupInet4Connect"/>).</summary>
    public BpfAttachType ExpectedAttachType { get; }

    internal SafeBpfHandle.Lease Borrow() => _handle.Borrow();

    /// <summary>
    /// Attaches to a cgroup v2 directory with BPF_LINK_CREATE (at its expected attach type). The
    /// program runs for every process in that cgroup and below, until the link is disposed.
    /// </summary>
    public BpfLink AttachToCgroup(string cgroupDirectory)
    {
        using var cgroup = Interop.OpenDirectory(cgroupDirectory);
        using var program = _handle.Borrow();
        using var target = cgroup.Borrow();
        var attributes = new BpfLinkCreateAttributes { ProgramFd = program.Fd, TargetFd = target.Fd, AttachType = (uint)ExpectedAttachType };
        var fd = Interop.CheckedBpf(BpfCommand.BPF_LINK_CREATE, ref attributes, $"program {Name} to cgroup {cgroupDirectory} ({ExpectedAttachType})");
        return new BpfLink($"{Name} on {cgroupDirectory}", new SafeBpfHandle(fd));
    }

    public void Dispose() => _handle.Dispose();
}

/// <summary>An attachment (BPF link): the program stays attached until this is disposed, unless pinned.</summary>
public sealed class BpfLink : IDisposable
{
    private readonly SafeBpfHandle _handle;

    internal BpfLink(string description, SafeBpfHandle handle)
    {
        Description = description;
        _handle = handle;
    }

    public string Description { get; }

    /// <summary>Pins the link on a bpf filesystem: the program then stays attached after this process closes its fd.</summary>
    public void Pin(string path) => BpfFs.Pin(_handle, path, $"link {Description}");

    /// <summary>A link pinned at <paramref name="path"/> (BPF_OBJ_GET).</summary>
    public static BpfLink OpenPinned(string path) => new($"pinned link {path}", BpfFs.Get(path));

    /// <summary>The cgroup id a cgroup link is attached to (0 when the cgroup is gone: the link is then defunct).</summary>
    public unsafe ulong CgroupId
    {
        get
        {
            var info = default(BpfLinkInfo);
            using var fd = _handle.Borrow();
            var attributes = new BpfInfoAttributes { BpfFd = fd.Fd, InfoLength = (uint)sizeof(BpfLinkInfo), Info = (ulong)&info };
            Interop.CheckedBpf(BpfCommand.BPF_OBJ_GET_INFO_BY_FD, ref attributes, Description);
            return info.CgroupId;
        }
    }

    /// <summary>Replaces the link's program with <paramref name="program"/> in one step (BPF_LINK_UPDATE): the hook is never empty.</summary>
    public void Update(BpfProgram program)
    {
        using var link = _handle.Borrow();
        using var prog = program.Borrow();
        var attributes = new BpfLinkUpdateAttributes { LinkFd = link.Fd, NewProgramFd = prog.Fd };
        Interop.CheckedBpf(BpfCommand.BPF_LINK_UPDATE, ref attributes, $"{Description} to program {program.Name}");
    }

    /// <summary>Detaches the program now (BPF_LINK_DETACH), even while pins or other fds still hold the link.</summary>
    public void Detach()
    {
        using var link = _handle.Borrow();
        var attributes = new BpfLinkDetachAttributes { LinkFd = link.Fd };
        Interop.CheckedBpf(BpfCommand.BPF_LINK_DETACH, ref attributes, Description);
    }

    public void Dispose() => _handle.Dispose();
}
