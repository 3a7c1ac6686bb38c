namespace ProxyPlanes.NodeTools.Conntrack;

/// <summary>Applies planned conntrack deletions to the kernel.</summary>
public interface IConntrack
{
    /// <summary>
    /// Deletes the flows each deletion matches; returns how many flows the kernel deleted. A deletion that
    /// matches nothing succeeds. Throws when a deletion could not be applied (after trying the others);
    /// <see cref="OperationCanceledException"/> when cancelled.
    /// </summary>
    Task<long> DeleteAsync(IReadOnlyList<ConntrackDeletion> deletions, CancellationToken cancellationToken);
}
