namespace ProxyPlanes.Backends.Ebpf;

/// <summary>BPF iterators (BPF_TRACE_ITER).</summary>
public sealed partial class BpfProgram
{
    /// <summary>
    /// The link of an iterator program (BPF_LINK_CREATE, <see cref="BpfAttachType.TraceIter"/>, no parameters):
    /// each BPF_ITER_CREATE on it makes a file whose reading runs the program over the objects it walks.
    /// </summary>
    internal SafeBpfHandle AttachIterator()
    {
        using var program = _handle.Borrow();
        var attributes = new BpfLinkCreateAttributes { ProgramFd = program.Fd, AttachType = (uint)BpfAttachType.TraceIter };
        return new SafeBpfHandle(Interop.CheckedBpf(BpfCommand.BPF_LINK_CREATE, ref attributes, $"iterator program {Name}"));
    }
}
