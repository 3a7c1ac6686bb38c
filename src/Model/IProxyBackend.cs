namespace ProxyPlanes.Model;

/// <summary>
/// A data plane: realises a <see cref="DesiredState"/> in the kernel. A backend is a pure planner
/// plus a thin applier; it adds nothing to the model but its own rendering.
/// </summary>
public interface IProxyBackend
{
    /// <summary>The --mode name: iptables, nftables, ipvs, ebpf.</summary>
    string Mode { get; }

    /// <summary>The IP families this data plane programs on this node (IPv4, and IPv6 where the kernel and tools allow).</summary>
    IReadOnlyList<IpFamily> Families { get; }

    /// <summary>
    /// Programs the kernel. Either the whole change is in force afterwards, or the previous rules
    /// still are and an exception says what failed; never a half-applied state.
    /// </summary>
    Task<SyncTimings> SyncAsync(SyncRequest request, CancellationToken cancellationToken);

    /// <summary>
    /// A cheap check, run every --sync-period, that what this mode installed is still in the kernel
    /// (a canary object only a full sync writes). False means it was flushed or changed behind our
    /// back: the controller then runs a full sync, which reads the kernel and repairs it. Only
    /// called after a successful sync.
    /// </summary>
    Task<bool> CanaryIntactAsync(CancellationToken cancellationToken);

    /// <summary>Removes everything this mode installed.</summary>
    Task CleanupAsync(CancellationToken cancellationToken);
}

/// <summary>A sync the kernel refused; the message names what was refused and why.</summary>
public sealed class BackendSyncException(string message, Exception? inner = null) : Exception(message, inner);
