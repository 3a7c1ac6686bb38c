using System.Runtime.InteropServices;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>Which way of a tc hook: packets arriving on the interface, or leaving it.</summary>
public enum TcDirection
{
    Ingress,
    Egress,
}

/// <summary>How a tc program is attached.</summary>
public enum TcAttachMode
{
    /// <summary>tcx when the kernel has it (6.6 and later), else clsact + cls_bpf.</summary>
    Auto,

    /// <summary>A tcx BPF link (BPF_LINK_CREATE at BPF_TCX_INGRESS / BPF_TCX_EGRESS): pinnable, gone with its last fd or pin.</summary>
    Tcx,

    /// <summary>A cls_bpf direct-action filter on a clsact qdisc (libbpf's bpf_tc_*): for kernels without tcx (Debian 6.1).</summary>
    Clsact,
}

public sealed unsafe partial class BpfProgram
{
    /// <summary>
    /// Attaches this tc program (SEC("tc")) to an interface of the calling thread's network namespace.
    /// <see cref="TcAttachMode.Auto"/> tries tcx and falls back to clsact when the kernel does not know
    /// the tcx attach types (EINVAL); any other refusal is thrown as one line.
    /// </summary>
    public TcAttachment AttachTc(string interfaceName, TcDirection direction, TcAttachMode mode = TcAttachMode.Auto)
    {
        var ifIndex = Interop.InterfaceIndex(interfaceName);
        if (mode is TcAttachMode.Tcx or TcAttachMode.Auto)
        {
            var attachType = direction == TcDirection.Ingress ? BpfAttachType.TcxIngress : BpfAttachType.TcxEgress;
            using var program = _handle.Borrow();
            var attributes = new BpfLinkCreateAttributes { ProgramFd = program.Fd, TargetFd = (uint)ifIndex, AttachType = (uint)attachType };
            var fd = Interop.Bpf(BpfCommand.BPF_LINK_CREATE, ref attributes);
            var description = $"{Name} on {interfaceName} {direction.ToString().ToLowerInvariant()} (tcx)";
            if (fd >= 0) return new TcxAttachment(new BpfLink(description, new SafeBpfHandle(fd)));
            var errno = Marshal.GetLastPInvokeError();
            if (mode == TcAttachMode.Tcx || errno != TcAttachment.EINVAL)
                throw BpfException.FromErrno(errno, $"bpf(BPF_LINK_CREATE) of {description}",
                    errno == TcAttachment.EINVAL ? "this kernel has no tcx (6.6 and later); use clsact" : null);
        }
        return ClsactAttachment.Attach(this, interfaceName, ifIndex, direction);
    }

    /// <summary>
    /// Runs the program once on a packet (BPF_PROG_TEST_RUN): an Ethernet frame in, the frame as the
    /// program left it out, with the return code and the skb mark it set. Nothing is sent. With
    /// <paramref name="repeat"/> above 1 the kernel runs it that many times on the same input and
    /// reports the mean duration.
    /// </summary>
    public TestRunResult TestRun(ReadOnlySpan<byte> frame, uint mark = 0, int repeat = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(repeat, 1);
        var output = new byte[frame.Length + 256];
        var contextIn = new SkBuffContext { Mark = mark };
        var contextOut = default(SkBuffContext);
        using var program = _handle.Borrow();
        fixed (byte* input = frame)
        fixed (byte* outputPointer = output)
        {
            var attributes = new BpfTestRunAttributes
            {
                ProgramFd = program.Fd,
                DataSizeIn = (uint)frame.Length,
                DataIn = (ulong)input,
                DataSizeOut = (uint)output.Length,
                DataOut = (ulong)outputPointer,
                Repeat = (uint)repeat,
                ContextSizeIn = (uint)sizeof(SkBuffContext),
                ContextIn = (ulong)&contextIn,
                ContextSizeOut = (uint)sizeof(SkBuffContext),
                ContextOut = (ulong)&contextOut,
            };
            Interop.CheckedBpf(BpfCommand.BPF_PROG_TEST_RUN, ref attributes, $"program {Name}");
            return new TestRunResult((int)attributes.Retval, output.AsSpan(0, (int)attributes.DataSizeOut).ToArray(), contextOut.Mark, attributes.Duration);
        }
    }

    /// <summary>struct __sk_buff up to hwtstamp (192 bytes on 6.x); BPF_PROG_TEST_RUN reads and writes mark among a few others.</summary>
    [StructLayout(LayoutKind.Sequential, Size = 192)]
    private struct SkBuffContext
    {
        public uint Length;
        public uint PacketType;
        public uint Mark;
    }
}

/// <summary>What a tc program did with one packet under BPF_PROG_TEST_RUN.</summary>
/// <param name="Verdict">The program's return code (TC_ACT_OK 0, TC_ACT_SHOT 2).</param>
/// <param name="Frame">The packet after the program.</param>
/// <param name="Mark">The skb mark after the program.</param>
/// <param name="DurationNs">The kernel's measured run time (the mean when repeated).</param>
public sealed record TestRunResult(int Verdict, byte[] Frame, uint Mark, uint DurationNs)
{
    public const int TcActOk = 0;
    public const int TcActShot = 2;
}

/// <summary>A tc program attached to an interface: detached on dispose (a tcx link unless pinned).</summary>
public abstract class TcAttachment : IDisposable
{
    internal const int EINVAL = 22;
    internal const int EEXIST = 17;

    /// <summary>The mode actually used (never <see cref="TcAttachMode.Auto"/>).</summary>
    public abstract TcAttachMode Mode { get; }

    public abstract string Description { get; }

    /// <summary>Pins a tcx link on a bpf filesystem so it outlives this process; a clsact filter needs no pin (it stays until deleted).</summary>
    public abstract void Pin(string path);

    public abstract void Dispose();

    public override string ToString() => Description;
}

internal sealed class TcxAttachment(BpfLink link) : TcAttachment
{
    public override TcAttachMode Mode => TcAttachMode.Tcx;

    public override string Description => link.Description;

    public override void Pin(string path) => link.Pin(path);

    public override void Dispose() => link.Dispose();
}

/// <summary>
/// A cls_bpf direct-action filter on the interface's clsact qdisc, through libbpf's bpf_tc_* (rtnetlink
/// in the attaching thread's namespace, remembered by that namespace, ifindex, handle and priority).
/// Always at handle <see cref="Handle"/> and priority <see cref="Priority"/>, attached with
/// BPF_TC_F_REPLACE: a restart replaces the filter a killed process left (in place, no gap, no second
/// filter), and a cleanup in another process finds it (<see cref="DetachLeftBehind"/>). Dispose deletes
/// this filter only: the clsact qdisc stays (empty, harmless, maybe shared with other filters).
/// </summary>
internal sealed unsafe class ClsactAttachment : TcAttachment
{
    /// <summary>The filter handle of every clsact filter of ours (0x7070, "pp").</summary>
    public const uint Handle = 0x7070;

    /// <summary>The filter priority of every clsact filter of ours (one per direction, so one value suffices).</summary>
    public const uint Priority = 0x7070;

    private readonly SafeBpfHandle _namespace;
    private readonly int _ifIndex;
    private readonly TcDirection _direction;
    private readonly uint _handle;
    private readonly uint _priority;
    private bool _disposed;

    private ClsactAttachment(string description, SafeBpfHandle networkNamespace, int ifIndex, TcDirection direction, uint handle, uint priority)
    {
        Description = description;
        _namespace = networkNamespace;
        _ifIndex = ifIndex;
        _direction = direction;
        _handle = handle;
        _priority = priority;
    }

    public override TcAttachMode Mode => TcAttachMode.Clsact;

    public override string Description { get; }

    internal static ClsactAttachment Attach(BpfProgram program, string interfaceName, int ifIndex, TcDirection direction)
    {
        var description = $"{program.Name} on {interfaceName} {direction.ToString().ToLowerInvariant()} (clsact)";
        var hook = Hook(ifIndex, direction);
        var created = Interop.TcHookCreate(&hook);
        if (created < 0 && -created != EEXIST) throw BpfException.FromErrno(-created, $"libbpf: bpf_tc_hook_create (clsact qdisc) on {interfaceName}");

        using var fd = program.Borrow();
        var options = new Interop.BpfTcOptions { Size = (nuint)sizeof(Interop.BpfTcOptions), ProgramFd = (int)fd.Fd, Flags = Interop.TcReplace, Handle = Handle, Priority = Priority };
        var attached = Interop.TcAttach(&hook, &options);
        if (attached < 0)
        {
            if (created == 0)
            {
                // Nothing half-applied: the qdisc this call made goes again.
                hook.AttachPoint = Interop.TcAttachPoint.Ingress | Interop.TcAttachPoint.Egress;
                Interop.TcHookDestroy(&hook);
            }
            throw BpfException.FromErrno(-attached, $"libbpf: bpf_tc_attach of {description}");
        }
        try
        {
            return new ClsactAttachment(description, Interop.CurrentNetworkNamespace(), ifIndex, direction, options.Handle, options.Priority);
        }
        catch
        {
            Interop.TcDetach(&hook, &options);
            throw;
        }
    }

    public override void Pin(string path) =>
        throw new NotSupportedException($"{Description}: a clsact filter is not a BPF link and needs no pin (it stays until deleted)");

    public override void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        // The filter lives in the namespace it was attached in; detach from there, whichever thread disposes.
        using var networkNamespace = _namespace.Borrow();
        Interop.InNetworkNamespace((int)networkNamespace.Fd, () =>
        {
            var hook = Hook(_ifIndex, _direction);
            var options = new Interop.BpfTcOptions { Size = (nuint)sizeof(Interop.BpfTcOptions), Handle = _handle, Priority = _priority };
            Interop.TcDetach(&hook, &options); // ENOENT: the interface (or its namespace) is already gone
        });
        _namespace.Dispose();
    }

    /// <summary>
    /// Deletes the filter of ours (a BPF filter at <see cref="Handle"/> and <see cref="Priority"/>) on
    /// <paramref name="ifIndex"/>'s <paramref name="direction"/> in the calling thread's namespace, whoever
    /// attached it (a process that is gone, on a kernel without tcx). False when there is none.
    /// </summary>
    public static bool DetachLeftBehind(int ifIndex, TcDirection direction)
    {
        var hook = Hook(ifIndex, direction);
        var options = new Interop.BpfTcOptions { Size = (nuint)sizeof(Interop.BpfTcOptions), Handle = Handle, Priority = Priority };
        // libbpf prints the kernel's "Parent Qdisc doesn't exists" for every interface without clsact (every
        // start of every mode runs this cleanup): captured, not printed; a miss is the common, expected answer.
        using var quiet = LibbpfLog.Capture();
        if (Interop.TcQuery(&hook, &options) != 0) return false; // ENOENT (no filter, or no clsact qdisc at all), EINVAL: not a BPF filter
        options = new Interop.BpfTcOptions { Size = (nuint)sizeof(Interop.BpfTcOptions), Handle = Handle, Priority = Priority };
        var detached = Interop.TcDetach(&hook, &options);
        if (detached < 0 && -detached != ENOENT) throw BpfException.FromErrno(-detached, $"libbpf: bpf_tc_detach of the clsact filter {Handle:x}/{Priority:x} on interface {ifIndex} {direction.ToString().ToLowerInvariant()}");
        return detached == 0;
    }

    private const int ENOENT = 2;

    private static Interop.BpfTcHook Hook(int ifIndex, TcDirection direction) => new()
    {
        Size = (nuint)sizeof(Interop.BpfTcHook),
        IfIndex = ifIndex,
        AttachPoint = direction == TcDirection.Ingress ? Interop.TcAttachPoint.Ingress : Interop.TcAttachPoint.Egress,
    };
}
