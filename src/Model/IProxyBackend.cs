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
    /// still are and an exception says what failed; never a half-applied state. A backend that
    /// commits each IP family on its own (as kube-proxy runs one proxier per family) may apply one
    /// family's part while another's fails: it then throws a <see cref="BackendSyncException"/>
    /// whose <see cref="BackendSyncException.AppliedFamilies"/> names the families now in force.
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
public sealed class BackendSyncException(string message, Exception? inner = null) : Exception(message, inner)
{
    /// <summary>
    /// The families whose part of this failed sync is in the kernel all the same (each family
    /// committed on its own); empty when none is known to be. /healthz counts them up to date.
    /// </summary>
    public IReadOnlyList<IpFamily> AppliedFamilies { get; init; } = [];

    /// <summary>
    /// Runs each family's part of a sync on its own, as kube-proxy's per-family proxiers do: a family
    /// the kernel refuses does not keep the others from being programmed. Afterwards, if any family
    /// failed, throws one exception naming every failure and carrying the families that did not fail.
    /// Cancellation and errors other than <see cref="BackendSyncException"/> stop at once (nothing is
    /// then known to be applied).
    /// </summary>
    public static async Task ForEachFamilyAsync<TPlane>(IReadOnlyList<TPlane> planes, Func<TPlane, IpFamily> familyOf, Func<TPlane, Task> sync)
    {
        List<(IpFamily Family, BackendSyncException Error)>? failed = null;
        foreach (var plane in planes)
        {
            try
            {
                await sync(plane).ConfigureAwait(false);
            }
            catch (BackendSyncException e)
            {
                (failed ??= []).Add((familyOf(plane), e));
            }
        }
        if (failed is null) return;
        var applied = planes.Select(familyOf).Except(failed.Select(f => f.Family)).ToArray();
        throw new BackendSyncException(string.Join("; ", failed.Select(f => f.Error.Message)), failed[0].Error) { AppliedFamilies = applied };
    }
}
