namespace ProxyPlanes.Model;

/// <summary>
/// What the control loop reports about its syncs (kube-proxy's sync metrics). The loop sees only
/// this; <c>ProxyMetrics</c> (src/Metrics) implements it on a prometheus-net registry, so the loop
/// references no metrics library.
/// </summary>
public interface ISyncMetrics
{
    /// <summary>Service and EndpointSlice changes seen (<c>..._service_changes_total</c>, <c>..._endpoint_changes_total</c>).</summary>
    void AddChanges(int services, int endpoints);

    /// <summary>Changes waiting for a sync (<c>..._changes_pending</c>).</summary>
    void SetPendingChanges(int services, int endpoints);

    void SetLastQueuedTimestamp(DateTimeOffset time);

    /// <summary>A sync succeeded (also a periodic one with nothing to change).</summary>
    void SetLastSyncTimestamp(DateTimeOffset time);

    /// <summary>How many of the counted changes the last successful sync put in the kernel.</summary>
    void SetChangesApplied(long changes);

    /// <summary>A full sync started, and why (start, failure, flush, node-changed, hourly).</summary>
    void FullSyncStarted(string reason);

    /// <summary>A periodic canary check ended: intact, gone or error.</summary>
    void CanaryChecked(string result);

    void SyncFailed(string mode);

    void RecordSync(TimeSpan duration, bool full, string mode);

    /// <summary>One phase of a sync: plan, render or apply.</summary>
    void RecordPhase(string phase, string mode, TimeSpan duration);

    /// <summary>From an object's change to the kernel having it.</summary>
    void RecordNetworkProgramming(TimeSpan latency);

    /// <summary>Local-policy service ports with endpoints but none on this node, per family and traffic policy (internal, external).</summary>
    void SetNoLocalEndpoints(IpFamily family, string trafficPolicy, int count);

    /// <summary>
    /// The IP families the data plane programs (<see cref="IProxyBackend.Families"/>): kube-proxy labels its sync
    /// metrics with <c>ip_family</c>, and a sync here programs every family at once, so each sync is recorded once
    /// per family.
    /// </summary>
    void UseFamilies(IReadOnlyList<IpFamily> families);
}
