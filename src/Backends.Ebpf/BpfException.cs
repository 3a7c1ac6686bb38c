using System.Runtime.InteropServices;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>
/// A bpf(2) or libbpf call the kernel refused, as one line naming the operation, its target, the
/// errno and what it usually means here, e.g.
/// <c>bpf(BPF_MAP_UPDATE_ELEM) on map pp_services_v2: E2BIG (Argument list too long): the map is full</c>.
/// A program the verifier rejected carries the verifier's log after that line (<see cref="VerifierLog"/>).
/// </summary>
public sealed class BpfException : Exception
{
    private static readonly Dictionary<int, string> Names = new()
    {
        [1] = "EPERM",
        [2] = "ENOENT",
        [3] = "ESRCH",
        [4] = "EINTR",
        [7] = "E2BIG",
        [9] = "EBADF",
        [11] = "EAGAIN",
        [12] = "ENOMEM",
        [13] = "EACCES",
        [14] = "EFAULT",
        [16] = "EBUSY",
        [17] = "EEXIST",
        [19] = "ENODEV",
        [20] = "ENOTDIR",
        [22] = "EINVAL",
        [24] = "EMFILE",
        [28] = "ENOSPC",
        [38] = "ENOSYS",
        [95] = "EOPNOTSUPP",
        [524] = "ENOTSUPP",
    };

    public BpfException(int errno, string operation, string? hint = null, string? verifierLog = null)
        : base(Format(errno, operation, hint, verifierLog))
    {
        Errno = errno;
        Operation = operation;
        VerifierLog = verifierLog;
        HResult = errno;
    }

    /// <summary>The positive errno (E2BIG is 7).</summary>
    public int Errno { get; }

    /// <summary>What was attempted: <c>bpf(BPF_MAP_UPDATE_ELEM) on map pp_services_v2</c>.</summary>
    public string Operation { get; }

    /// <summary>What libbpf and the verifier printed while loading, when this is a load failure.</summary>
    public string? VerifierLog { get; }

    /// <summary>"E2BIG" for 7; "errno N" for values without a name here.</summary>
    public static string ErrnoName(int errno) => Names.TryGetValue(errno, out var name) ? name : $"errno {errno}";

    internal static BpfException FromErrno(int errno, string operation, string? hint = null) => new(errno, operation, hint);

    internal static BpfException FromErrno(int errno, BpfCommand command, string target) =>
        new(errno, $"bpf({command}) on {target}", Hint(errno, command));

    private static string? Hint(int errno, BpfCommand command) => (errno, command) switch
    {
        (7, BpfCommand.BPF_MAP_UPDATE_ELEM or BpfCommand.BPF_MAP_UPDATE_BATCH) => "the map is full (max_entries)",
        (17, BpfCommand.BPF_MAP_UPDATE_ELEM) => "the key exists (BPF_NOEXIST)",
        (2, BpfCommand.BPF_MAP_UPDATE_ELEM) => "the key does not exist (BPF_EXIST)",
        (1, _) or (13, _) => "needs root (CAP_BPF and CAP_NET_ADMIN)",
        (2, BpfCommand.BPF_OBJ_GET) => "nothing is pinned there",
        (17, BpfCommand.BPF_OBJ_PIN) => "something is already pinned there",
        (22, BpfCommand.BPF_OBJ_PIN) or (22, BpfCommand.BPF_OBJ_GET) => "is the directory on a bpf filesystem (mount -t bpf bpf DIR)?",
        (22, BpfCommand.BPF_LINK_CREATE) => "the program type does not fit the attach type, or the target is not a cgroup v2 directory",
        _ => null,
    };

    private static string Format(int errno, string operation, string? hint, string? verifierLog)
    {
        var text = $"{operation}: {ErrnoName(errno)} ({Marshal.GetPInvokeErrorMessage(errno)})";
        if (!string.IsNullOrEmpty(hint)) text += $": {hint}";
        if (!string.IsNullOrWhiteSpace(verifierLog)) text += $"{Environment.NewLine}{verifierLog.TrimEnd()}";
        return text;
    }
}
