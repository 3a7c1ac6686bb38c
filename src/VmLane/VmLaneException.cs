namespace ProxyPlanes.VmLane;

/// <summary>The VM lane could not run a command: a missing tool or kernel (the message names the
/// package to install), an initramfs that could not be built, or a VM that stopped without running it.</summary>
public sealed class VmLaneException : Exception
{
    public VmLaneException(string message) : base(message) { }

    public VmLaneException(string message, Exception inner) : base(message, inner) { }

    /// <summary>The guest's console log, when a VM was started.</summary>
    public string? ConsoleLog { get; init; }
}
