using System.Runtime.InteropServices;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// The native surface of the eBPF data plane, kept in one place the way dotnet/runtime does it:
/// one source-generated <see cref="LibraryImportAttribute"/> stub per entry point, a SafeHandle for
/// every fd we own, and one helper (<see cref="BpfException"/>) that turns errno into one clear line.
/// libbpf (<c>libbpf.so.1</c>) only reads the ELF object and loads it (BTF, relocations, map creation,
/// the verifier's log); every map operation, pin and attach goes through raw <c>bpf(2)</c>.
/// </summary>
internal static unsafe partial class Interop
{
    private const string Libbpf = "libbpf.so.1";
    private const string Libc = "libc";

    // libbpf (1.x: functions return NULL or a negative errno and also set errno).

    /// <summary>struct bpf_object_open_opts, up to object_name (libbpf accepts a shorter sz).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct BpfObjectOpenOptions
    {
        public nuint Size;
        public byte* ObjectName;
    }

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__open_mem", SetLastError = true)]
    internal static partial nint ObjectOpenMem(byte* buffer, nuint size, BpfObjectOpenOptions* options);

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__load", SetLastError = true)]
    internal static partial int ObjectLoad(nint bpfObject);

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__close")]
    internal static partial void ObjectClose(nint bpfObject);

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__find_program_by_name", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial nint ObjectFindProgramByName(nint bpfObject, string name);

    [LibraryImport(Libbpf, EntryPoint = "bpf_program__fd")]
    internal static partial int ProgramFd(nint program);

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__find_map_by_name", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial nint ObjectFindMapByName(nint bpfObject, string name);

    [LibraryImport(Libbpf, EntryPoint = "bpf_map__fd")]
    internal static partial int MapFd(nint map);

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__next_program")]
    internal static partial nint ObjectNextProgram(nint bpfObject, nint previous);

    [LibraryImport(Libbpf, EntryPoint = "bpf_program__name")]
    internal static partial byte* ProgramName(nint program);

    [LibraryImport(Libbpf, EntryPoint = "bpf_program__expected_attach_type")]
    internal static partial int ProgramExpectedAttachType(nint program);

    [LibraryImport(Libbpf, EntryPoint = "bpf_object__next_map")]
    internal static partial nint ObjectNextMap(nint bpfObject, nint previous);

    [LibraryImport(Libbpf, EntryPoint = "bpf_map__name")]
    internal static partial byte* MapName(nint map);

    [LibraryImport(Libbpf, EntryPoint = "bpf_map__reuse_fd", SetLastError = true)]
    internal static partial int MapReuseFd(nint map, int fd);

    /// <summary>struct bpf_tc_hook (libbpf.h): a clsact qdisc on an interface, and which side of it.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct BpfTcHook
    {
        public nuint Size;
        public int IfIndex;
        public TcAttachPoint AttachPoint;
        public uint Parent;
        private readonly uint _tailPadding;
    }

    /// <summary>struct bpf_tc_opts (libbpf.h): a cls_bpf filter, by handle and priority.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct BpfTcOptions
    {
        public nuint Size;
        public int ProgramFd;
        public uint Flags;
        public uint ProgramId;
        public uint Handle;
        public uint Priority;
        private readonly uint _tailPadding;
    }

    /// <summary>enum bpf_tc_attach_point.</summary>
    [Flags]
    internal enum TcAttachPoint
    {
        Ingress = 1,
        Egress = 2,
    }

    // The bpf_tc_* functions return 0 or a negative errno (they talk rtnetlink in the calling thread's namespace).

    [LibraryImport(Libbpf, EntryPoint = "bpf_tc_hook_create")]
    internal static partial int TcHookCreate(BpfTcHook* hook);

    [LibraryImport(Libbpf, EntryPoint = "bpf_tc_hook_destroy")]
    internal static partial int TcHookDestroy(BpfTcHook* hook);

    [LibraryImport(Libbpf, EntryPoint = "bpf_tc_attach")]
    internal static partial int TcAttach(BpfTcHook* hook, BpfTcOptions* options);

    [LibraryImport(Libbpf, EntryPoint = "bpf_tc_detach")]
    internal static partial int TcDetach(BpfTcHook* hook, BpfTcOptions* options);

    [LibraryImport(Libbpf, EntryPoint = "bpf_tc_query")]
    internal static partial int TcQuery(BpfTcHook* hook, BpfTcOptions* options);

    /// <summary>BPF_TC_F_REPLACE: bpf_tc_attach replaces the filter at the same handle and priority.</summary>
    internal const uint TcReplace = 1;
    [LibraryImport(Libbpf, EntryPoint = "bpf_map__set_pin_path", StringMarshalling = StringMarshalling.Utf8)]
    internal static partial int MapSetPinPath(nint map, string path);

    [LibraryImport(Libbpf, EntryPoint = "libbpf_set_print")]
    internal static partial nint SetPrint(delegate* unmanaged<int, byte*, nint, int> print);

    // libc.

    [LibraryImport(Libc, EntryPoint = "syscall", SetLastError = true)]
    private static partial long Syscall(long number, int command, void* attributes, uint size);

    [LibraryImport(Libc, EntryPoint = "open", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Open(string path, int flags);

    [LibraryImport(Libc, EntryPoint = "fcntl", SetLastError = true)]
    private static partial int Fcntl(int fd, int command, int argument);

    [LibraryImport(Libc, EntryPoint = "read", SetLastError = true)]
    private static partial nint Read(int fd, byte* buffer, nuint count);

    /// <summary>Reads <paramref name="fd"/> to its end (a BPF iterator runs while it is read); returns the bytes read.</summary>
    internal static long ReadToEnd(SafeBpfHandle fd, string what)
    {
        using var lease = fd.Borrow();
        var buffer = stackalloc byte[4096];
        long total = 0;
        while (true)
        {
            var read = Read((int)lease.Fd, buffer, 4096);
            if (read == 0) return total;
            if (read < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == 4) continue; // EINTR
                throw BpfException.FromErrno(errno, $"read({what})");
            }
            total += read;
        }
    }

    [LibraryImport(Libc, EntryPoint = "close", SetLastError = true)]
    internal static partial int Close(nint fd);

    [LibraryImport(Libc, EntryPoint = "if_nametoindex", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial uint IfNameToIndex(string name);

    /// <summary>An interface's index in the calling thread's network namespace.</summary>
    internal static int InterfaceIndex(string name)
    {
        var index = IfNameToIndex(name);
        if (index == 0) throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), $"if_nametoindex({name})", "no such interface in this network namespace");
        return (int)index;
    }
    [LibraryImport(Libc, EntryPoint = "name_to_handle_at", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int NameToHandleAt(int directoryFd, string path, byte* handle, int* mountId, int flags);

    [LibraryImport(Libc, EntryPoint = "mount", SetLastError = true, StringMarshalling = StringMarshalling.Utf8)]
    private static partial int Mount(string source, string target, string fileSystemType, nuint flags, nint data);

    [LibraryImport(Libc, EntryPoint = "vsnprintf")]
    internal static partial int VsnPrintf(byte* buffer, nuint size, byte* format, nint arguments);

    [LibraryImport(Libc, EntryPoint = "setns", SetLastError = true)]
    private static partial int SetNs(int fd, int namespaceType);

    private const int CloneNewNet = 0x40000000;

    /// <summary>An fd on the calling thread's network namespace (to come back to it from another thread).</summary>
    internal static SafeBpfHandle CurrentNetworkNamespace()
    {
        var fd = Open("/proc/thread-self/ns/net", ORdOnly | OCloexec);
        if (fd < 0) throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), "open(/proc/thread-self/ns/net)");
        return new SafeBpfHandle(fd);
    }

    /// <summary>Runs <paramref name="action"/> on a new thread that first enters the network namespace <paramref name="namespaceFd"/>.</summary>
    internal static void InNetworkNamespace(int namespaceFd, Action action)
    {
        Exception? failure = null;
        var thread = new Thread(() =>
        {
            try
            {
                if (SetNs(namespaceFd, CloneNewNet) < 0) throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), "setns(CLONE_NEWNET)");
                action();
            }
            catch (Exception e)
            {
                failure = e;
            }
        })
        { IsBackground = true, Name = "bpf netns" };
        thread.Start();
        thread.Join();
        if (failure is not null) throw failure;
    }

    private const int FDupFdCloexec = 1030;
    private const int ORdOnly = 0;
    private const int OCloexec = 0x80000;

    /// <summary>The bpf(2) system call number of this architecture.</summary>
    private static readonly long SysBpf = RuntimeInformation.ProcessArchitecture switch
    {
        Architecture.X64 => 321,
        Architecture.Arm64 => 280,
        var other => throw new PlatformNotSupportedException($"bpf(2) system call number unknown for {other}"),
    };

    /// <summary>bpf(2): returns the result (an fd for some commands) or -1 with errno in <see cref="Marshal.GetLastPInvokeError"/>.</summary>
    internal static int Bpf<TAttributes>(BpfCommand command, ref TAttributes attributes)
        where TAttributes : unmanaged
    {
        fixed (TAttributes* pointer = &attributes)
        {
            return (int)Syscall(SysBpf, (int)command, pointer, (uint)sizeof(TAttributes));
        }
    }

    /// <summary>bpf(2) that must succeed: throws the one-line <see cref="BpfException"/> naming the command and <paramref name="target"/>.</summary>
    internal static int CheckedBpf<TAttributes>(BpfCommand command, ref TAttributes attributes, string target)
        where TAttributes : unmanaged
    {
        var result = Bpf(command, ref attributes);
        if (result < 0) throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), command, target);
        return result;
    }

    /// <summary>Our own close-on-exec copy of an fd libbpf owns, so our handles outlive the libbpf object.</summary>
    internal static SafeBpfHandle Duplicate(int fd, string what)
    {
        var copy = Fcntl(fd, FDupFdCloexec, 3);
        if (copy < 0) throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), $"fcntl(F_DUPFD_CLOEXEC) of {what}");
        return new SafeBpfHandle(copy);
    }

    /// <summary>
    /// A cgroup v2 directory's id, as the kernel reports it in a cgroup link's info: the 8-byte
    /// kernfs file handle of the directory (how libbpf's and bpftool's get_cgroup_id read it).
    /// </summary>
    internal static ulong CgroupId(string path)
    {
        const int AtFdCwd = -100;
        var handle = stackalloc byte[16];
        *(uint*)handle = 8; // handle_bytes
        int mountId;
        if (NameToHandleAt(AtFdCwd, path, handle, &mountId, 0) < 0)
            throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), $"name_to_handle_at({path})", "is it a cgroup v2 directory?");
        return *(ulong*)(handle + 8);
    }

    /// <summary>mount -t bpf bpf DIR.</summary>
    internal static void MountBpfFs(string directory)
    {
        if (Mount("bpf", directory, "bpf", 0, 0) < 0)
            throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), $"mount -t bpf bpf {directory}", "needs root (CAP_SYS_ADMIN)");
    }

    /// <summary>A read-only fd on a directory, as BPF_LINK_CREATE takes for a cgroup.</summary>
    internal static SafeBpfHandle OpenDirectory(string path) => OpenReadOnly(path);

    /// <summary>A read-only, close-on-exec fd on a file (a cgroup directory, a network namespace's nsfs file).</summary>
    internal static SafeBpfHandle OpenReadOnly(string path)
    {
        var fd = Open(path, ORdOnly | OCloexec);
        if (fd < 0) throw BpfException.FromErrno(Marshal.GetLastPInvokeError(), $"open({path})");
        return new SafeBpfHandle(fd);
    }
}

/// <summary>The bpf(2) commands used here (include/uapi/linux/bpf.h, enum bpf_cmd).</summary>
internal enum BpfCommand
{
    BPF_MAP_LOOKUP_ELEM = 1,
    BPF_MAP_UPDATE_ELEM = 2,
    BPF_MAP_DELETE_ELEM = 3,
    BPF_MAP_GET_NEXT_KEY = 4,
    BPF_OBJ_PIN = 6,
    BPF_OBJ_GET = 7,
    BPF_OBJ_GET_INFO_BY_FD = 15,
    BPF_PROG_TEST_RUN = 10,
    BPF_PROG_QUERY = 16,
    BPF_LINK_CREATE = 28,
    BPF_LINK_UPDATE = 29,
    BPF_MAP_UPDATE_BATCH = 26,
    BPF_ITER_CREATE = 33,
    BPF_LINK_DETACH = 34,
}

/// <summary>union bpf_attr, as BPF_LINK_UPDATE reads it (flags 0: replace whatever program the link has).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfLinkUpdateAttributes
{
    public uint LinkFd;
    public uint NewProgramFd;
    public uint Flags;
    public uint OldProgramFd;
}

/// <summary>union bpf_attr, as BPF_PROG_QUERY reads it (up to prog_cnt).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfProgQueryAttributes
{
    public uint TargetFd;
    public uint AttachType;
    public uint QueryFlags;
    public uint AttachFlags;
    public ulong ProgramIds;
    public uint ProgramCount;
    public uint Pad;
}

/// <summary>union bpf_attr, as BPF_ITER_CREATE reads it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfIterCreateAttributes
{
    public uint LinkFd;
    public uint Flags;
}

/// <summary>union bpf_attr, as BPF_LINK_DETACH reads it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfLinkDetachAttributes
{
    public uint LinkFd;
}

/// <summary>struct bpf_link_info up to its cgroup member (the union is 8-byte aligned: it starts at 16).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfLinkInfo
{
    public uint Type;
    public uint Id;
    public uint ProgramId;
    public uint Pad;
    public ulong CgroupId;
    public uint AttachType;
    public uint Pad2;
}

/// <summary>union bpf_attr, as the map element commands read it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfMapElementAttributes
{
    public uint MapFd;
    public uint Pad;
    public ulong Key;
    public ulong ValueOrNextKey;
    public ulong Flags;
}

/// <summary>union bpf_attr, as the BPF_MAP_*_BATCH commands read it (count: in, how many to do; out, how many were done).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfMapBatchAttributes
{
    public ulong InBatch;
    public ulong OutBatch;
    public ulong Keys;
    public ulong Values;
    public uint Count;
    public uint MapFd;
    public ulong ElementFlags;
    public ulong Flags;
}

/// <summary>union bpf_attr, as BPF_OBJ_PIN and BPF_OBJ_GET read it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfObjectAttributes
{
    public ulong PathName;
    public uint BpfFd;
    public uint FileFlags;
}

/// <summary>union bpf_attr, as BPF_OBJ_GET_INFO_BY_FD reads it.</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfInfoAttributes
{
    public uint BpfFd;
    public uint InfoLength;
    public ulong Info;
}

/// <summary>union bpf_attr, as BPF_LINK_CREATE reads it for a cgroup (target fd) or tcx (target ifindex, no relative program: appended last).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfLinkCreateAttributes
{
    public uint ProgramFd;
    public uint TargetFd;
    public uint AttachType;
    public uint Flags;
}

/// <summary>union bpf_attr, as BPF_PROG_TEST_RUN reads it (the <c>test</c> member).</summary>
[StructLayout(LayoutKind.Sequential)]
internal struct BpfTestRunAttributes
{
    public uint ProgramFd;
    public uint Retval;
    public uint DataSizeIn;
    public uint DataSizeOut;
    public ulong DataIn;
    public ulong DataOut;
    public uint Repeat;
    public uint Duration;
    public uint ContextSizeIn;
    public uint ContextSizeOut;
    public ulong ContextIn;
    public ulong ContextOut;
    public uint Flags;
    public uint Cpu;
    public uint BatchSize;
    private readonly uint _tailPadding;
}

/// <summary>struct bpf_map_info, the part read here (the kernel fills up to the length we give).</summary>
[StructLayout(LayoutKind.Sequential)]
internal unsafe struct BpfMapInfo
{
    public uint Type;
    public uint Id;
    public uint KeySize;
    public uint ValueSize;
    public uint MaxEntries;
    public uint MapFlags;
    public fixed byte Name[16];
}

/// <summary>A BPF file descriptor we own (program, map, link, or a cgroup directory or network namespace it is attached in): closed when released.</summary>
public sealed class SafeBpfHandle : SafeHandle
{
    public SafeBpfHandle()
        : base(invalidHandleValue: -1, ownsHandle: true)
    {
    }

    internal SafeBpfHandle(int fd)
        : base(invalidHandleValue: -1, ownsHandle: true)
    {
        SetHandle(fd);
    }

    public override bool IsInvalid => handle == -1;

    /// <summary>The fd number, for bpf_attr fields; only valid inside a <see cref="Borrow"/>.</summary>
    internal uint Fd => (uint)handle;

    /// <summary>Keeps the fd open (not closed by a racing Dispose) until the lease is disposed.</summary>
    internal Lease Borrow() => new(this);

    internal readonly struct Lease : IDisposable
    {
        private readonly SafeBpfHandle _handle;

        public Lease(SafeBpfHandle handle)
        {
            var added = false;
            handle.DangerousAddRef(ref added);
            _handle = handle;
        }

        public uint Fd => _handle.Fd;

        public void Dispose() => _handle.DangerousRelease();
    }

    protected override bool ReleaseHandle() => Interop.Close(handle) == 0;
}
