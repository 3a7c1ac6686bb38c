namespace ProxyPlanes.Core.Proxy;

/// <summary>
/// A data plane: realises a <see cref="DesiredState"/> in the kernel. A backend is a pure planner
/// plus a thin applier; it adds nothing to the model but its own rendering.
/// </summary>
public interface IProxyBackend
{
    /// <summary>The --mode name: iptables, nftables, ipvs, ebpf.</summary>
    string Mode { get; }

    /// <summary>
    /// Programs the kernel. Either the whole change is in force afterwards, or the previous rules
    /// still are and an exception says what failed; never a half-applied state.
    /// </summary>
    Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken);

    /// <summary>Removes everything this mode installed.</summary>
    Task CleanupAsync(CancellationToken cancellationToken);
}

/// <summary>A sync the kernel refused; the message names what was refused and why.</summary>
public sealed class BackendSyncException(string message, Exception? inner = null) : Exception(message, inner);
